"""``TrainConfig``: the settings of one training run, typed, one field per ``benco train`` option.

The option table (``cli.train.OPTIONS``) says how each setting is spelled, parsed and
defaulted; this class is what training reads once they are resolved. ``cli.options.typed``
builds it and refuses a table and a class whose names differ, so an option added to the
table without a field here (or the reverse) fails at once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    """Resolved ``benco train`` settings (defaults < ``--config`` < flags); see the option table
    for what each means."""

    model: str
    data_path: str
    generators: list[str] | None
    test_data_path: str | None
    test_generators: list[str] | None
    select_on: str
    val_fraction: float
    image_size: int
    if_padding: bool
    edge_mask_width: int | None
    augment: str
    shuffle: str
    batch_size: int
    test_batch_size: int
    epochs: int
    lr: float
    min_lr: float
    warmup_epochs: float
    weight_decay: float
    accum_iter: int
    global_batch_size: int | None
    test_period: int
    save_period: int
    log_per_epoch_count: int
    amp: str
    if_predict_label: bool
    find_unused_parameters: bool
    device: str
    seed: int
    deterministic: bool
    verbose: bool
    resume: str
    num_workers: int
    output_dir: str
    log_dir: str | None
