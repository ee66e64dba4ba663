"""Run settings: one declarative table per command, read from YAML and overridden by flags.

Precedence is defaults < ``--config`` file < command-line flags. A YAML key that no option
knows is an error naming the key and the file, so a typo never silently falls back to a
default. ``--config`` takes a path or the name of a config shipped in ``benco_configs/``.
``typed`` turns the resolved values into a command's dataclass (``training.config.TrainConfig``).
The options several commands share are defined once here, so each means the same everywhere.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

from dataset_adapters.vocabulary import KNOWN_GENERATORS
from imdlbenco_maskclip.common.errors import UserError

Settings = TypeVar("Settings")

PACKAGED_CONFIGS = Path(__file__).resolve().parents[1] / "benco_configs"
SOURCE_CONFIGS = Path(__file__).resolve().parents[2] / "benco_configs"


@dataclass(frozen=True)
class Option:
    """One setting: its flag ``--name``, YAML key ``name``, type and default."""

    name: str
    type: Callable[[str], Any] | None
    default: Any
    help: str
    choices: Sequence[str] | None = None
    many: bool = False
    flag: bool = False
    metavar: str | None = None

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """Add ``--name``; its parsed default is None so that given flags can be told apart."""
        help_text = f"{self.help} (default: {self.default})"
        spellings = dict.fromkeys([f"--{self.name}", f"--{self.name.replace('_', '-')}"])
        if self.flag:
            parser.add_argument(
                *spellings, dest=self.name, action="store_const", const=True, default=None, help=help_text
            )
        else:
            parser.add_argument(
                *spellings,
                dest=self.name,
                type=self.type,
                nargs="+" if self.many else None,
                choices=self.choices,
                default=None,
                metavar=self.metavar,
                help=help_text,
            )

    def check(self, value: Any, source: str) -> Any:
        """Validate a value that came from YAML; errors name the key and the file."""
        if value is None:
            return None
        if self.many:
            values = value if isinstance(value, list) else [value]
            return [self._check_one(v, source) for v in values]
        return self._check_one(value, source)

    def _check_one(self, value: Any, source: str) -> Any:
        if self.flag:
            if not isinstance(value, bool):
                raise UserError(f"{source}: key '{self.name}' must be true or false, got {value!r}")
            return value
        if value is False and self.choices is not None and "off" in self.choices:
            value = "off"  # YAML 1.1 reads a bare `off` as false
        try:
            converted = self.type(value) if self.type is not None else value
        except (TypeError, ValueError) as error:
            raise UserError(f"{source}: key '{self.name}' has a bad value {value!r}: {error}") from None
        if self.choices is not None and converted not in self.choices:
            raise UserError(f"{source}: key '{self.name}' must be one of {', '.join(self.choices)}, got {value!r}")
        return converted


@dataclass
class RunConfig:
    """Resolved settings plus the model's own options, which Benco's argparser parses."""

    values: dict[str, Any]
    model_args: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)


def resolve_config_path(name_or_path: str) -> Path:
    """A file path, or the stem of a config in the shipped ``benco_configs``."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    for folder in (SOURCE_CONFIGS, PACKAGED_CONFIGS):
        for candidate in (folder / name_or_path, folder / f"{name_or_path}.yaml"):
            if candidate.is_file():
                return candidate
    known = sorted(
        p.stem for folder in (SOURCE_CONFIGS, PACKAGED_CONFIGS) if folder.is_dir() for p in folder.glob("*.yaml")
    )
    raise UserError(
        f"--config: no file '{name_or_path}' and no shipped config of that name"
        + (f" (shipped: {', '.join(dict.fromkeys(known))})" if known else "")
    )


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a run config must be a mapping of keys to values, got {type(data).__name__}")
    return data


def resolve(options: Sequence[Option], flags: argparse.Namespace, config_path: str | None) -> RunConfig:
    """Merge defaults, the YAML file (if any) and the flags the user gave."""
    by_name = {option.name: option for option in options}
    values = {option.name: option.default for option in options}
    sources = {name: "default" for name in values}
    model_args: dict[str, Any] = {}
    if config_path:
        path = resolve_config_path(config_path)
        for key, value in read_config_file(path).items():
            if key == "model_args":
                if not isinstance(value, dict):
                    raise UserError(f"{path}: key 'model_args' must be a mapping of model option to value")
                model_args.update(value)
            elif key in by_name:
                values[key] = by_name[key].check(value, str(path))
                sources[key] = str(path)
            else:
                raise UserError(f"{path}: unknown key '{key}' (known: {', '.join(sorted([*by_name, 'model_args']))})")
    for name in by_name:
        given = getattr(flags, name, None)
        if given is not None:
            values[name] = given
            sources[name] = "flag"
    return RunConfig(values=values, model_args=model_args, sources=sources)


