"""Checkpoint files: their layout, written and read in one place (``layout``), and
``load_model``, which builds the model a file holds, this package's, Benco's or the published
OpenSDI code's, with its weights loaded strictly (``loading``).

May import ``model``, ``host`` and ``common``.
"""
