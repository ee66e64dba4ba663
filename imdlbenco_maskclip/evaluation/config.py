"""``TestConfig``: the settings of one ``benco test`` run, typed, one field per option.

The option table (``cli.test.OPTIONS``) says how each setting is spelled, parsed and
defaulted; this class is what the test run reads once they are resolved. ``cli.options.typed``
builds it and refuses a table and a class whose names differ.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TestConfig:
    """Resolved ``benco test`` settings (defaults < ``--config`` < flags); see the option table
    for what each means."""

    __test__ = False  # not a pytest test class

    checkpoint: str
    model: str | None
    test_data_path: list[str]
    generators: list[str] | None
    image_size: int | None
    if_padding: bool | None
    test_batch_size: int
    amp: str
    compare_paper: bool
    audit: str | None
    perturb: list[str] | None
    perturb_seed: int
    bootstrap: int
    bootstrap_seed: int
    device: str
    num_workers: int
    output_dir: str | None
