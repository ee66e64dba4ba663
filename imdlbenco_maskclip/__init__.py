"""MaskCLIP (OpenSDI, CVPR 2025) and the OpenSDI dataset for IMDLBenCo.

Importing this package registers ``MaskCLIP`` in Benco's ``MODELS`` and ``OpenSDIDataset``
in Benco's ``DATASETS``, so existing Benco scripts can use both by name.
"""

from IMDLBenCo.registry import DATASETS, MODELS

from dataset_adapters import OpenSDIDataset
from imdlbenco_maskclip.loading import load_model
from imdlbenco_maskclip.model import MaskCLIP
from imdlbenco_maskclip.predictor import Prediction, Predictor

__version__ = "0.1.0"

__all__ = ["MaskCLIP", "load_model", "Predictor", "Prediction", "OpenSDIDataset", "MODELS", "DATASETS", "__version__"]
