"""The paper's leaderboard (``opensdi_leaderboard.json``, the tables of arXiv 2503.19653) and
our figures laid beside its rows, for the Markdown, the report and ``benco compare``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from imdlbenco_maskclip.evaluation.protocol import Metric

LEADERBOARD = Path(__file__).resolve().parent / "opensdi_leaderboard.json"

# Benco registry names -> the paper's row names.
PAPER_NAMES = {
    "MaskCLIP": "MaskCLIP",
    "IML_ViT": "IML-ViT",
    "PSCC_Net": "PSCC-Net",
    "ObjectFormer": "ObjectFormer",
    "MVSSNet": "MVSS-Net",
    "Cat_Net": "CAT-Net",
    "Trufor": "TruFor",
}


@lru_cache(maxsize=1)
def leaderboard() -> dict[str, Any]:
    return json.loads(LEADERBOARD.read_text(encoding="utf-8"))


def paper_rows() -> list[str]:
    """The models the paper reports, localization rows first, in the leaderboard's order."""
    board = leaderboard()
    return list(dict.fromkeys([*board["localization"]["rows"], *board["detection"]["rows"]]))


def paper_value(model: str, split: str, metric: Metric) -> float | None:
    """The paper's figure for ``metric`` of ``model`` (a paper row name) on ``split`` (a
    generator or ``mean``); None where the paper does not report it."""
    if metric.paper is None:
        return None
    table, key = metric.paper
    return leaderboard()[table]["rows"].get(model, {}).get(split, {}).get(key)


def paper_columns() -> list[str]:
    """The leaderboard's generators, then ``mean``: the columns of every table beside the paper."""
    return [*leaderboard()["generators"], "mean"]


def beside_paper(
    ours: Mapping[str, Mapping[str, Any]], metrics: Sequence[Metric]
) -> list[tuple[str | None, list[Any]]]:
    """Our figures (``ours``: split -> row) and each paper row's, for every one of
    ``paper_columns`` and ``metrics``: (None for ours or the paper row's name, values)."""
    columns = paper_columns()
    rows: list[tuple[str | None, list[Any]]] = [(None, [ours.get(g, {}).get(m.name) for g in columns for m in metrics])]
    rows += [(name, [paper_value(name, g, m) for g in columns for m in metrics]) for name in paper_rows()]
    return rows
