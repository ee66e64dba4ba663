"""A trained model on new images: the forward step every caller shares (``forward``), reading
any photo (``photos``), ``Predictor`` (``predictor``), ``benco predict`` over files, folders
and shards (``batch``), and the local web page of ``benco serve`` (``web_page``).

May import ``checkpoints``, ``model``, ``host`` and ``common``.
"""
