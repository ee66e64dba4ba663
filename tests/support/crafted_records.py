"""Protocol results from crafted per-image records: enough images for smooth bootstrap
distributions, no model and no data files."""

from __future__ import annotations

import numpy as np

from imdlbenco_maskclip.evaluation import protocol


def crafted_result(splits: dict[str, int], seed: int) -> protocol.ProtocolResult:
    """Records of ``n`` real and ``n`` fake images per split (half of each partial), with a fake
    probability that leans the right way and per-image pixel figures, scored by the protocol."""
    rng = np.random.default_rng(seed)
    records = []
    for split, n in splits.items():
        for i in range(2 * n):
            label, kind = i % 2, "partial" if i % 4 < 2 else "entire"
            pixel = {m.name: float(rng.beta(2 + 2 * label, 3)) for m in protocol.pixel_metrics()} if label else {}
            records.append(
                protocol.ImageRecord(
                    split,
                    i,
                    f"{kind}/{split}/{'fake' if label else 'real'}/{i:05d}.png",
                    label,
                    bool(label),
                    False,
                    float(np.clip(rng.normal(0.35 + 0.3 * label, 0.2), 0, 1)),
                    pixel,
                    pred_area=float(rng.beta(1, 6 - 3 * label)),
                )
            )
    records = [r for split in splits for r in protocol.mark_partial_fakes([r for r in records if r.split == split])]
    rows = [protocol.score_split(split, [r for r in records if r.split == split]) for split in splits]
    return protocol.ProtocolResult(rows, protocol.mean_row(rows), records)


def lifted(splits: dict[str, int], seed: int, by: float) -> protocol.ProtocolResult:
    """``crafted_result(splits, seed)`` with every fake's pixel F1 raised by ``by``: the same
    images as another model would score them."""
    records = crafted_result(splits, seed).records
    for record in records:
        if "pixel_f1" in record.pixel:
            record.pixel["pixel_f1"] += by
    rows = [protocol.score_split(split, [r for r in records if r.split == split]) for split in splits]
    return protocol.ProtocolResult(rows, protocol.mean_row(rows), records)
