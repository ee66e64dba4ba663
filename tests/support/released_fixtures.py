"""Fixtures for tests of released-layout files (a pytest plugin, named in ``tests/conftest.py``):
a scaled-down released file, the Hugging Face cache holding it read offline, and one CPU thread
for outputs compared bit for bit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.released_layout import RELEASED_NAME, REPO, offline_cache, one_thread, write_released_file


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    """A scaled-down file in the released layout (the tiny setting, 64 px)."""
    return write_released_file(tmp_path_factory.mktemp("released") / RELEASED_NAME, "tiny", image_size=64)


@pytest.fixture
def hub_cache(released, tmp_path, monkeypatch) -> Path:
    """``released`` as ``nebula/MaskCLIP-weights`` holds it, in a Hugging Face cache read offline."""
    return offline_cache(monkeypatch, tmp_path / "hub", REPO, {RELEASED_NAME: released})


@pytest.fixture
def single_thread() -> Iterator[None]:
    """Outputs compared bit for bit (``one_thread``)."""
    with one_thread():
        yield
