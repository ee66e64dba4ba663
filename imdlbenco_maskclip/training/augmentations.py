"""Training augmentations by name, as albumentations pipelines that Benco datasets accept."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import albumentations as albu

AUGMENTATIONS = ("paper", "flips", "none")


def train_transforms(name: str) -> albu.Compose | None:
    """``paper``: the OpenSDI recipe (scale +-0.2, flips, brightness/contrast 0.1, JPEG 70-100
    p 0.2, rot90 p 0.5, Gaussian blur 3-7 p 0.2); ``flips``: flips and rot90 only, for small
    synthetic runs where resampling would blur the traces; ``none``: no augmentation."""
    import albumentations as albu

    if name == "none":
        return None
    geometric = [albu.HorizontalFlip(p=0.5), albu.VerticalFlip(p=0.5), albu.RandomRotate90(p=0.5)]
    if name == "flips":
        return albu.Compose(geometric)
    if name == "paper":
        return albu.Compose(
            [
                albu.RandomScale(scale_limit=0.2, p=1),
                *geometric[:2],
                albu.RandomBrightnessContrast(brightness_limit=(-0.1, 0.1), contrast_limit=0.1, p=1),
                albu.ImageCompression(quality_lower=70, quality_upper=100, p=0.2),
                geometric[2],
                albu.GaussianBlur(blur_limit=(3, 7), p=0.2),
            ]
        )
    raise ValueError(f"unknown augmentation '{name}' (choose from {', '.join(AUGMENTATIONS)})")
