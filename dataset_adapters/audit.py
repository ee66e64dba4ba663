"""Shortcut audit: can image metadata alone tell real from fake, generator by generator?

If the real photos of a split are mostly one size and format and its fakes another, a detector can
score well without looking at any pixel. This module reads, per row, only what the image header
and the stored bytes give: width, height, format, the JPEG quality estimated from the luminance
quantization table (PIL parses the tables without decoding pixels) and bytes per pixel. It then
cross-validates a small decision tree on those five facts, real against fake within each
generator: accuracy near the majority share means metadata carries no shortcut, accuracy near 1
means it does.

Every row group's ``image.bytes`` is read (the headers live inside the bytes), one group at a time,
so memory stays at about one row group whatever the size of the source.
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from dataset_adapters.errors import OpenSDIError
from dataset_adapters.rows import DECODE_ERRORS, group_images
from dataset_adapters.shards import ShardIndex, SourceLike, find_shards
from dataset_adapters.vocabulary import LABEL_NAMES

JSON_NAME = "audit.json"
FIGURE_NAME = "audit.png"
FEATURES = ("width", "height", "format", "jpeg_quality", "bytes_per_pixel")
DETECTOR = "DecisionTreeClassifier(max_depth=4, random_state=0), format one-hot, jpeg_quality -1 without a table"
MAX_FOLDS = 5
COMMON = 10
NO_QUALITY = -1

# The example luminance table of the JPEG standard (ITU-T T.81, Annex K), in natural order: the
# table IJG's libjpeg (and so PIL) scales by the quality setting.
_IJG_LUMINANCE = np.array(
    [
        16,
        11,
        10,
        16,
        24,
        40,
        51,
        61,
        12,
        12,
        14,
        19,
        26,
        58,
        60,
        55,
        14,
        13,
        16,
        24,
        40,
        57,
        69,
        56,
        14,
        17,
        22,
        29,
        51,
        87,
        80,
        62,
        18,
        22,
        37,
        56,
        68,
        109,
        103,
        77,
        24,
        35,
        55,
        64,
        81,
        104,
        113,
        92,
        49,
        64,
        78,
        87,
        103,
        121,
        120,
        101,
        72,
        92,
        95,
        98,
        112,
        100,
        103,
        99,
    ]
)


def _ijg_tables() -> np.ndarray:
    """Row q-1: libjpeg's luminance table at quality q (``jpeg_quality_scaling``), before clamping."""
    quality = np.arange(1, 101)
    scale = np.where(quality < 50, 5000 // quality, 200 - 2 * quality)
    return (_IJG_LUMINANCE[None, :] * scale[:, None] + 50) // 100


_IJG_TABLES = _ijg_tables()


def estimate_jpeg_quality(luminance: Sequence[int]) -> int:
    """The IJG quality (1-100) whose scaled standard table is closest (sum of absolute differences)
    to a JPEG's luminance table in natural order, as ``Image.open(...).quantization[0]`` gives it.

    Exact for files written by libjpeg with a quality setting; for other encoders (cameras,
    Photoshop) the nearest IJG quality. Tables up to 255 are compared with baseline-clamped ones.
    """
    table = np.asarray(luminance, dtype=np.int64)
    if table.shape != (64,):
        raise ValueError(f"a JPEG quantization table has 64 entries, not {table.size}")
    candidates = np.clip(_IJG_TABLES, 1, 255 if table.max() <= 255 else 32767)
    return int(np.argmin(np.abs(candidates - table).sum(axis=1))) + 1


@dataclass
class Metadata:
    """Header facts of the readable images of one generator, one entry per row (label 0 real, 1 fake)."""

    label: np.ndarray
    width: np.ndarray
    height: np.ndarray
    format: np.ndarray
    jpeg_quality: np.ndarray
    bytes_per_pixel: np.ndarray

    def features(self) -> np.ndarray:
        """The detector's input: width, height, JPEG quality, bytes per pixel and one column per format."""
        formats = sorted(set(self.format))
        columns = [self.width, self.height, self.jpeg_quality, self.bytes_per_pixel]
        columns += [(self.format == f).astype(float) for f in formats]
        return np.column_stack(columns).astype(float)


@dataclass
class GeneratorAudit:
    """One generator's metadata, unreadable headers per label, and the metadata-only detector's
    cross-validated accuracy (mean and population standard deviation over ``folds`` folds; None
    when a class has fewer than two readable images)."""

    generator: str
    metadata: Metadata
    unreadable: dict[str, int]
    accuracy: float | None
    accuracy_std: float | None
    folds: int

    @property
    def counts(self) -> dict[str, int]:
        """Readable images per label."""
        return {name: int(np.count_nonzero(self.metadata.label == i)) for i, name in enumerate(LABEL_NAMES)}

    @property
    def majority(self) -> float | None:
        """The accuracy of always answering the larger class: what the detector must beat."""
        counts = self.counts.values()
        return max(counts) / sum(counts) if sum(counts) else None

    def summary(self, label: str) -> dict[str, Any]:
        """Width, height, bytes-per-pixel and JPEG-quality statistics, format counts and the most
        common sizes and qualities of one label's readable images."""
        meta = self.metadata
        rows = meta.label == LABEL_NAMES.index(label)
        jpeg = rows & (meta.jpeg_quality != NO_QUALITY)
        sizes = Counter(f"{w}x{h}" for w, h in zip(meta.width[rows], meta.height[rows]))
        qualities = Counter(str(q) for q in meta.jpeg_quality[jpeg])
        return {
            "width": _stats(meta.width[rows]),
            "height": _stats(meta.height[rows]),
            "bytes_per_pixel": _stats(meta.bytes_per_pixel[rows]),
            "jpeg_quality": _stats(meta.jpeg_quality[jpeg]),
            "format": dict(sorted(Counter(meta.format[rows]).items())),
            "sizes": dict(sizes.most_common(COMMON)),
            "jpeg_qualities": dict(qualities.most_common(COMMON)),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "unreadable": self.unreadable,
            "accuracy": self.accuracy,
            "accuracy_std": self.accuracy_std,
            "folds": self.folds,
            "majority": self.majority,
            **{label: self.summary(label) for label in LABEL_NAMES},
        }

    def line(self) -> str:
        """One sentence for the terminal."""
        counts = ", ".join(f"{n} {label}" for label, n in self.counts.items())
        bad = sum(self.unreadable.values())
        counts += f", {bad} unreadable" if bad else ""
        if self.accuracy is None:
            return f"{self.generator}: too few images of a class to cross-validate a metadata-only detector ({counts})"
        return (
            f"{self.generator}: a detector that reads only image size, format, JPEG quality and bytes per pixel "
            f"reaches {self.accuracy:.2f} accuracy (± {self.accuracy_std:.2f}, {self.folds} folds; {counts}; "
            f"majority class {self.majority:.2f})"
        )


@dataclass
class OpenSDIAudit:
    """The audit of one source: a ``GeneratorAudit`` per generator, in ``generator_order``."""

    source: str
    generators: list[GeneratorAudit]

    def to_json(self) -> dict[str, Any]:
        """``audit.json``'s content (see ``load_audit``)."""
        return {
            "source": self.source,
            "features": list(FEATURES),
            "detector": DETECTOR,
            "figure": FIGURE_NAME,
            "generators": {g.generator: g.to_json() for g in self.generators},
        }

    def format(self) -> str:
        """One line per generator."""
        return "\n".join(g.line() for g in self.generators)

    def write(self, output_dir: str | os.PathLike) -> Path:
        """Write ``audit.json`` into ``output_dir`` (created if needed), whole or not at all;
        returns its path. Its figure, ``audit.png``, is drawn where the report lives
        (``imdlbenco_maskclip.evaluation.audit_figure``)."""
        path = Path(output_dir) / JSON_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        temporary.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, path)
        return path


