"""Checkpoint files: their layout, written and read in one place (``layout``), and
``load_model``, which builds the model a checkpoint holds, this package's, Benco's, the
published OpenSDI code's or a weight folder's, with its weights loaded strictly (``loading``).

A checkpoint is a local path or a hub reference, ``hf://OWNER/REPO[@REVISION]/FILE`` or
``hf://OWNER/REPO[/FOLDER/]`` (``hub``: through huggingface_hub's cache; the commit and sha256
are recorded). Files are memory-mapped and MaskCLIP is built on the meta device and receives
the file's tensors, so a model is held once and an optimizer in the file is never read. Weight
folders (``folder``: ``model.safetensors``, ``config.json``, a model card) are what ``benco
weights export`` writes (``export``); ``benco weights info`` describes any checkpoint without
building its model (``inspection``).

May import ``model``, ``host`` and ``common``.
"""
