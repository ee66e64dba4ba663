"""imdlbenco-maskclip: OpenSDI's MaskCLIP and the OpenSDID dataset inside IMDLBenCo."""

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent

setup(
    name="imdlbenco-maskclip",
    version="0.1.0",
    description=(
        "MaskCLIP (OpenSDI, CVPR 2025) and the OpenSDI dataset for IMDLBenCo: "
        "train, test and predict diffusion-generated image detection and localization"
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=[
        "imdlbenco_maskclip",
        "imdlbenco_maskclip.commands",
        "imdlbenco_maskclip.model",
        "imdlbenco_maskclip.benco_configs",
        "dataset_adapters",
    ],
    package_dir={"imdlbenco_maskclip.benco_configs": "benco_configs"},
    package_data={
        "imdlbenco_maskclip": ["resources/*.json"],
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
        "tqdm",
        "requests",
        "pillow",
    ],
    extras_require={
        # benco serve's local web page (gradio 6 installs beside numpy<2)
        "serve": ["gradio>=6,<7"],
        # the tests drive the web page in Debian's chromium through playwright
        "test": ["pytest>=7", "gradio>=6,<7", "playwright"],
    },
    entry_points={
        "console_scripts": ["benco = imdlbenco_maskclip.cli:main"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
