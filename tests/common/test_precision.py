"""The one ``--amp`` rule every command uses (``common.precision``)."""

from __future__ import annotations

import pytest
import torch

from imdlbenco_maskclip.common.errors import UserError
from imdlbenco_maskclip.common.precision import autocast_dtype, precision_name


def test_given_precisions_are_used_as_given_and_auto_is_off_on_the_cpu():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert autocast_dtype("auto", cpu) is None
    assert autocast_dtype(None, cpu) is None
    assert autocast_dtype("off", cuda) is None
    assert autocast_dtype("bf16", cuda) is torch.bfloat16
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    assert autocast_dtype("fp16", cpu) is torch.float16


def test_an_unknown_precision_names_the_flag():
    with pytest.raises(UserError, match="--amp: 'fp8'"):
        autocast_dtype("fp8", torch.device("cpu"))


def test_precision_names_as_runs_record_them():
    assert [precision_name(d) for d in (None, torch.bfloat16, torch.float16)] == ["float32", "bfloat16", "float16"]