def audit_opensdi(source: SourceLike, generators: Sequence[str] | None = None) -> OpenSDIAudit:
    """Read every image header of ``source`` (no pixels decoded) and audit each generator."""
    shards = find_shards(source, generators)
    index = ShardIndex.build(shards)
    rows: dict[str, list[tuple]] = {}
    unreadable: dict[str, Counter] = {}
    progress = tqdm(total=sum(len(s.group_rows) for s in shards), desc="audit", unit="row group")
    for number, shard in enumerate(shards):
        labels = iter(index.label[index.shard == number].tolist())
        with pq.ParquetFile(shard.path) as parquet:
            for group in range(len(shard.group_rows)):
                for data in group_images(parquet, shard.path, group):
                    label = next(labels)
                    facts = _header_facts(data)
                    if facts is None:
                        unreadable.setdefault(shard.generator, Counter())[LABEL_NAMES[label]] += 1
                    else:
                        rows.setdefault(shard.generator, []).append((label, *facts))
                progress.update()
    progress.close()
    present = list(dict.fromkeys(s.generator for s in shards))
    audits = [
        _audit_generator(g, rows.get(g, []), {n: unreadable.get(g, Counter())[n] for n in LABEL_NAMES}) for g in present
    ]
    described = os.fspath(source) if isinstance(source, (str, os.PathLike)) else " ".join(map(os.fspath, source))
    return OpenSDIAudit(source=described, generators=audits)


