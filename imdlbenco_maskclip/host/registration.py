"""What happens when IMDLBenCo is imported: ``MaskCLIP`` and ``OpenSDIDataset`` register in
Benco's registries and, in the ``benco`` command, Benco's import-time noise is captured.

Importing IMDLBenCo imports its whole model zoo (seconds on a small machine), and Benco's
registries live inside it. ``import imdlbenco_maskclip`` must register our model and dataset
for users' scripts, yet the ``benco`` command must answer ``--help`` without that import. So
the registration follows IMDLBenCo's import: at once when IMDLBenCo is already imported, else
right after its import finishes (a finder on ``sys.meta_path`` wraps IMDLBenCo's loader), before
any ``from IMDLBenCo.registry import MODELS`` in the user's code returns. The same wrapper is
where ``quiet_benco_import`` acts, since it must act before IMDLBenCo runs (the other
workarounds, ``host.workarounds``, import IMDLBenCo themselves).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.util
import io
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

BENCO = "IMDLBenCo"

log = logging.getLogger(__name__)


def register() -> None:
    """Import the modules whose import registers ``MaskCLIP`` and ``OpenSDIDataset``."""
    importlib.import_module("imdlbenco_maskclip.model")
    importlib.import_module("dataset_adapters.opensdi")


class _WrappedLoader(importlib.abc.Loader):
    """An IMDLBenCo module's own loader, run with its prints captured when ``quiet``, then
    ``callback`` (if any) once the module has executed."""

    def __init__(self, loader: importlib.abc.Loader, quiet: bool, callback: Callable[[], None] | None) -> None:
        self._loader = loader
        self._quiet = quiet
        self._callback = callback

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with _captured() if self._quiet else contextlib.nullcontext():
            self._loader.exec_module(module)
        if self._callback is not None:
            self._callback()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _BencoImports(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it wraps the real loader of IMDLBenCo (to register right after it)
    and, once ``quiet``, of each of its submodules (to capture their prints). It steps aside
    when it has nothing left to do."""

    def __init__(self) -> None:
        self.registered = False
        self.quiet = False

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        top = fullname == BENCO
        if not (top and not self.registered) and not (self.quiet and fullname.startswith(BENCO + ".")):
            return None
        spec = self._real_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            callback = register if top and not self.registered else None
            self.registered = self.registered or top
            spec.loader = _WrappedLoader(spec.loader, self.quiet, callback)
        if self.registered and not self.quiet:
            sys.meta_path.remove(self)
        return spec

    def _real_spec(self, fullname: str, path: Any, target: Any) -> Any:
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is not self and find is not None and (spec := find(fullname, path, target)) is not None:
                return spec
        return None


def _hook() -> _BencoImports:
    """The installed finder, installed now if it is not."""
    found = next((f for f in sys.meta_path if isinstance(f, _BencoImports)), None)
    if found is None:
        found = _BencoImports()
        found.registered = BENCO in sys.modules
        sys.meta_path.insert(0, found)
    return found


def register_with_benco() -> None:
    """Register now if IMDLBenCo is imported, else as soon as it is."""
    if BENCO in sys.modules:
        register()
    else:
        _hook()


@contextlib.contextmanager
def _captured() -> Iterator[None]:
    """What IMDLBenCo prints while a module of it is imported goes to the debug log; the
    warnings raised meanwhile are dropped."""
    printed = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(printed):
        warnings.simplefilter("ignore")
        yield
    if printed.getvalue().strip():
        log.debug("IMDLBenCo printed at import: %s", printed.getvalue().strip())


def quiet_benco_import() -> None:
    """Fault: importing IMDLBenCo prints the torch version (``2.14.1+cu130``, ``Current Torch
    version: 2.14``, from ``training_scripts.utils.misc``) and lets through timm's and torch's
    FutureWarnings about the imports its code makes; its code raises more FutureWarnings
    (deprecated ``torch.cuda.amp`` names) as it runs. For the ``benco`` command: each IMDLBenCo
    module imported from now on runs with its prints sent to the debug log and its warnings
    dropped, and FutureWarnings raised by IMDLBenCo's own modules are ignored afterwards.
    Warnings of this package and of every other library still show."""
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"IMDLBenCo(\.|$)")
    _hook().quiet = True
