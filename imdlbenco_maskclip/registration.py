"""Register ``MaskCLIP`` and ``OpenSDIDataset`` in Benco's registries when IMDLBenCo is imported.

Importing IMDLBenCo imports its whole model zoo (seconds on a small machine), and Benco's
registries live inside it. ``import imdlbenco_maskclip`` (or ``import dataset_adapters``) must
register our model and dataset for users' scripts, yet the ``benco`` command must answer ``--help`` without that import. So
the registration follows IMDLBenCo's import: at once when IMDLBenCo is already imported, else
right after its import finishes (a finder on ``sys.meta_path`` wraps IMDLBenCo's loader), before
any ``from IMDLBenCo.registry import MODELS`` in the user's code returns.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType
from typing import Any, Callable

BENCO = "IMDLBenCo"


def register() -> None:
    """Import the modules whose import registers ``MaskCLIP`` and ``OpenSDIDataset``."""
    importlib.import_module("imdlbenco_maskclip.model")
    importlib.import_module("dataset_adapters.opensdi")


class _LoaderThenCall(importlib.abc.Loader):
    """The module's own loader, then ``callback`` once the module has executed."""

    def __init__(self, loader: importlib.abc.Loader, callback: Callable[[], None]) -> None:
        self._loader = loader
        self._callback = callback

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        self._callback()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; for ``name`` it wraps the real loader once and steps aside."""

    def __init__(self, name: str, callback: Callable[[], None]) -> None:
        self.name = name
        self.callback = callback

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _LoaderThenCall(spec.loader, self.callback)
        return spec


def register_with_benco() -> None:
    """Register now if IMDLBenCo is imported, else as soon as it is."""
    if BENCO in sys.modules:
        register()
    elif not any(isinstance(finder, _AfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(BENCO, register))
