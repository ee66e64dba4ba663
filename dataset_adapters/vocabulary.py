"""OpenSDI's vocabulary: the generators this project knows, in the paper's order, and the parts
of a key (``<kind>/<generator>/<real|fake>/<id>``).

Data are not limited to the known generators: a shard ``sd35-00000-of-00001.parquet`` with keys
``partial/sd35/...`` is read, exported, trained and tested like any other, and listed after the
known ones (``generator_order``). The CLI, the demo, the synthetic writer and the configs take
their generator names from here.
"""

from __future__ import annotations

from collections.abc import Iterable

KNOWN_GENERATORS = ("sd15", "sd2", "sdxl", "sd3", "flux")
KINDS = ("entire", "partial")
LABEL_NAMES = ("real", "fake")


def generator_order(names: Iterable[str]) -> list[str]:
    """Known generators in the paper's order, then any others alphabetically (each once)."""
    names = set(names)
    known = [g for g in KNOWN_GENERATORS if g in names]
    return known + sorted(names - set(known))
