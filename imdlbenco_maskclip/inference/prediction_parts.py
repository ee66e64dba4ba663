"""``benco predict --format parquet``: prediction rows in parquet parts that appear whole.

Process R writes ``predictions/part-RRRRR-CCCCC.parquet``, chunk C after chunk C - 1, each in row
groups of at most ``ROW_GROUP_ROWS`` rows. A part is written under a hidden temporary name
(``.part-....parquet.tmp-PID``, which ``datasets`` and ``pyarrow.dataset`` skip) and renamed when
closed: a parquet file killed before its footer is unreadable, so a file under a final name is
always complete, and its rows are done. ``--resume`` removes the temporaries, skips the inputs
whose (``source``, ``key``) a complete part holds, and numbers new parts after a process's last.

Columns: ``source``, ``key``, ``width``, ``height``, ``fake_probability``,
``manipulated_fraction``, ``mask`` (a PNG of the probability map at the image's size, as the
``datasets.Image`` struct of bytes and path; left out with ``--masks none``) and ``error``. The
schema's ``huggingface`` metadata holds the ``datasets`` features, so ``load_dataset("parquet")``
gives the mask as an image; ``imdlbenco_maskclip`` holds the run's facts as JSON (the weights'
``source`` with their sha256, ``precision``, ``threshold``, model, image size, padding, masks),
the same in every part of a run.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from imdlbenco_maskclip.common.atomic import atomic_path
from imdlbenco_maskclip.common.errors import UserError

FOLDER = "predictions"
ROW_GROUP_ROWS = 100
FACTS_KEY = b"imdlbenco_maskclip"
_PART = re.compile(r"^part-(\d{5,})-(\d{5,})\.parquet$")
_TEMPORARY = re.compile(r"^\.part-\d{5,}-\d{5,}\.parquet\.tmp-\d+$")

_VALUES = {
    "source": ("string", pa.string()),
    "key": ("string", pa.string()),
    "width": ("int32", pa.int32()),
    "height": ("int32", pa.int32()),
    "fake_probability": ("float64", pa.float64()),
    "manipulated_fraction": ("float64", pa.float64()),
}
_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def part_schema(with_masks: bool, facts: Mapping[str, Any]) -> pa.Schema:
    """The columns of a part, with the ``datasets`` features and the run's ``facts`` as metadata."""
    fields = [pa.field(name, kind) for name, (_, kind) in _VALUES.items()]
    features: dict[str, Any] = {name: {"dtype": dtype, "_type": "Value"} for name, (dtype, _) in _VALUES.items()}
    if with_masks:
        fields.append(pa.field("mask", _IMAGE))
        features["mask"] = {"_type": "Image"}
    fields.append(pa.field("error", pa.string()))
    features["error"] = {"dtype": "string", "_type": "Value"}
    metadata = {
        b"huggingface": json.dumps({"info": {"features": features}}).encode(),
        FACTS_KEY: json.dumps(dict(facts), sort_keys=True).encode(),
    }
    return pa.schema(fields, metadata=metadata)


def part_name(rank: int, chunk: int) -> str:
    return f"part-{rank:05d}-{chunk:05d}.parquet"


class PartWriter:
    """Rows of one process into parts of ``part_size`` rows: ``add`` each row (a dict with the
    schema's columns), ``close`` at the end, also when interrupted (the rows written are done)."""

    def __init__(self, folder: Path, rank: int, first_chunk: int, part_size: int, schema: pa.Schema) -> None:
        self.folder, self.rank, self.chunk, self.part_size, self.schema = folder, rank, first_chunk, part_size, schema
        self.written: list[Path] = []
        self.rows = 0
        self._buffer: list[dict] = []
        self._in_part = 0
        self._writer: pq.ParquetWriter | None = None
        self._stack: contextlib.ExitStack | None = None

    def add(self, row: Mapping[str, Any]) -> None:
        if self._writer is None:
            self._stack = contextlib.ExitStack()
            temporary = self._stack.enter_context(atomic_path(self.folder / part_name(self.rank, self.chunk)))
            self._writer = pq.ParquetWriter(temporary, self.schema)
        self._buffer.append({name: row.get(name) for name in self.schema.names})
        self._in_part += 1
        if len(self._buffer) >= ROW_GROUP_ROWS:
            self._flush()
        if self._in_part >= self.part_size:
            self._finish()

    def _flush(self) -> None:
        if self._buffer and self._writer is not None:
            self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=self.schema))
        self._buffer = []

    def _finish(self) -> None:
        """Close the part in progress and give it its final name (on an error, remove it)."""
        if self._writer is None or self._stack is None:
            return
        with self._stack:
            self._flush()
            self._writer.close()
        self.written.append(self.folder / part_name(self.rank, self.chunk))
        self.rows += self._in_part
        self._writer, self._stack, self._in_part = None, None, 0
        self.chunk += 1

    def close(self) -> None:
        self._finish()


def complete_parts(folder: Path) -> list[Path]:
    """The parts under ``folder`` that are whole, in name order."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _PART.match(p.name))


def temporaries(folder: Path) -> list[Path]:
    """Parts that a killed process left unfinished."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _TEMPORARY.match(p.name))


def next_chunk(parts: Iterable[Path], rank: int) -> int:
    """The number of process ``rank``'s next part: after its last complete one."""
    chunks = [int(m[2]) for m in (_PART.match(p.name) for p in parts) if m and int(m[1]) == rank]
    return max(chunks, default=-1) + 1


def recorded_facts(part: Path) -> dict[str, Any]:
    """The run's facts that ``part`` records (``{}`` when it records none)."""
    raw = (pq.read_schema(part).metadata or {}).get(FACTS_KEY)
    return json.loads(raw) if raw else {}


def check_same_run(parts: Iterable[Path], facts: Mapping[str, Any]) -> None:
    """A ``UserError`` naming the part and what differs when a part was written by other
    weights, model, precision, threshold or mask setting than ``facts`` describe."""
    for part in parts:
        recorded = recorded_facts(part)
        differ = sorted(k for k in set(recorded) | set(facts) if recorded.get(k) != facts.get(k))
        if differ:
            details = "; ".join(f"{k}: {recorded.get(k)!r} there, {facts.get(k)!r} now" for k in differ)
            raise UserError(
                f"--resume: {part} was written by another setting ({details}); resume with that run's "
                f"--checkpoint, --image_size, --if_padding, --amp, --threshold and --masks, or use another --output_dir"
            )


def done_inputs(parts: Iterable[Path], sources: Iterable[str]) -> set[tuple[str, str]]:
    """(source, key) of the rows of ``parts`` whose source is one of ``sources``."""
    wanted = pa.array(sorted(set(sources)), type=pa.string())
    done: set[tuple[str, str]] = set()
    for part in parts:
        table = pq.read_table(part, columns=["source", "key"])
        table = table.filter(pc.is_in(table.column("source"), value_set=wanted))
        done.update(zip(table.column("source").to_pylist(), table.column("key").to_pylist()))
    return done


def sources_of(parts: Iterable[Path]) -> set[str]:
    """Every ``source`` the rows of ``parts`` name."""
    found: set[str] = set()
    for part in parts:
        found.update(pc.unique(pq.read_table(part, columns=["source"]).column("source")).to_pylist())
    return found
