"""Installed beside IMDLBenCo, which also installs a ``benco``: reinstalling imdlbenco takes
``benco`` over, ``benco-opensdi`` (ours alone) keeps working, and the README's two repairs work.

Runs pip for real in a scratch virtual environment that reuses this environment's installed
dependencies (a ``.pth`` file names its site-packages): this package's wheel is built from the
tree, IMDLBenCo's (the installed version) is fetched with ``pip download`` from the package
index pip is configured with (PyPI in CI); without one the test is skipped, saying so.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # builds a wheel and runs pip half a dozen times (about a minute)


def pip(environment: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pip", "--python", str(environment / "bin" / "python"), *args]
    return subprocess.run(command, capture_output=True, text=True, check=True, env=clean_env())


def clean_env() -> dict[str, str]:
    """This session's environment without the PYTHONPATH that points at a source tree."""
    return {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}


def command(environment: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    """Run one of the environment's scripts away from the source tree (``-m`` would import it)."""
    return subprocess.run(
        [str(environment / "bin" / name), *args], capture_output=True, text=True, env=clean_env(), cwd=environment
    )


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("wheels")
    benco_version = version("imdlbenco")
    fetched = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", f"imdlbenco=={benco_version}", "-d", str(folder)],
        capture_output=True,
        text=True,
    )
    if fetched.returncode:
        pytest.skip(f"no package index answers for imdlbenco=={benco_version}: {fetched.stderr.strip()[-300:]}")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(folder), str(ROOT)],
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        "imdlbenco": next(folder.glob("imdlbenco-*.whl")),
        "ours": next(folder.glob("imdlbenco_maskclip-*.whl")),
    }


@pytest.fixture
def environment(tmp_path) -> Path:
    """An empty virtual environment that sees this one's installed packages after its own."""
    scratch = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(scratch)], check=True)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(scratch), "platbase": str(scratch)}))
    (purelib / "reuse_installed.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return scratch


def test_benco_opensdi_outlives_a_reinstall_of_imdlbenco_and_the_repairs_work(wheels, environment):
    pip(environment, "install", "--no-deps", str(wheels["imdlbenco"]))
    pip(environment, "install", "--no-deps", str(wheels["ours"]))
    assert command(environment, "benco", "train", "--help").returncode == 0

    pip(environment, "install", "--force-reinstall", "--no-deps", str(wheels["imdlbenco"]))
    taken = command(environment, "benco", "train", "--help")
    assert taken.returncode != 0 and "invalid choice" in taken.stderr  # IMDLBenCo's benco now
    ours = command(environment, "benco-opensdi", "train", "--help")
    assert ours.returncode == 0 and "--global_batch_size" in ours.stdout
    module = command(environment, "python", "-c", "import imdlbenco_maskclip.cli as c; print(c.__file__)")
    assert str(environment) in module.stdout  # the wheel's copy, not the tree's
    assert command(environment, "python", "-m", "imdlbenco_maskclip", "weights", "--help").returncode == 0

    pip(environment, "install", "--force-reinstall", "--no-deps", str(wheels["ours"]))  # the README's first repair
    assert command(environment, "benco", "train", "--help").returncode == 0

    pip(environment, "uninstall", "-y", "imdlbenco-maskclip")
    assert not (environment / "bin" / "benco").exists()
    pip(environment, "install", "--force-reinstall", "--no-deps", str(wheels["imdlbenco"]))  # the second repair
    assert (environment / "bin" / "benco").exists() and not (environment / "bin" / "benco-opensdi").exists()