def load_audit(path: str | os.PathLike) -> dict[str, Any]:
    """``audit.json`` (or the folder holding it) as written by ``OpenSDIAudit.write``, with
    ``figure`` resolved to the absolute path of ``audit.png`` beside it (None if it is missing)."""
    path = Path(path)
    if path.is_dir():
        path = path / JSON_NAME
    try:
        audit = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OpenSDIError(f"no audit at {path}: run 'benco opensdi audit SRC --output_dir {path.parent}'") from None
    except ValueError as error:
        raise OpenSDIError(f"{path} is not valid JSON: {error}") from None
    missing = [k for k in ("source", "features", "generators") if not isinstance(audit, dict) or k not in audit]
    if missing:
        raise OpenSDIError(f"{path} is not an audit written by benco opensdi audit: it lacks {', '.join(missing)}")
    figure = path.parent / audit.get("figure", FIGURE_NAME)
    audit["figure"] = str(figure.resolve()) if figure.is_file() else None
    return audit


def _header_facts(data: bytes | None) -> tuple[int, int, str, int, float] | None:
    """(width, height, format, JPEG quality or -1, bytes per pixel) from the header; None if unreadable."""
    if data is None:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            tables = getattr(image, "quantization", None)
            quality = estimate_jpeg_quality(tables[0]) if tables and 0 in tables else NO_QUALITY
            return width, height, image.format or "unknown", quality, len(data) / max(1, width * height)
    except DECODE_ERRORS:
        return None


def _audit_generator(generator: str, rows: list[tuple], unreadable: dict[str, int]) -> GeneratorAudit:
    columns = list(zip(*rows)) if rows else [[]] * 6
    metadata = Metadata(
        label=np.array(columns[0], dtype=np.int8),
        width=np.array(columns[1], dtype=np.int64),
        height=np.array(columns[2], dtype=np.int64),
        format=np.array(columns[3], dtype=object),
        jpeg_quality=np.array(columns[4], dtype=np.int64),
        bytes_per_pixel=np.array(columns[5], dtype=float),
    )
    accuracy, std, folds = _cross_validate(metadata)
    return GeneratorAudit(generator, metadata, unreadable, accuracy, std, folds)


def _cross_validate(metadata: Metadata) -> tuple[float | None, float | None, int]:
    """Stratified k-fold accuracy of the small tree, k = min(5, smallest class); None below two per class."""
    folds = min(MAX_FOLDS, *(int(np.count_nonzero(metadata.label == i)) for i in range(len(LABEL_NAMES))))
    if folds < 2:
        return None, None, 0
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.tree import DecisionTreeClassifier

    scores = cross_val_score(
        DecisionTreeClassifier(max_depth=4, random_state=0),
        metadata.features(),
        metadata.label,
        cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=0),
        scoring="accuracy",
    )
    return float(scores.mean()), float(scores.std()), folds


def _stats(values: np.ndarray) -> dict[str, float] | None:
    if values.size == 0:
        return None
    return {
        "min": float(values.min()),
        "median": float(np.median(values)),
        "max": float(values.max()),
        "mean": float(values.mean()),
    }
