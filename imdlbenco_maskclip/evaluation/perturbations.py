"""Image perturbations for the robustness protocol (``benco test --perturb``).

A spec is ``KIND:VALUE[,VALUE...]``; each value is one level, scored on the same test images as
the clean run. A level acts on the RGB uint8 image as decoded, at its full resolution, before
the model's resize or padding; the mask is never touched, and shape and dtype are kept:

- ``jpeg:Q``: re-encode with PIL at JPEG quality Q (integer 1-100, PIL's default 4:2:0 chroma
  subsampling) and decode again.
- ``blur:K``: Gaussian blur with a KxK kernel (K odd, >= 3), sigma from OpenCV's rule for
  sigma 0, ``0.3 * ((K - 1) / 2 - 1) + 0.8`` (K=3: 0.8, K=7: 1.4), borders reflected (OpenCV's
  default).
- ``noise:S``: add Gaussian noise of standard deviation S (> 0) on the 0-255 scale, round, clip
  to 0-255.
- ``resize:F``: downscale by the factor F (0 < F < 1, OpenCV's area interpolation, each side at
  least 1 pixel) and back up to the original size (bilinear), so the mask stays aligned.

Deterministic: jpeg, blur and resize are functions of the pixels; the noise is drawn from a
generator seeded with ``--perturb_seed`` and a BLAKE2b hash of the image's shape and pixels, so
an image gets the same noise in every run, process, worker and rank, whatever the order in
which it is read. Adding a kind is one entry in ``KINDS``.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from imdlbenco_maskclip.common.errors import UserError

FLAG = "--perturb"


def _jpeg(image: np.ndarray, quality: float, rng: np.random.Generator | None) -> np.ndarray:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(buffer))


def _blur(image: np.ndarray, kernel: float, rng: np.random.Generator | None) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(image, (int(kernel), int(kernel)), 0)


def _noise(image: np.ndarray, std: float, rng: np.random.Generator | None) -> np.ndarray:
    assert rng is not None, "noise is a seeded kind"
    noisy = image.astype(np.float32) + rng.normal(0.0, std, image.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _resize(image: np.ndarray, factor: float, rng: np.random.Generator | None) -> np.ndarray:
    import cv2

    height, width = image.shape[:2]
    small = (max(1, round(width * factor)), max(1, round(height * factor)))
    shrunk = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
    return cv2.resize(shrunk, (width, height), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class Kind:
    """One kind of perturbation: its values (``convert`` from text, valid where ``valid`` holds,
    ``requirement`` saying which are) and what it does to an image; ``seeded`` kinds get a
    random generator, the others ``None``. ``axis`` names the value on a plot, whose axis runs
    from mild to strong (``milder_when_higher``: JPEG quality and resize factor)."""

    name: str
    convert: Callable[[str], float]
    valid: Callable[[float], bool]
    requirement: str
    function: Callable[[np.ndarray, float, np.random.Generator | None], np.ndarray]
    axis: str
    seeded: bool = False
    milder_when_higher: bool = False

    def parse(self, text: str) -> float:
        """The value written ``text``; ``ValueError`` (the requirement) when it is not valid."""
        try:
            value = self.convert(text)
        except ValueError:
            raise ValueError(self.requirement) from None
        if not self.valid(value):
            raise ValueError(self.requirement)
        return value


KINDS = {
    kind.name: kind
    for kind in (
        Kind(
            "jpeg",
            int,
            lambda q: 1 <= q <= 100,
            "JPEG quality must be an integer from 1 to 100",
            _jpeg,
            "JPEG quality",
            milder_when_higher=True,
        ),
        Kind(
            "blur",
            int,
            lambda k: k >= 3 and k % 2 == 1,
            "the blur kernel size must be an odd integer >= 3",
            _blur,
            "Gaussian kernel size (px)",
        ),
        Kind(
            "noise",
            float,
            lambda s: 0 < s < float("inf"),
            "the noise std must be a number > 0 (0-255 scale)",
            _noise,
            "noise std (0-255)",
            seeded=True,
        ),
        Kind(
            "resize",
            float,
            lambda f: 0 < f < 1,
            "the resize factor must be a number between 0 and 1",
            _resize,
            "down-and-up scale factor",
            milder_when_higher=True,
        ),
    )
}


def pixel_digest(image: np.ndarray) -> int:
    """A 64-bit BLAKE2b hash of an image's shape and pixels: a per-image seed that needs neither
    its index nor its name."""
    digest = hashlib.blake2b(str(image.shape).encode("ascii"), digest_size=8)
    digest.update(np.ascontiguousarray(image).tobytes())
    return int.from_bytes(digest.digest(), "big")


@dataclass(frozen=True)
class Perturbation:
    """One level, e.g. ``Perturbation("jpeg", 50)``; ``key`` is how it is named in the results."""

    kind: str
    value: float

    @property
    def key(self) -> str:
        """``kind:value``, a whole number without a decimal point (``noise:5``, ``resize:0.5``)."""
        value = float(self.value)
        return f"{self.kind}:{int(value) if value.is_integer() else value!r}"

    def apply(self, image: np.ndarray, seed: int = 0) -> np.ndarray:
        """The perturbed copy of an HxWxC (or HxW) uint8 image; ``seed`` (>= 0) varies the noise."""
        if image.dtype != np.uint8:
            raise ValueError(f"{self.key} perturbs uint8 images, got {image.dtype}")
        kind = KINDS[self.kind]
        rng = np.random.default_rng([seed, pixel_digest(image)]) if kind.seeded else None
        return kind.function(image, self.value, rng)


def parse_specs(specs: Sequence[str]) -> list[Perturbation]:
    """The levels of ``--perturb`` tokens such as ``jpeg:50,70 blur:3``, in the order given;
    a ``UserError`` names the flag and the bad token."""
    levels: dict[str, Perturbation] = {}
    for token in specs:
        name, sep, values = token.partition(":")
        if not sep or not name or not values:
            raise UserError(f"{FLAG}: '{token}' is not KIND:VALUE[,VALUE...] (e.g. jpeg:50,70)")
        kind = KINDS.get(name.strip().lower())
        if kind is None:
            raise UserError(f"{FLAG}: unknown kind '{name}' ({', '.join(KINDS)})")
        for text in values.split(","):
            try:
                level = Perturbation(kind.name, kind.parse(text.strip()))
            except ValueError as problem:
                raise UserError(f"{FLAG}: bad value '{text}' in '{token}': {problem}") from None
            if level.key in levels:
                raise UserError(f"{FLAG}: {level.key} is given twice")
            levels[level.key] = level
    return list(levels.values())


class PerturbImage:
    """A dataset transform (Benco's ``common_transforms`` protocol: called with ``image=`` and
    ``mask=``, returns both) that perturbs the image and returns the mask object untouched. A
    plain callable rather than an albumentations transform, so that no probability draw or
    version-specific argument comes between a level and its pixels."""

    def __init__(self, perturbation: Perturbation, seed: int = 0) -> None:
        self.perturbation = perturbation
        self.seed = seed

    def __call__(self, *, image: np.ndarray, **targets: Any) -> dict[str, Any]:
        return {**targets, "image": self.perturbation.apply(image, self.seed)}

    def __repr__(self) -> str:
        return f"PerturbImage({self.perturbation.key}, seed={self.seed})"
