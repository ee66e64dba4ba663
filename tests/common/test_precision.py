"""The one ``--amp`` rule every command uses (``common.precision``)."""

from __future__ import annotations

import pytest
import torch

from imdlbenco_maskclip.common import precision
from imdlbenco_maskclip.common.errors import UserError
from imdlbenco_maskclip.common.precision import INFERENCE, TRAINING, autocast_dtype, precision_name

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


def test_given_precisions_are_used_as_given_everywhere():
    for purpose in (TRAINING, INFERENCE):
        assert autocast_dtype("off", CUDA, purpose) is None
        assert autocast_dtype("off", CPU, purpose) is None
        assert autocast_dtype("bf16", CUDA, purpose) is torch.bfloat16
        assert autocast_dtype("bf16", CPU, purpose) is torch.bfloat16
        assert autocast_dtype("fp16", CPU, purpose) is torch.float16


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_the_cpu_is_bf16_for_inference_only_where_the_cpu_computes_it(monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_computes_bf16", lambda: native)
    assert autocast_dtype("auto", CPU, INFERENCE) is (torch.bfloat16 if native else None)
    assert autocast_dtype(None, CPU, INFERENCE) is (torch.bfloat16 if native else None)
    assert autocast_dtype("auto", CPU, TRAINING) is None  # training on the CPU stays fp32
    assert autocast_dtype(None, CPU) is None
    assert autocast_dtype("auto", torch.device("meta"), INFERENCE) is None  # other devices: fp32


def test_auto_on_cuda_is_bf16_where_the_card_supports_it_else_fp16(monkeypatch):
    for supported, dtype in ((True, torch.bfloat16), (False, torch.float16)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        for purpose in (TRAINING, INFERENCE):
            assert autocast_dtype("auto", CUDA, purpose) is dtype


def test_the_cpu_check_reads_torchs_own_answer(monkeypatch):
    """The wrapped private checks decide, and a torch without them means no native bf16."""
    for avx512, amx, expected in ((True, False, True), (False, True, True), (False, False, False)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda avx512=avx512: avx512, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx, raising=False)
        assert precision.cpu_computes_bf16() is expected
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert precision.cpu_computes_bf16() is False


def test_an_unknown_precision_names_the_flag():
    with pytest.raises(UserError, match="--amp: 'fp8'"):
        autocast_dtype("fp8", CPU)


def test_precision_names_as_runs_record_them():
    assert [precision_name(d) for d in (None, torch.bfloat16, torch.float16)] == ["float32", "bfloat16", "float16"]
