"""How this package sits inside IMDLBenCo: the supported version (``version``), the hook that
registers MaskCLIP and OpenSDIDataset when IMDLBenCo is imported (``registration``), every
workaround for a Benco fault, each named (``workarounds``), building any registered model
from its options (``models``), Benco datasets from a ``--data_path`` (``datasets``), and the
process this runs in: device, torchrun process group (``runtime``).

Above ``common`` only. Elsewhere, Benco's public pieces (``MODELS``, its evaluators, datasets
and training loop) are used directly; what works around their faults lives here.
"""
