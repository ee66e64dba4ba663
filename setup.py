"""imdlbenco-maskclip: OpenSDI's MaskCLIP and the OpenSDID dataset inside IMDLBenCo."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'^__version__ = "([^"]+)"', (HERE / "imdlbenco_maskclip" / "__init__.py").read_text(), re.M)[1]

setup(
    name="imdlbenco-maskclip",
    version=VERSION,
    description=(
        "MaskCLIP (OpenSDI, CVPR 2025) and the OpenSDI dataset for IMDLBenCo: "
        "train, test and predict diffusion-generated image detection and localization"
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=[
        *find_packages(
            include=["imdlbenco_maskclip", "imdlbenco_maskclip.*", "dataset_adapters", "dataset_adapters.*"]
        ),
        "imdlbenco_maskclip.benco_configs",
    ],
    package_dir={"imdlbenco_maskclip.benco_configs": "benco_configs"},
    package_data={
        "imdlbenco_maskclip.evaluation": ["*.json"],
        "imdlbenco_maskclip.model": ["clip_configs/*.json"],
        "imdlbenco_maskclip.benco_configs": ["*.yaml"],
    },
    install_requires=[
        "imdlbenco>=0.1.45,<0.2",
        "torch>=2.4",
        "torchvision",
        "numpy<2",
        "open_clip_torch>=2.24",
        "timm>=0.9",
        "segment-anything>=1.0",
        "datasets>=3.0",
        "pyarrow>=24,<26",
        "pyyaml>=6",
        "huggingface_hub>=1.31,<3",  # hf:// checkpoints (parse_hf_uri); the range datasets 5 takes
        "safetensors>=0.4",
        "tqdm",
        "requests",
        "pillow",
    ],
    extras_require={
        # benco serve's local web page (gradio 6 installs beside numpy<2)
        "serve": ["gradio>=6,<7"],
        # the tests drive the web page in Debian's chromium through playwright; ruff and
        # import-linter are the checks .ci/run makes (ruff's version pinned: its format changes)
        "test": ["pytest>=7", "gradio>=6,<7", "playwright", "ruff==0.17.6", "import-linter==2.17", "grimp>=3.5"],
    },
    entry_points={
        # IMDLBenCo installs a `benco` too; `benco-opensdi` is ours alone (README: Installing beside IMDLBenCo)
        "console_scripts": ["benco = imdlbenco_maskclip.cli:main", "benco-opensdi = imdlbenco_maskclip.cli:main"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
