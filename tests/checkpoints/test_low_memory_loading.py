"""Loading that holds the model once: a released-layout file is memory-mapped, MaskCLIP is built
on the meta device and receives the file's tensors, the optimizer is never read, and the
outputs are bitwise those of loading as before (read the whole file, build, copy).

The memory bound is measured on a full-size file in ``test_released_full_size``; a scaled-down
file of the same layout serves here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import imdlbenco_maskclip
from imdlbenco_maskclip.checkpoints.loading import read_checkpoint
from imdlbenco_maskclip.model import MaskCLIP
from tests.support.released_layout import _load_as_before, forward, same_outputs

ROOT = Path(__file__).resolve().parents[2]
BOUND = 1.25
"""Peak RSS above the RSS before ``load_model``, in units of the loaded model's own bytes."""


pytestmark = pytest.mark.usefixtures("single_thread")


def mapped_file(address: int) -> str | None:
    """The file whose mapping holds ``address`` in this process (Linux's /proc/self/maps)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(part, 16) for part in fields[0].split("-"))
        if start <= address < end:
            return fields[5] if len(fields) == 6 else None
    return None


def test_maskclip_builds_on_the_meta_device_and_its_rebuilt_buffers_are_the_cpu_builds():
    torch.manual_seed(0)
    reference = MaskCLIP("tiny").eval()
    with torch.device("meta"):
        network = MaskCLIP("tiny")
    assert all(p.is_meta for p in network.parameters())
    network.load_state_dict(reference.state_dict(), assign=True)
    network.rebuild_buffers()
    buffers = dict(reference.named_buffers())
    assert (
        {name for name, _ in network.named_buffers()}
        == set(buffers)
        == {
            "input_scale",
            "input_shift",
            "prompts.tokens",
            "clip.model.attn_mask",
        }
    )
    for name, value in network.named_buffers():
        assert value.device.type == "cpu" and value.dtype == buffers[name].dtype and torch.equal(value, buffers[name])
    assert same_outputs(forward(reference), forward(network.eval()))


def test_the_released_layout_loads_bitwise_as_before_without_reading_the_optimizer(released):
    model = imdlbenco_maskclip.load_model(released)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert same_outputs(forward(model), forward(_load_as_before(released)))
    stored = read_checkpoint(released)
    moments = [state["exp_avg"] for state in stored.saved.optimizer["state"].values()]
    assert moments and all(not t.is_meta for t in moments)
    # the file is memory-mapped: its tensors, the model's weights among them, lie in the file's pages
    assert mapped_file(moments[0].data_ptr()) == str(released)
    assert mapped_file(model.side_vit.patch_embed.proj.weight.data_ptr()) == str(released)


@pytest.mark.slow  # a second file and two more loads
def test_a_dtype_other_than_the_models_is_cast_as_copying_did(released, tmp_path):
    from imdlbenco_maskclip.host.workarounds import allow_namespace_checkpoints

    allow_namespace_checkpoints()
    payload = torch.load(released, weights_only=True)
    payload["model"] = {key: value.to(torch.float64) for key, value in payload["model"].items()}
    torch.save(payload, tmp_path / "double.pth")
    model = imdlbenco_maskclip.load_model(tmp_path / "double.pth")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert same_outputs(forward(model), forward(_load_as_before(tmp_path / "double.pth")))
