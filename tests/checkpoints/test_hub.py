"""Checkpoints given as ``hf://`` references, read through huggingface_hub's own cache in
offline mode: a cache laid out exactly as ``hf_hub_download`` leaves it, ``HF_HUB_OFFLINE`` set,
and the real ``hf_hub_download`` / ``snapshot_download`` answering (fixtures: ``released``,
``hub_cache``)."""

from __future__ import annotations

from pathlib import Path

import pytest

import imdlbenco_maskclip
from imdlbenco_maskclip.checkpoints.hub import short_name
from imdlbenco_maskclip.checkpoints.loading import read_checkpoint
from imdlbenco_maskclip.common.errors import UserError
from imdlbenco_maskclip.inference.predictor import Predictor
from tests.support.released_layout import COMMIT, RELEASED_NAME, REPO, forward, same_outputs, sha256_of

pytestmark = pytest.mark.usefixtures("single_thread")

REFERENCE = f"hf://{REPO}/{RELEASED_NAME}"


def test_a_cached_hub_file_loads_offline_as_its_local_copy_and_records_revision_and_sha256(released, hub_cache):
    local, remote = imdlbenco_maskclip.load_model(released), imdlbenco_maskclip.load_model(REFERENCE)
    assert same_outputs(forward(local), forward(remote))
    source = read_checkpoint(f"hf://{REPO}@main/{RELEASED_NAME}").source
    assert source["revision"] == COMMIT and source["sha256"] == sha256_of(released)
    assert source["checkpoint"] == f"hf://{REPO}@main/{RELEASED_NAME}"
    assert read_checkpoint(f"hf://{REPO}@{COMMIT}/{RELEASED_NAME}").source["revision"] == COMMIT
    assert Predictor.from_checkpoint(REFERENCE, device="cpu").source == {
        "checkpoint": REFERENCE,
        "reference": REFERENCE,
        "revision": COMMIT,
        "sha256": sha256_of(released),
    }


def test_a_local_checkpoint_records_only_its_path(released):
    assert read_checkpoint(released).source == {"checkpoint": str(released)}


@pytest.mark.parametrize(
    ("reference", "said"),
    [
        (
            f"hf://{REPO}/MaskCLIP_sd15_other.pth",
            "the file MaskCLIP_sd15_other.pth of nebula/MaskCLIP-weights is not in",
        ),
        (
            f"hf://{REPO}@v2/{RELEASED_NAME}",
            "at revision v2 is not in the Hugging Face cache and HF_HUB_OFFLINE is set",
        ),
        ("hf://someone/elsewhere/model.pth", "someone/elsewhere is not in the Hugging Face cache"),
        (f"hf://{REPO}/export/", "nebula/MaskCLIP-weights has no export/model.safetensors"),
        ("hf://nebula", "hf://nebula is not a hub reference"),
    ],
)
def test_what_the_cache_cannot_give_is_a_user_error_naming_repository_and_file(hub_cache, reference, said):
    with pytest.raises(UserError, match="--checkpoint: .*" + said.replace(".", r"\.")):
        imdlbenco_maskclip.load_model(reference)


def test_results_go_under_opensdi_results_named_after_the_file_or_folder():
    assert short_name(f"hf://{REPO}/{RELEASED_NAME}") == Path(RELEASED_NAME).stem
    assert short_name(f"hf://{REPO}@{COMMIT}/sub/MaskCLIP_x.pth") == "MaskCLIP_x"
    assert short_name(f"hf://{REPO}@refs/pr/3") == "MaskCLIP-weights"
    assert short_name(f"hf://{REPO}/exports/maskclip/") == "maskclip"
