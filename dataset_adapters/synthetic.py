"""Synthetic OpenSDI shards in the real Hugging Face parquet format, for tests and the CPU demo.

The shards are written by ``datasets.Dataset.to_parquet`` with the features of OpenSDI
(``key: string``, ``image: Image``, ``mask: Image``, ``label: ClassLabel([real, fake])``), named
``data/<gen>-NNNNN-of-MMMMM.parquet`` and cut into small row groups, like the published ones.

Trace design. A real photo is a smooth scene (colour gradient, multi-scale texture, soft shapes)
plus per-pixel sensor noise (sigma 8), JPEG-compressed. "Generated" content is a scene rendered at
1/d of the size and upsampled (smooth, without sensor noise), plus the generator's traces: a grid
trace shared by all generators (vertical stripes of period 8 px locked to the pixel grid, as a
latent decoder's 8-px upsampling leaves; its strength falls from sd15 to flux), a faint sinusoidal
pattern of the generator's own period, orientation and random phase, and a colour cast. A partial
fake pastes generated content (a resampled, partly replaced copy of the same scene) into one to
three irregular regions (ellipses and blobs, 10-40% of the image) of its real twin; an entire fake
is generated content everywhere. A small network sees the grid trace (a fixed template in every
16-px patch, so a patch embedding picks it up at once) and the missing noise locally; a model
trained on sd15 finds less of the shared trace in the later generators, so cross-generator results
fall as in the paper. Per generator:

    sd15  d=4, grid 6, own period 12 px at 0 deg,   amplitude 6, cast (+14, +4, -14), no noise
    sd2   d=4, grid 5, own period 10 px at 90 deg,  amplitude 5, cast (-4, +10, -8),  noise 0.5
    sdxl  d=3, grid 4, own period 9 px at 45 deg,   amplitude 4, cast (-9, -2, +10),  noise 1
    sd3   d=3, grid 3, own period 7 px at 135 deg,  amplitude 3, cast (+5, -5, +5),   noise 2.5
    flux  d=2, grid 2, own period 5 px at 30 deg,   amplitude 2, cast (+2, +2, -2),   noise 4

A generator the project does not know (``sd35``) gets flux's strengths with its own period,
orientation and cast, drawn from its name, so new generators can be written and tested too.

Odd inputs on purpose, in every generator: an L-mode JPEG, an RGBA PNG, a P-mode PNG, an L-mode
mask, anti-aliased masks with unequal channels, other PNG images, and sizes that are not multiples
of 16. The same arguments give the same bytes (with the same pyarrow and datasets).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from dataset_adapters.errors import OpenSDIError
from dataset_adapters.vocabulary import KNOWN_GENERATORS

DEMO_SAMPLE = dict(n_per_class=32, image_size=128)
"""The default size: 128 rows of 128 px per generator, about half a second per generator to write.
``benco demo`` writes its own sizes (``benco_configs/cpu_demo.yaml``: 128 per class of sd15 for
training, 16 per class of each generator for testing); measured here, the tiny MaskCLIP trained on
them goes from mean pixel F1 0.20 to 0.67 on the held-out partial fakes in 71 s on 2 cores. Feed the images at their own size: resampling blurs the noise and the grid trace."""

REAL_NOISE = 8.0
GRID_PERIOD = 8


@dataclass(frozen=True)
class Trace:
    """How one generator's content differs from a photo (see the module docstring)."""

    downscale: int
    grid: float
    period: float
    angle: float
    amplitude: float
    cast: tuple[float, float, float]
    noise: float


TRACES = {
    "sd15": Trace(4, 6.0, 12.0, 0.0, 6.0, (14.0, 4.0, -14.0), 0.0),
    "sd2": Trace(4, 5.5, 10.0, 90.0, 5.0, (-4.0, 10.0, -8.0), 0.5),
    "sdxl": Trace(3, 5.0, 9.0, 45.0, 4.0, (-9.0, -2.0, 10.0), 1.0),
    "sd3": Trace(3, 4.0, 7.0, 135.0, 3.0, (5.0, -5.0, 5.0), 2.5),
    "flux": Trace(2, 3.0, 5.0, 30.0, 2.0, (2.0, 2.0, -2.0), 4.0),
}


def write_opensdi_shard(
    path: str | os.PathLike, rows: Iterable[tuple[str, bytes | None, bytes | None, int]], rows_per_group: int = 16
) -> str:
    """Write ``(key, image bytes, mask bytes or None, label)`` rows as one HF-format OpenSDI shard.

    Bytes are stored as given (nothing is re-encoded); the file appears atomically.
    """
    import datasets

    features = datasets.Features(
        {
            "key": datasets.Value("string"),
            "image": datasets.Image(),
            "mask": datasets.Image(),
            "label": datasets.ClassLabel(names=["real", "fake"]),
        }
    )
    columns: dict[str, list] = {"key": [], "image": [], "mask": [], "label": []}
    for key, image, mask, label in rows:
        columns["key"].append(key)
        columns["image"].append(None if image is None else {"bytes": image, "path": None})
        columns["mask"].append(None if mask is None else {"bytes": mask, "path": None})
        columns["label"].append(int(label))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    quiet = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        datasets.Dataset.from_dict(columns, features=features).to_parquet(str(temporary), batch_size=rows_per_group)
    finally:
        if not quiet:
            datasets.enable_progress_bars()
    os.replace(temporary, path)
    return str(path)


