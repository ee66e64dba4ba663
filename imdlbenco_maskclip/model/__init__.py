"""MaskCLIP and its parts, one module each (segment-anything's ``modeling/`` layout).

``MaskCLIP`` is registered in Benco's ``MODELS`` on import. ``SETTINGS`` holds the named
shapes (paper, base, tiny) and ``SIDE_SOURCES`` the MAE/SAM weight sources.
"""

from imdlbenco_maskclip.model.maskclip import MaskCLIP
from imdlbenco_maskclip.model.settings import SETTINGS, SIDE_SOURCES, MaskCLIPSettings, get_setting

__all__ = ["MaskCLIP", "SETTINGS", "SIDE_SOURCES", "MaskCLIPSettings", "get_setting"]
