"""Errors of the model code, in Python terms, that still say which option was at fault.

``OptionError`` is a ``ValueError`` and ``SourceNotFound`` a ``FileNotFoundError``; both carry
the name of the ``build_maskclip`` parameter (which is also the command-line flag) so the CLI
can report ``--clip_pretrained: ...`` without the model code knowing about flags.
"""

from __future__ import annotations


class OptionError(ValueError):
    """A model option with a value that cannot work; ``option`` names the parameter."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option


class SourceNotFound(FileNotFoundError):
    """A weights file or download that is not there; ``option`` names the parameter."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
