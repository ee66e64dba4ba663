"""The command line: Benco's own commands still work, and mistakes give clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from imdlbenco_maskclip.cli import benco

ROOT = Path(__file__).resolve().parents[2]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = benco.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_benco_init_is_benco_own(tmp_path, monkeypatch):
    from IMDLBenCo import cli as benco_cli

    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    monkeypatch.chdir(ours)
    assert benco.main(["init"]) == 0
    monkeypatch.chdir(theirs)
    monkeypatch.setattr(sys, "argv", ["benco", "init"])
    benco_cli.main()
    listing = lambda root: sorted(str(p.relative_to(root)) for p in root.rglob("*"))  # noqa: E731
    assert listing(ours) == listing(theirs)
    assert any(name.endswith("train.py") for name in listing(ours))


def test_help_lists_benco_and_our_commands(capsys):
    code, out, _ = run_cli(capsys)
    assert code == 0
    for command in ("train", "test", "predict", "demo", "opensdi", "init", "env"):
        assert command in out


def test_unknown_model_names_close_matches(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--model", "MaskClip", "--data_path", str(tmp_path))
    assert code == 2
    assert "'MaskClip' is not a registered model" in err and "MaskCLIP" in err
    assert "Traceback" not in err


def test_unknown_config_key_names_key_and_file(capsys, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model: MaskCLIP\nepoch: 3\n")
    code, _, err = run_cli(capsys, "train", "--config", str(config))
    assert code == 2
    assert str(config) in err and "unknown key 'epoch'" in err


def test_bad_config_value_names_key(capsys, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model: MaskCLIP\nbatch_size: many\n")
    code, _, err = run_cli(capsys, "train", "--config", str(config))
    assert code == 2 and "'batch_size'" in err and "many" in err


def test_missing_config_lists_shipped_ones(capsys):
    code, _, err = run_cli(capsys, "train", "--config", "no_such_config")
    assert code == 2
    assert "no_such_config" in err and "maskclip_paper" in err


def test_unknown_model_option_names_it(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--model", "MaskCLIP", "--data_path", str(tmp_path), "--no_such_flag", "1")
    assert code == 2
    assert "--no_such_flag" in err and "--setting" in err


def test_missing_checkpoint_is_named(capsys, tmp_path):
    missing = tmp_path / "nope.pth"
    code, _, err = run_cli(capsys, "test", "--checkpoint", str(missing), "--test_data_path", str(tmp_path))
    assert code == 2 and str(missing) in err


def test_bad_flag_value_exits_without_traceback():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "imdlbenco_maskclip", "train", "--model", "MaskCLIP", "--epochs", "zero"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 2
    assert "--epochs" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["train", "test", "predict", "demo"])
def test_both_flag_spellings(command):
    """Every option of every command parses the same under ``--name_with_underscores`` and
    ``--name-with-hyphens``."""
    import importlib

    parser = benco.build_parser()
    table = importlib.import_module(f"imdlbenco_maskclip.cli.{command}").OPTIONS
    for option in table:
        unset = "0.3" if option.name == "threshold" else "3"  # a probability, or a count/size
        value = [] if option.flag else [str(option.default if option.default is not None else unset)]
        if option.choices:
            value = [option.choices[-1]]
        positional = ["photo.jpg"] if command == "predict" else []
        underscores, _ = parser.parse_known_args([command, f"--{option.name}", *value, *positional])
        hyphens, _ = parser.parse_known_args([command, f"--{option.name.replace('_', '-')}", *value, *positional])
        assert getattr(underscores, option.name) == getattr(hyphens, option.name) is not None, option.name


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "benco_configs").glob("*.yaml")))
def test_shipped_configs_are_valid(name):
    """Every shipped config fits one command's option table, each of its keys is read from the
    file (not left at a default) and survives the option's checks, and its ``model_args`` are
    options of its model."""
    import argparse

    from imdlbenco_maskclip.cli import demo, options, test, train
    from imdlbenco_maskclip.host import models

    path = options.resolve_config_path(name)
    data = options.read_config_file(path)
    keys = set(data) - {"model_args"}
    tables = [table for table in (train.OPTIONS, test.OPTIONS, demo.OPTIONS) if keys <= {o.name for o in table}]
    assert tables, f"{path} fits no command's options"
    config = options.resolve(tables[0], argparse.Namespace(), name)
    assert {key: config.sources[key] for key in keys} == {key: str(path) for key in keys}
    assert config.model_args == data.get("model_args", {})
    if config.values.get("model"):
        parsed = models.parse_model_args(config.values["model"], config.model_args, [], 512)
        assert {k: parsed[k] for k in config.model_args} == config.model_args


@pytest.mark.parametrize("command, config", [("train", "TrainConfig"), ("test", "TestConfig")])
def test_typed_config_has_a_field_for_each_option(command, config):
    """An option added to a command's table without a field in its typed config (or the
    reverse) fails here, and ``cli.options.typed`` refuses to build from such a table."""
    import importlib
    import typing
    from dataclasses import fields

    from imdlbenco_maskclip.cli import options

    table = importlib.import_module(f"imdlbenco_maskclip.cli.{command}").OPTIONS
    module = {"TrainConfig": "imdlbenco_maskclip.training.config", "TestConfig": "imdlbenco_maskclip.evaluation.config"}
    cls = getattr(importlib.import_module(module[config]), config)
    assert [f.name for f in fields(cls)] == [o.name for o in table]
    hints = typing.get_type_hints(cls)
    for option in table:
        if option.default is not None:
            allowed = typing.get_args(hints[option.name]) or (hints[option.name],)
            assert isinstance(option.default, tuple(typing.get_origin(t) or t for t in allowed)), option.name
    extra = options.Option("new_option", int, 1, "an option without a field")
    with pytest.raises(TypeError, match=r"options without a field: \['new_option'\]"):
        options.typed(cls, [*table, extra], {})


def test_train_config_takes_defaults_then_config_file_then_flags(tmp_path):
    import argparse

    from imdlbenco_maskclip.cli import options, train
    from imdlbenco_maskclip.training.config import TrainConfig

    config_file = tmp_path / "run.yaml"
    config_file.write_text("model: MaskCLIP\nepochs: 3\nlr: 0.001\ngenerators: sd15\n")
    parser = argparse.ArgumentParser()
    train.configure(parser)
    flags = parser.parse_args(["--epochs", "5", "--if_padding"])
    config = options.typed(TrainConfig, train.OPTIONS, options.resolve(train.OPTIONS, flags, str(config_file)).values)
    assert (config.model, config.epochs, config.lr, config.generators) == ("MaskCLIP", 5, 0.001, ["sd15"])
    assert (config.if_padding, config.seed, config.amp, config.data_path) == (True, 42, "auto", None)
