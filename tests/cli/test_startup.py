"""The ``benco`` command answers help and argument errors without importing torch, open_clip or
IMDLBenCo; ``import imdlbenco_maskclip`` still registers MaskCLIP and OpenSDIDataset in Benco's
registries, whichever is imported first; an unsupported IMDLBenCo is refused with a clear message.
Each check runs in a fresh interpreter (this test process has imported everything already)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from imdlbenco_maskclip.host.version import check_host

HEAVY = ("torch", "open_clip", "IMDLBenCo", "albumentations", "pyarrow")


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "argv, status",
    [
        (["--help"], 0),
        (["train", "--help"], 0),
        (["test", "--help"], 0),
        (["predict", "--help"], 0),
        (["opensdi", "--help"], 0),
        (["compare", "--help"], 0),
        (["predict", "x.png", "--no-such-flag", "1"], 2),
        (["train", "--epochs", "many"], 2),
        (["test"], 2),
        (["compare"], 2),
        (["predict", "x.png"], 2),
        (["train", "--model", "MaskCLIP"], 2),
    ],
)
def test_help_and_argument_errors_import_nothing_heavy(argv, status):
    code = (
        "import sys\nfrom imdlbenco_maskclip.cli import benco\n"
        f"try:\n    code = benco.main({argv!r})\nexcept SystemExit as stop:\n    code = stop.code\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('EXIT', code, 'HEAVY', heavy)"
    )
    result = run_python(code)
    assert f"EXIT {status} HEAVY []" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize(
    "first",
    [
        "import imdlbenco_maskclip",
        "import IMDLBenCo, imdlbenco_maskclip",
        "import dataset_adapters, imdlbenco_maskclip",
    ],
)
@pytest.mark.slow  # fresh interpreters importing everything
def test_importing_the_package_registers_model_and_dataset(first):
    result = run_python(
        f"{first}\nfrom IMDLBenCo.registry import DATASETS, MODELS\n"
        "print(MODELS.get('MaskCLIP').__name__, DATASETS.get('OpenSDIDataset').__name__)"
    )
    assert "build_maskclip OpenSDIDataset" in result.stdout, result.stdout + result.stderr


def versions(**installed: str):
    return lambda name: installed.get(name)


def test_the_supported_imdlbenco_passes():
    assert check_host(versions(imdlbenco="0.1.45")) == "0.1.45"
    assert check_host(versions(imdlbenco="0.1.99")) == "0.1.99"


@pytest.mark.parametrize(
    "installed, message",
    [
        ({"imdlbenco13": "0.2.3"}, "imdlbenco13 fork .*batch_update returns None.*pip uninstall -y imdlbenco13"),
        ({"imdlbenco": "0.1.45", "imdlbenco13": "0.2.1"}, "imdlbenco13 fork"),
        ({"imdlbenco": "0.2.0"}, "0.2.0 is installed.*imdlbenco>=0.1.45,<0.2"),
        ({"imdlbenco": "0.1.40"}, "0.1.40 is installed"),
        ({}, "not installed"),
    ],
)
def test_other_imdlbencos_are_refused_with_what_to_install(installed, message):
    with pytest.raises(ImportError, match=message):
        check_host(versions(**installed))


@pytest.mark.slow  # a fresh interpreter importing everything
def test_bencos_import_noise_stays_off_our_console():
    """IMDLBenCo prints the torch version at import and timm/torch FutureWarnings come with it;
    a command shows neither."""
    result = subprocess.run(
        [sys.executable, "-m", "imdlbenco_maskclip", "train", "--model", "MaskCLIP", "--model-help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and "--setting" in result.stdout, result.stderr
    assert "Torch version" not in result.stdout and "+cu" not in result.stdout
    assert "Warning" not in result.stderr, result.stderr


@pytest.mark.slow  # a fresh interpreter importing everything
def test_our_warnings_still_show_after_benco_is_imported_quietly():
    """IMDLBenCo's model zoo switches every warning off at import (``warnings.filterwarnings('ignore')``
    in ``mscdi_net/utils.py``); imported quietly it leaves the process's warnings as they were."""
    result = run_python(
        "import warnings\n"
        "from imdlbenco_maskclip.host.registration import quiet_benco_import\n"
        "quiet_benco_import()\n"
        "import IMDLBenCo.training_scripts.utils.misc\n"
        "from IMDLBenCo.registry import MODELS\n"
        "assert MODELS.has('MaskCLIP')\n"
        "warnings.warn('a warning of ours', RuntimeWarning)\n"
    )
    assert result.returncode == 0, result.stderr
    assert "Torch version" not in result.stdout
    assert "a warning of ours" in result.stderr and "FutureWarning" not in result.stderr