def write_synthetic_opensdi(
    root: str | os.PathLike,
    generators: Sequence[str] = KNOWN_GENERATORS,
    n_per_class: int = DEMO_SAMPLE["n_per_class"],
    image_size: int = DEMO_SAMPLE["image_size"],
    seed: int = 0,
    rows_per_shard: int = 512,
    rows_per_group: int = 16,
) -> list[str]:
    """Write ``root/data/<gen>-NNNNN-of-MMMMM.parquet``: per generator ``n_per_class`` rows of each of
    entire/real, entire/fake, partial/real and partial/fake, shuffled; returns the shard paths."""
    if n_per_class < 1 or image_size < 32:
        raise OpenSDIError("n_per_class must be at least 1 and image_size at least 32")
    written = []
    for number, generator in enumerate(generators):
        rows = _generator_rows(generator, number, n_per_class, image_size, seed)
        order = np.random.default_rng([seed, number, 7]).permutation(len(rows))
        rows = [rows[i] for i in order]
        count = -(-len(rows) // rows_per_shard)
        for part in range(count):
            chunk = rows[part * rows_per_shard : (part + 1) * rows_per_shard]
            path = Path(root) / "data" / f"{generator}-{part:05d}-of-{count:05d}.parquet"
            written.append(write_opensdi_shard(path, chunk, rows_per_group))
    return written


def trace_of(generator: str) -> Trace:
    """The generator's trace; for a name without one, flux's strengths with a period,
    orientation and cast drawn from the name (the same name, the same trace)."""
    if generator in TRACES:
        return TRACES[generator]
    rng = np.random.default_rng(list(generator.encode()))
    flux = TRACES["flux"]
    cast = tuple(float(c) for c in np.round(rng.uniform(-6, 6, 3), 1))
    return Trace(
        flux.downscale,
        flux.grid,
        float(rng.integers(5, 13)),
        float(rng.integers(0, 180)),
        flux.amplitude,
        cast,
        flux.noise,
    )


def _generator_rows(generator: str, number: int, n: int, size: int, seed: int) -> list[tuple]:
    trace = trace_of(generator)
    rows = []
    for i in range(n):
        height, width = _pair_size(i, size)
        rng = np.random.default_rng([seed, number, 0, i])
        scene = _scene(rng, height, width)
        photo = _photo(rng, scene)
        rows.append(
            _row("entire", generator, "real", i, photo, None, mode="L" if i == 0 else "RGB", png=i % 5 == 3, rng=rng)
        )

        rng = np.random.default_rng([seed, number, 1, i])
        fake = _generated(rng, _scene(rng, height, width), trace)
        rows.append(
            _row("entire", generator, "fake", i, fake, None, mode="P" if i == 0 else "RGB", png=i == 0, rng=rng)
        )

        rng = np.random.default_rng([seed, number, 2, i])
        scene = _scene(rng, height, width)
        photo = _photo(rng, scene)
        rows.append(
            _row(
                "partial",
                generator,
                "real",
                i,
                photo,
                None,
                mode="RGBA" if i == 0 else "RGB",
                png=i == 0 or i % 5 == 4,
                rng=rng,
            )
        )

        region = _region(rng, height, width)
        source = scene * 0.4 + _scene(rng, height, width) * 0.6
        edited = np.where(region[:, :, None] > 0, _generated(rng, source, trace), photo)
        mask = np.repeat(region[:, :, None], 3, axis=2) * 255.0
        if i % 3 == 0:
            mask = _soft_edges(mask)
        rows.append(
            _row(
                "partial",
                generator,
                "fake",
                i,
                edited,
                mask,
                mode="RGB",
                png=False,
                rng=rng,
                mask_mode="L" if i == 2 else "RGB",
            )
        )
    return rows


def _soft_edges(mask: np.ndarray) -> np.ndarray:
    """An anti-aliased mask whose channels differ slightly, as exported masks often are."""
    soft = cv2.GaussianBlur(mask, (0, 0), 1.5)
    return np.clip(soft * np.array([1.0, 0.96, 1.04]), 0, 255)


def _pair_size(i: int, size: int) -> tuple[int, int]:
    if i == 1:
        return size + 7, size - 5
    if i % 4 == 3:
        return size * 3 // 4, size
    return size, size


def _row(
    kind: str,
    generator: str,
    label_name: str,
    i: int,
    pixels: np.ndarray,
    mask: np.ndarray | None,
    mode: str,
    png: bool,
    rng: np.random.Generator,
    mask_mode: str = "RGB",
) -> tuple:
    image = Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB")
    if mode == "L":
        image = image.convert("L")
    elif mode == "RGBA":
        image = image.convert("RGBA")
        image.putalpha(Image.fromarray((rng.random(pixels.shape[:2]) * 55 + 200).astype(np.uint8), "L"))
    elif mode == "P":
        image = image.quantize(colors=64)
    image_bytes = _encode(image, "PNG" if png else "JPEG", quality=int(rng.integers(88, 97)))
    mask_bytes = None
    if mask is not None:
        mask_image = Image.fromarray(np.clip(mask + 0.5, 0, 255).astype(np.uint8), "RGB")
        mask_bytes = _encode(mask_image.convert(mask_mode), "PNG")
    key = f"{kind}/{generator}/{label_name}/{i:05d}.{'png' if png else 'jpg'}"
    return key, image_bytes, mask_bytes, int(label_name == "fake")


def _encode(image: Image.Image, kind: str, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    if kind == "JPEG":
        image.save(buffer, "JPEG", quality=quality)
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()


def _scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A noise-free natural-ish scene, float32 HxWx3 in about [0, 255]."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) / max(height, width)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = xx * np.cos(angle) + yy * np.sin(angle)
    ramp = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
    low, high = rng.uniform(40, 215, (2, 3)).astype(np.float32)
    image = low + (high - low) * ramp[:, :, None]
    for cells, amplitude in ((3, 28.0), (9, 14.0), (27, 7.0)):
        noise = rng.normal(0, 1, (cells, cells)).astype(np.float32)
        tint = (1 + 0.25 * rng.normal(0, 1, 3)).astype(np.float32)
        image += amplitude * cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)[:, :, None] * tint
    for _ in range(int(rng.integers(3, 7))):
        layer = np.zeros((height, width), np.uint8)
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        radius = int(rng.integers(max(3, height // 12), max(4, height // 4)))
        if rng.random() < 0.5:
            cv2.circle(layer, (cx, cy), radius, 255, -1)
        else:
            points = rng.normal((cx, cy), radius, (int(rng.integers(3, 7)), 2)).astype(np.int32)
            cv2.fillPoly(layer, [cv2.convexHull(points)], 255)
        alpha = cv2.GaussianBlur(layer.astype(np.float32) / 255, (0, 0), 1.2) * rng.uniform(0.5, 0.9)
        color = rng.uniform(0, 255, 3).astype(np.float32)
        image = image * (1 - alpha[:, :, None]) + color * alpha[:, :, None]
    return image


def _photo(rng: np.random.Generator, scene: np.ndarray) -> np.ndarray:
    """The scene as a camera sees it: per-pixel sensor noise, slightly correlated across channels."""
    shared = rng.normal(0, REAL_NOISE * 0.8, (*scene.shape[:2], 1))
    own = rng.normal(0, REAL_NOISE * 0.6, scene.shape)
    return scene + (shared + own).astype(np.float32)


def _generated(rng: np.random.Generator, scene: np.ndarray, trace: Trace) -> np.ndarray:
    """The scene as a generator makes it: upsampled from 1/d, the periodic trace, a cast, little noise."""
    height, width = scene.shape[:2]
    small = cv2.resize(
        scene, (max(1, width // trace.downscale), max(1, height // trace.downscale)), interpolation=cv2.INTER_AREA
    )
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = np.deg2rad(trace.angle)
    phase = rng.uniform(0, 2 * np.pi)
    pattern = trace.amplitude * np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / trace.period + phase)
    grid = trace.grid * np.sin(2 * np.pi * xx / GRID_PERIOD)
    image = image + (pattern + grid)[:, :, None] + np.asarray(trace.cast, np.float32)
    if trace.noise:
        image = image + rng.normal(0, trace.noise, image.shape).astype(np.float32)
    return image


def _region(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A 0/1 uint8 mask of one to three irregular shapes covering about 10-40% of the image."""
    for _ in range(20):
        target = rng.uniform(0.12, 0.36) * height * width
        count = int(rng.integers(1, 4))
        mask = np.zeros((height, width), np.uint8)
        for _ in range(count):
            area = target / count
            cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
            if rng.random() < 0.5:
                aspect = rng.uniform(0.5, 2.0)
                a = np.sqrt(area / np.pi * aspect)
                b = area / (np.pi * a)
                cv2.ellipse(
                    mask,
                    (int(cx), int(cy)),
                    (max(2, int(a)), max(2, int(b))),
                    float(rng.uniform(0, 180)),
                    0,
                    360,
                    1,
                    -1,
                )
            else:
                angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
                wobble = 1 + sum(0.15 * np.sin(k * angles + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
                radius = np.sqrt(area / np.pi) * wobble
                points = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], 1)
                cv2.fillPoly(mask, [points.astype(np.int32)], 1)
        coverage = mask.mean()
        if 0.10 <= coverage <= 0.40:
            return mask
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (width // 2, height // 2), (width // 3, height // 3), 0.0, 0, 360, 1, -1)
    return mask
