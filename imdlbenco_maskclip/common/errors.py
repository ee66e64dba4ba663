"""The errors this package raises on purpose, each saying what is at fault.

``UserError`` is what the ``benco`` command reports as one line instead of a traceback: a
wrong flag, a missing file, a bad config key. The model code raises Python's own kinds
(``OptionError`` is a ``ValueError``, ``SourceNotFound`` a ``FileNotFoundError``) that still
carry the name of the option at fault, so the command line can say ``--clip_pretrained: ...``
without the model knowing about flags. ``WeightsMismatch`` is both: a checkpoint whose
weights do not fit the model asked for, for Python callers a ``ValueError``.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix: a wrong flag, a missing file, a bad config key.

    The message names the file, key or flag at fault and, where it helps, what to do.
    """


class WeightsMismatch(UserError, ValueError):
    """Weights that do not fit the model asked for: missing or unexpected keys, shapes that
    differ, or a checkpoint of another model than the one named (or of none named)."""


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
