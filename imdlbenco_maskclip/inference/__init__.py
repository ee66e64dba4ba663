"""A trained model on new images: the forward step every caller shares (``forward``), reading
any photo (``photos``), ``Predictor`` (``predictor``), ``benco predict`` over files, folders
and shards (``batch``) in one process or under torchrun (each process's share of the inputs:
``job_inputs``; the parquet parts it writes and resumes from: ``prediction_parts``; the job's
progress bar: ``job_progress``), the local web page of ``benco serve`` (``web_page``) and what
it keeps per visitor, bounded (``sessions``).

May import ``checkpoints``, ``model``, ``host`` and ``common``.
"""
