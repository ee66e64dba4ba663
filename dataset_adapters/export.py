"""Export OpenSDI shards to Benco's own layouts: ``Tp``/``Gt`` folders (``ManiDataset``) or a JSON list.

Image bytes and stored mask bytes are copied unchanged. Masks that the shards do not store are
written as PNG: black for real images in the Tp/Gt layout (``ManiDataset`` needs a Gt file for
every Tp file), white for whole-image fakes. In the JSON list real images are ``"Negative"``.

File names. ``ManiDataset`` pairs the sorted Tp list with the sorted Gt list, so Tp and Gt names
must sort alike even where their extensions differ. Both are ``<stem><extension>`` with the same
stem per row, and a stem holds only characters that sort after ``.``: letters, digits and ``_``
are kept, ``/`` becomes ``~`` and any other byte ``=XX`` (the key's own extension is left out of
the stem). Two names then compare by their stems alone, whatever their extensions.

Re-running after an interruption finishes the job: files are written under ``DST/.partial`` and
moved into place with ``os.replace``, so ``Tp`` and ``Gt`` only ever hold complete files; files
already in place are kept, and the JSON list is written last, atomically. ``DST/.partial`` is
removed when the export ends, or at the start of the next run after a hard kill.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import string
from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from dataset_adapters.errors import OpenSDIError
from dataset_adapters.rows import DECODE_ERRORS, RowReader, image_header
from dataset_adapters.shards import ShardIndex, SourceLike, find_shards

FORMATS = ("mani", "json")
JSON_NAME = "opensdi.json"

_SAFE = frozenset(string.ascii_letters + string.digits + "_")
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,5}$")
_FORMAT_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp", "GIF": ".gif"}


def file_stem(key: str) -> str:
    """The file name stem of a shard key: ``partial/sd15/fake/12.jpg`` -> ``partial~sd15~fake~12``."""
    match = _EXTENSION.search(key)
    base = key[: match.start()] if match else key
    parts = []
    for char in base:
        if char in _SAFE:
            parts.append(char)
        elif char == "/":
            parts.append("~")
        else:
            parts.extend(f"={byte:02X}" for byte in char.encode("utf-8"))
    return "".join(parts) or "=00"


def export_opensdi(
    src: SourceLike,
    dst: str | os.PathLike,
    format: str = "mani",
    generators: Sequence[str] | None = None,
    subset: str = "all",
) -> str:
    """Write the rows of ``src`` to ``dst`` for Benco; returns what to pass to Benco (folder or JSON file).

    ``mani``: ``dst/Tp`` and ``dst/Gt``. ``json``: the images under ``dst/Tp`` and ``dst/Gt`` and the
    list at ``dst/opensdi.json``; or, when ``dst`` ends in ``.json``, the list at ``dst`` and the
    images beside it (``benco_data/sd3.json`` -> ``benco_data/sd3/Tp``, ``benco_data/sd3/Gt``).
    """
    if format not in FORMATS:
        raise OpenSDIError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    dst = Path(dst).absolute()
    listing = dst / JSON_NAME
    if dst.suffix.lower() == ".json":
        if format != "json":
            raise OpenSDIError(f"the {format} format writes Tp/Gt folders: give a folder, not {dst}")
        listing, dst = dst, dst.with_suffix("")
    index = ShardIndex.build(find_shards(src, generators)).subset(subset)
    stems = [file_stem(k) for k in index.keys.to_pylist()]
    _check_unique(stems, index)

    tp_dir, gt_dir, scratch = dst / "Tp", dst / "Gt", dst / ".partial"
    for folder in (tp_dir, gt_dir):
        folder.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    existing = {folder: _existing_by_stem(folder, set(stems)) for folder in (tp_dir, gt_dir)}

    reader = RowReader(index.shards)
    records = []
    try:
        for i in tqdm(range(len(index)), desc=f"export {format}", unit="img"):
            label = int(index.label[i])
            with_mask = label == 1 and bool(index.has_mask[i])
            shard, group, row = index.location(i)
            image, mask = reader.read(shard, group, row, with_mask)
            key, shard_path = index.key(i), index.shards[shard].path
            if image is None:
                raise OpenSDIError(f"the image of key {key!r} in shard {shard_path} has no bytes")
            tp_name = stems[i] + (_key_extension(key) or _extension(image, key, shard_path))
            tp = _place(tp_dir, tp_name, stems[i], existing[tp_dir], scratch, lambda data=image: data, len(image))
            if with_mask:
                if mask is None:
                    raise OpenSDIError(f"the mask of key {key!r} in shard {shard_path} has no bytes")
                gt_name = stems[i] + _extension(mask, key, shard_path)
                gt = _place(gt_dir, gt_name, stems[i], existing[gt_dir], scratch, lambda data=mask: data, len(mask))
            elif label == 1 or format == "mani":
                gt = _place(
                    gt_dir,
                    stems[i] + ".png",
                    stems[i],
                    existing[gt_dir],
                    scratch,
                    lambda data=image, key=key, path=shard_path, value=255 if label == 1 else 0: _flat_png(
                        _header(data, key, path)[1], value
                    ),
                    None,
                )
            else:
                gt = "Negative"
            records.append([str(tp), str(gt)])
        target = str(dst)
        if format == "json":
            target = str(listing)
            _write_atomic(listing, scratch, json.dumps(records, indent=1).encode("utf-8"))
    finally:
        reader.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _check_unique(stems: list[str], index: ShardIndex) -> None:
    seen: dict[str, int] = {}
    for i, stem in enumerate(stems):
        if stem in seen:
            raise OpenSDIError(
                f"keys {index.key(seen[stem])!r} and {index.key(i)!r} differ only in their extension, so "
                f"they would share the file name {stem}; export them in separate runs (e.g. --generators)"
            )
        seen[stem] = i


def _existing_by_stem(folder: Path, stems: set[str]) -> dict[str, str]:
    """Files already in ``folder`` by stem; refuse files that this export would not write."""
    found: dict[str, str] = {}
    foreign = []
    for name in sorted(os.listdir(folder)):
        stem = name.split(".", 1)[0]
        if stem in stems and stem not in found:
            found[stem] = name
        else:
            foreign.append(name)
    if foreign:
        raise OpenSDIError(
            f"{folder} holds {len(foreign)} file(s) that this export does not write (e.g. {foreign[0]}); "
            f"Benco would pair them with the wrong masks. Export into an empty folder"
        )
    return found


def _place(
    folder: Path, name: str, stem: str, existing: dict[str, str], scratch: Path, content, size: int | None
) -> Path:
    """Put one file in place unless a complete one is there; returns its path."""
    target = folder / name
    old = existing.get(stem)
    if old is not None and old != name:
        (folder / old).unlink()
    elif old is not None and (size is None or target.stat().st_size == size):
        return target
    _write_atomic(target, scratch, content())
    return target


def _write_atomic(target: Path, scratch: Path, data: bytes) -> None:
    temporary = scratch / target.name
    with open(temporary, "wb") as handle:
        handle.write(data)
    os.replace(temporary, target)


def _key_extension(key: str) -> str:
    match = _EXTENSION.search(key)
    return match.group(0) if match else ""


def _header(data: bytes, key: str, shard: str) -> tuple[str, tuple[int, int]]:
    try:
        return image_header(data)
    except DECODE_ERRORS as error:
        raise OpenSDIError(f"cannot read the image header of key {key!r} in shard {shard}: {error}") from None


def _extension(data: bytes, key: str, shard: str) -> str:
    kind = _header(data, key, shard)[0]
    return _FORMAT_EXTENSIONS.get(kind, f".{kind.lower()}" if kind else ".img")


def _flat_png(size: tuple[int, int], value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, value).save(buffer, "PNG")
    return buffer.getvalue()
