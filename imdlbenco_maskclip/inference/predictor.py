"""``Predictor``: a trained model as a function from a photo to a mask and a fake probability.

Photos go through Benco's own test-time transform (resize, or zero-pad, to the run's size, with
ImageNet normalization), so a checkpoint sees what it saw in ``benco test``. With padding, a photo
larger than the model's size is first shrunk, keeping its aspect ratio, until it fits (Benco's
padding would crop it to the top-left corner); the mask is cut from the padded canvas and
resized back. Masks always come back at the photo's displayed size (EXIF orientation applied).
A pixel counts as edited above the predictor's ``threshold``: by default the one its checkpoint
chose on held-out validation (``val_threshold``), else 0.5.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from imdlbenco_maskclip.checkpoints.layout import DEFAULT_IMAGE_SIZE
from imdlbenco_maskclip.common import pictures
from imdlbenco_maskclip.common.precision import INFERENCE, autocast_dtype, precision_name
from imdlbenco_maskclip.inference.forward import forward, image_batch
from imdlbenco_maskclip.inference.photos import PhotoLike, UnreadableImage, as_photo

DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class NamedImage:
    """An image with a name of its own: the file at ``source``, or what ``load`` returns (a shard row)."""

    name: str
    source: str
    load: Callable[[], Image.Image] | None = None


ImageInput = Union[PhotoLike, NamedImage]


@dataclass(frozen=True)
class Prediction:
    """What the model says about one image.

    ``mask`` is float32 HxW in [0, 1] at the image's displayed size (None for a model without a
    mask output); ``fake_probability`` is None for a model without a detection head. When
    ``error`` is set (``predict_many(..., skip_unreadable=True)``), the image could not be read
    and ``image``, ``mask`` and ``fake_probability`` are None. ``threshold``: the predictor's,
    above which a pixel counts as edited.
    """

    name: str
    image: Image.Image | None
    mask: np.ndarray | None
    fake_probability: float | None
    error: str | None = None
    threshold: float = DEFAULT_THRESHOLD

    def overlay(self, threshold: float | None = None, alpha: float = 0.5) -> Image.Image:
        """The image with the pixels whose probability is above ``threshold`` (default: the
        prediction's) tinted red."""
        if self.image is None or self.mask is None:
            raise ValueError(f"{self.name}: no mask to draw ({self.error or 'the model predicts no mask'})")
        return pictures.overlay(self.image, self.mask, self.threshold if threshold is None else threshold, alpha)

    @property
    def manipulated_fraction(self) -> float | None:
        """The share of the image's pixels above the threshold (None without a mask)."""
        return None if self.mask is None else float((self.mask > self.threshold).mean())

    def mask_image(self) -> Image.Image:
        """The mask as an 8-bit grayscale image (white = manipulated)."""
        if self.mask is None:
            raise ValueError(f"{self.name}: no mask ({self.error or 'the model predicts no mask'})")
        return pictures.probability_png(self.mask)


def _name_of(item: ImageInput, index: int) -> str:
    if isinstance(item, NamedImage):
        return item.name
    if isinstance(item, (str, Path)):
        return Path(item).name
    return Path(getattr(item, "filename", "") or f"image{index}").name


def fit_inside(size: tuple[int, int], side: int) -> tuple[int, int]:
    """(width, height) shrunk, keeping the aspect ratio, so that both fit in ``side``; unchanged if they do."""
    width, height = size
    scale = min(1.0, side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


class _Sample(NamedTuple):
    """One read image: the model's input, the RGB image, the (h, w) its content fills on the
    model's canvas; or only ``error``, the reason it could not be read."""

    tensor: torch.Tensor | None
    image: Image.Image | None
    content: tuple[int, int]
    error: str | None


class _Images(Dataset):
    def __init__(self, items: Sequence[ImageInput], image_size: int, padding: bool, max_pixels: int | None) -> None:
        from IMDLBenCo.transforms import get_albu_transforms

        self.items, self.image_size, self.padding, self.max_pixels = items, image_size, padding, max_pixels
        self.transform = get_albu_transforms("pad" if padding else "resize", output_size=(image_size, image_size))

    def __len__(self) -> int:
        return len(self.items)

    def read(self, item: ImageInput) -> Image.Image:
        if isinstance(item, NamedImage) and item.load is None:
            return as_photo(Path(item.source), self.max_pixels)
        if isinstance(item, NamedImage):
            try:
                return as_photo(item.load(), self.max_pixels)
            except UnreadableImage:
                raise
            except Exception as error:
                raise UnreadableImage(str(error)) from None
        return as_photo(item, self.max_pixels)

    def __getitem__(self, index: int) -> _Sample:
        try:
            image = self.read(self.items[index])
        except UnreadableImage as error:
            return _Sample(None, None, (0, 0), str(error))
        shown = image
        if self.padding and max(image.size) > self.image_size:
            shown = image.resize(fit_inside(image.size, self.image_size), Image.BILINEAR)
        tensor = self.transform(image=np.asarray(shown))["image"]
        return _Sample(tensor, image, (shown.height, shown.width), None)


def _collate(batch: list[_Sample]) -> list[_Sample]:
    return batch


class Predictor:
    """A model in eval mode with the image size and resizing it was trained with::

    predictor = Predictor.from_checkpoint("output_dir/checkpoint-best.pth")
    result = predictor.predict("photo.jpg")
    result.fake_probability, result.mask.shape, result.overlay()
    """

    def __init__(
        self,
        model: torch.nn.Module,
        image_size: int = DEFAULT_IMAGE_SIZE,
        padding: bool = False,
        device: str | torch.device = "cpu",
        amp: str | None = None,
        max_pixels: int | None = None,
        source: Mapping[str, Any] | None = None,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        from imdlbenco_maskclip.host.runtime import resolve_device

        self.device = resolve_device(device) if isinstance(device, str) else device
        self.model = model.to(self.device).eval()
        self.image_size = int(image_size)
        self.padding = bool(padding)
        self.autocast = autocast_dtype(amp, self.device, INFERENCE)
        self.max_pixels = max_pixels
        self.source = dict(source or {})
        """Where the weights came from, recorded beside predictions: ``checkpoint`` (the path or
        reference given) and, for a hub checkpoint, ``reference``, ``revision`` (the commit) and
        ``sha256``."""
        self.threshold = float(threshold)
        """The probability above which a pixel counts as edited (overlays, manipulated fraction)."""

    @property
    def precision(self) -> str:
        """``float32``, ``bfloat16`` or ``float16``: what the model computes in."""
        return precision_name(self.autocast)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "auto",
        image_size: int | None = None,
        amp: str | None = None,
        *,
        padding: bool | None = None,
        max_pixels: int | None = None,
        model_name: str | None = None,
        threshold: float | None = None,
        **model_options: Any,
    ) -> Predictor:
        """The model in any checkpoint ``load_model`` reads (a path or ``hf://`` reference).
        ``image_size`` and ``padding`` default to the training run's (its ``args.image_size``,
        ``if_padding``/``if_resizing``), else 512 and resizing;
        ``amp``: auto (``common.precision``: bf16/fp16 on a GPU, bf16 on a CPU that computes it
        natively, else off), off, bf16 or fp16; ``max_pixels``: larger images are refused
        (default: Pillow's ``MAX_IMAGE_PIXELS``); ``threshold``: default the checkpoint's
        ``val_threshold`` (chosen on held-out validation), else 0.5."""
        from imdlbenco_maskclip.checkpoints.loading import build_from_checkpoint, read_checkpoint
        from imdlbenco_maskclip.host.runtime import resolve_device

        stored = read_checkpoint(path)
        size, pad = stored.saved.input_handling(image_size, padding)
        target = resolve_device(device) if isinstance(device, str) else device
        model = build_from_checkpoint(stored, model_name, **model_options).to(target)
        if threshold is None:
            threshold = stored.saved.val_threshold if stored.saved.val_threshold is not None else DEFAULT_THRESHOLD
        return cls(model, size, pad, target, amp, max_pixels, source=stored.source, threshold=threshold)

    def predict(self, image: ImageInput) -> Prediction:
        """One image: a path, a PIL image or a HxWx3 uint8 array. Raises ``UnreadableImage``
        (a ValueError) with the reason when it cannot be read."""
        return next(self.predict_many([image], batch_size=1))

    def predict_many(
        self, images: Sequence[ImageInput], batch_size: int = 8, num_workers: int = 0, skip_unreadable: bool = False
    ) -> Iterator[Prediction]:
        """Predictions for ``images`` in order, read and batched by a DataLoader. An image that
        cannot be read raises ``UnreadableImage``, or with ``skip_unreadable`` yields a
        ``Prediction`` whose ``error`` says why."""
        items = list(images)
        loader = DataLoader(
            _Images(items, self.image_size, self.padding, self.max_pixels),
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=_collate,
        )
        index = 0
        for batch in loader:
            names = [_name_of(items[index + j], index + j) for j in range(len(batch))]
            readable = [j for j, sample in enumerate(batch) if sample.error is None]
            outputs = dict(zip(readable, self._run([batch[j] for j in readable], [names[j] for j in readable])))
            for j, sample in enumerate(batch):
                if sample.error is None:
                    yield Prediction(names[j], sample.image, *outputs[j], threshold=self.threshold)
                elif skip_unreadable:
                    yield Prediction(names[j], None, None, None, sample.error, self.threshold)
                else:
                    raise UnreadableImage(f"{names[j]}: {sample.error}")
            index += len(batch)

    def _run(self, samples: list[_Sample], names: list[str]) -> list[tuple[np.ndarray | None, float | None]]:
        """(mask at the image's size, fake probability) for each readable sample of a batch."""
        if not samples:
            return []
        images = torch.stack([s.tensor for s in samples]).to(self.device)
        content = [s.content for s in samples]
        autocast = (
            contextlib.nullcontext() if self.autocast is None else torch.autocast(self.device.type, self.autocast)
        )
        with autocast:
            output = forward(self.model, image_batch(images, content, names, self.padding))
        masks, labels = output.get("pred_mask"), output.get("pred_label")
        results = []
        for j, (_, image, (height, width), _) in enumerate(samples):
            probability = None if labels is None else float(labels.flatten()[j].float())
            mask = None
            if masks is not None:
                canvas = masks[j : j + 1].float()
                if self.padding:
                    canvas = canvas[..., :height, :width]
                if canvas.shape[-2:] != (image.height, image.width):
                    canvas = F.interpolate(
                        canvas, size=(image.height, image.width), mode="bilinear", align_corners=False
                    )
                mask = canvas[0, 0].clamp(0, 1).cpu().numpy()  # float32 already: no copy
            results.append((mask, probability))
        return results
