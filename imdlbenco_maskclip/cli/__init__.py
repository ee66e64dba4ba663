"""The ``benco`` command (and ``benco-opensdi``, the same commands under a name no other package
installs): ``benco.py`` is the entry, one module per command of ours (``train``, ``test``,
``compare``, ``predict``, ``serve``, ``demo``, ``opensdi``, ``weights``), each with
``configure(parser)`` and ``run(args) -> int``; ``options.py`` holds the run-config machinery
(defaults < YAML < flags) and the options several commands share.

The top layer: it may import every other subpackage. Its modules import torch, open_clip and
IMDLBenCo only inside ``run``, so that ``benco --help`` and argument errors answer at once.
"""

from imdlbenco_maskclip.cli.benco import main

__all__ = ["main"]
