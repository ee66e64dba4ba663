"""Which IMDLBenCo is installed, checked from package metadata without importing it.

Supported: ``imdlbenco`` 0.1.45 up to (not including) 0.2. A third-party fork on PyPI,
``imdlbenco13`` (0.2.x), installs the same ``IMDLBenCo`` module with other evaluator semantics
(``batch_update`` returns None and per-image metrics average over tampered images only) and
numpy 2; this package's protocol reads ``batch_update``'s per-image values, so with the fork
it would report other numbers. Both are refused at import with a message saying what to do.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import metadata

SUPPORTED = ((0, 1, 45), (0, 2, 0))
INSTALL = "pip install 'imdlbenco>=0.1.45,<0.2'"


def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _parse(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def check_host(version_of: Callable[[str], str | None] = installed_version) -> str:
    """The supported IMDLBenCo version that is installed; ``ImportError`` naming what differs
    and what to install otherwise."""
    fork = version_of("imdlbenco13")
    if fork is not None:
        raise ImportError(
            f"imdlbenco-maskclip: the imdlbenco13 fork ({fork}) is installed. It provides the same IMDLBenCo "
            "module with other evaluator semantics (batch_update returns None; pixel metrics average over "
            "tampered images only) and needs numpy 2, so this package's protocol would report other numbers. "
            f"Run: pip uninstall -y imdlbenco13 && {INSTALL}"
        )
    version = version_of("imdlbenco")
    if version is None:
        raise ImportError(f"imdlbenco-maskclip needs IMDLBenCo, which is not installed. Run: {INSTALL}")
    low, high = SUPPORTED
    if not low <= _parse(version) < high:
        raise ImportError(
            f"imdlbenco-maskclip supports IMDLBenCo 0.1.45 up to (not including) 0.2; {version} is installed, "
            f"whose trainer, evaluators or registry may differ. Run: {INSTALL}"
        )
    return version
