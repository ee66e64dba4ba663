"""Fingerprints of test data: which files a result was computed on, taken without reading images.

A parquet shard is known by its name, its size and a SHA-256 of its footer (the file metadata:
schema, row groups, their row counts, offsets and column statistics), read from the file's last
bytes; a shard rewritten, truncated or replaced (a hub revision that deleted or re-encoded rows)
has another footer. Shards inside a Hugging Face cache snapshot (``.../snapshots/<revision>/``,
as a hub id resolves) also give the revision. Image files (Benco's Tp/Gt folders, JSON lists)
are known by a SHA-256 of their sorted names and sizes. Every fingerprint has a ``sha256`` of
the whole, which is what two results are compared by: the same files at different paths give
the same one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

from dataset_adapters.errors import OpenSDIError

_MAGIC = b"PAR1"
_SNAPSHOT = re.compile(r"[/\\]snapshots[/\\]([0-9a-f]{40})[/\\]")


def footer_digest(path: str) -> str:
    """SHA-256 of a parquet file's footer metadata (the bytes before its closing length and magic)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            if size < 12:
                raise OpenSDIError(f"{path} is not a parquet file: {size} bytes")
            handle.seek(size - 8)
            tail = handle.read(8)
            length = int.from_bytes(tail[:4], "little")
            if tail[4:] != _MAGIC or length > size - 12:
                raise OpenSDIError(f"{path} is not a parquet file: no footer at its end")
            handle.seek(size - 8 - length)
            return hashlib.sha256(handle.read(length)).hexdigest()
    except OSError as error:
        raise OpenSDIError(f"cannot read the footer of {path}: {error}") from None


def hub_revision(path: str) -> str | None:
    """The revision of the Hugging Face cache snapshot that holds ``path``, if one does."""
    match = _SNAPSHOT.search(os.path.abspath(path))
    return match.group(1) if match else None


def _sealed(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """``fingerprint`` with the ``sha256`` of its canonical JSON (revision left out: the files say it)."""
    content = {k: v for k, v in fingerprint.items() if k != "revision"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return {**fingerprint, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}


def shard_fingerprint(paths: Sequence[str]) -> dict[str, Any]:
    """The shards' names, sizes and footer digests, in name order, with the hub revision when
    they come from one snapshot."""
    files = sorted(
        ({"name": os.path.basename(p), "size": os.path.getsize(p), "footer_sha256": footer_digest(p)} for p in paths),
        key=lambda entry: entry["name"],
    )
    fingerprint: dict[str, Any] = {"kind": "parquet", "files": files}
    revisions = {hub_revision(p) for p in paths}
    if len(revisions) == 1 and None not in revisions:
        fingerprint["revision"] = revisions.pop()
    return _sealed(fingerprint)


def file_list_fingerprint(entries: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Image files given as (name, path) pairs (e.g. ``Tp/0001.jpg``): how many, their bytes,
    and a digest of their sorted names and sizes."""
    sized = sorted((name, os.path.getsize(path)) for name, path in entries)
    digest = hashlib.sha256("".join(f"{name}\t{size}\n" for name, size in sized).encode("utf-8")).hexdigest()
    return _sealed({"kind": "files", "files": len(sized), "bytes": sum(s for _, s in sized), "names_sha256": digest})