def typed(cls: type[Settings], options: Sequence[Option], values: Mapping[str, Any]) -> Settings:
    """``values`` as the dataclass ``cls``, whose fields must be the options' names: a table
    and a class that disagree are a programming error, named here. An option that ``values``
    lacks (a command offering part of a table, as ``benco demo`` does) takes its default."""
    names, field_names = {option.name for option in options}, {f.name for f in fields(cls)}
    if names != field_names:
        raise TypeError(
            f"{cls.__name__} and its option table disagree: options without a field: {sorted(names - field_names)}; "
            f"fields without an option: {sorted(field_names - names)}"
        )
    return cls(**{option.name: values.get(option.name, option.default) for option in options})


def parse_size(text: str) -> int:
    """A positive image side in pixels."""
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive number of pixels")
    return value


def parse_rate(text: str) -> float:
    """A finite, non-negative number (learning rates, weight decay)."""
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a finite number >= 0")
    return value


def parse_count(text: str) -> int:
    """A count: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise ValueError("must be an integer >= 0")
    return value


def parse_seed(text: str) -> int:
    """A random seed: an integer >= 0 (numpy's seed sequences take no negative numbers)."""
    return parse_count(text)


GENERATORS_HELP = f"{' '.join(KNOWN_GENERATORS)}, or any other the shards hold"

MODEL = Option("model", str, None, "registered model name, e.g. MaskCLIP or IML_ViT", metavar="NAME")
IMAGE_SIZE = Option("image_size", parse_size, 512, "side the images are resized (or padded) to", metavar="PX")
PADDING = Option("if_padding", None, False, "zero-pad to --image_size instead of resizing", flag=True)
DEVICE = Option("device", str, "auto", "auto, cpu, cuda or cuda:N")
NUM_WORKERS = Option("num_workers", int, 4, "DataLoader worker processes", metavar="N")
OUTPUT_DIR = Option("output_dir", str, "./output_dir", "where results are written", metavar="DIR")
CHECKPOINT = Option(
    "checkpoint",
    str,
    None,
    "checkpoint of benco train, Benco's save_model or the published OpenSDI code, or a weight folder "
    "(benco weights export); a local path or hf://OWNER/REPO[@REV]/FILE, hf://OWNER/REPO[/FOLDER/]",
    metavar="CKPT",
)
CHECKPOINT_MODEL = Option("model", str, None, "model name; default: the one the checkpoint records", metavar="NAME")
CHECKPOINT_IMAGE_SIZE = replace(
    IMAGE_SIZE,
    default=None,
    help="side the images are resized (or padded) to; unset: the checkpoint's run's (args.image_size), else 512",
)
CHECKPOINT_PADDING = replace(
    PADDING,
    default=None,
    help="zero-pad to --image_size instead of resizing; unset: as the checkpoint's run did (args.if_padding)",
)


def configure(
    parser: argparse.ArgumentParser, options: list[Option], default_config: str | None = None, model_flags: bool = True
) -> None:
    """``--config``, one flag per option, and (with ``model_flags``) leftover flags kept for the
    model's own options."""
    parser.add_argument(
        "--config",
        default=default_config,
        metavar="YAML",
        help="run config: a path or the name of one in benco_configs/",
    )
    for option in options:
        option.add_to(parser)
    model_help = (
        "Model options (e.g. --setting tiny for MaskCLIP) follow the command's own flags; "
        "'benco train --model NAME --model-help' lists them."
        if model_flags
        else "Model options come from the checkpoint, or from 'model_args:' in --config."
    )
    parser.epilog = f"{model_help} Precedence: defaults < --config < flags."
    parser.set_defaults(accepts_model_flags=model_flags)


def require(values: dict, *names: str) -> None:
    """Settings without a default that the command cannot run without."""
    for name in names:
        if not values[name]:
            raise UserError(f"--{name} is required (on the command line or as '{name}:' in --config)")
