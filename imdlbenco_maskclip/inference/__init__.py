"""A trained model on new images: the forward step every caller shares (``forward``), reading
any photo (``photos``), ``Predictor`` (``predictor``), ``benco predict`` over files, folders
and shards (``batch``), the local web page of ``benco serve`` (``web_page``) and what it keeps
per visitor, bounded (``sessions``).

May import ``checkpoints``, ``model``, ``host`` and ``common``.
"""
