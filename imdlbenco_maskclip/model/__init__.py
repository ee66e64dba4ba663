"""MaskCLIP and its parts, one module each (segment-anything's ``modeling/`` layout).

``MaskCLIP`` is the network of a setting with random weights; ``build_maskclip`` loads its
pretrained sources and is registered in Benco's ``MODELS`` as ``MaskCLIP`` on import.
``SETTINGS`` holds the named shapes (paper, paper_sam, base, tiny) and ``SIDE_SOURCES`` the
MAE/SAM weight sources. A network can be built on the meta device (nothing allocated) to
receive trained tensors by assignment; ``MaskCLIP.rebuild_buffers`` then computes the few
tensors a state dict does not hold.
"""

from imdlbenco_maskclip.model.build import build_maskclip
from imdlbenco_maskclip.model.maskclip import MaskCLIP
from imdlbenco_maskclip.model.settings import SETTINGS, SIDE_SOURCES, MaskCLIPSettings, get_setting

__all__ = ["SETTINGS", "SIDE_SOURCES", "MaskCLIP", "MaskCLIPSettings", "build_maskclip", "get_setting"]
