"""MaskCLIP (OpenSDI, CVPR 2025) and the OpenSDI dataset for IMDLBenCo.

``import imdlbenco_maskclip`` registers ``MaskCLIP`` in Benco's ``MODELS`` and
``OpenSDIDataset`` in Benco's ``DATASETS`` (as soon as IMDLBenCo is imported: see
``host.registration``), so existing Benco scripts can use both by name. The names below load on
first use, so that the ``benco`` command starts without importing torch or IMDLBenCo.

The package is layered, each subpackage importing only those below it (``.importlinter``):
``cli`` > ``training`` > ``evaluation`` > ``inference`` > ``checkpoints`` > ``model`` >
``host`` > ``common``; ``dataset_adapters`` sits beside, importing nothing from here.
"""

from importlib import import_module
from typing import Any

from imdlbenco_maskclip.host.registration import register_with_benco
from imdlbenco_maskclip.host.version import check_host

__version__ = "0.1.0"

check_host()
register_with_benco()

_LAZY = {
    "MaskCLIP": "imdlbenco_maskclip.model",
    "build_maskclip": "imdlbenco_maskclip.model",
    "load_model": "imdlbenco_maskclip.checkpoints.loading",
    "Predictor": "imdlbenco_maskclip.inference.predictor",
    "Prediction": "imdlbenco_maskclip.inference.predictor",
    "OpenSDIDataset": "dataset_adapters",
    "MODELS": "IMDLBenCo.registry",
    "DATASETS": "IMDLBenCo.registry",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'imdlbenco_maskclip' has no attribute '{name}'")
