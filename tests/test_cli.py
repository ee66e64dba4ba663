"""The command line: Benco's own commands still work, and mistakes give clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from imdlbenco_maskclip import cli

ROOT = Path(__file__).resolve().parent.parent


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_benco_init_is_benco_own(tmp_path, monkeypatch):
    from IMDLBenCo import cli as benco_cli

    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    monkeypatch.chdir(ours)
    assert cli.main(["init"]) == 0
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
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 2
    assert "--epochs" in done.stderr and "Traceback" not in done.stderr


def test_both_flag_spellings(capsys, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model: NoSuchModel\n")
    code, _, err = run_cli(capsys, "train", "--config", str(config), "--data-path", str(tmp_path))
    assert code == 2 and "'NoSuchModel' is not a registered model" in err


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "benco_configs").glob("*.yaml")))
def test_shipped_configs_are_valid(name):
    from imdlbenco_maskclip import model_builder, run_config
    from imdlbenco_maskclip.commands import demo, test, train

    path = run_config.resolve_config_path(name)
    keys = set(run_config.read_config_file(path))
    for options in (train.OPTIONS, test.OPTIONS, demo.OPTIONS):
        if keys <= {o.name for o in options} | {"model_args"}:
            config = run_config.resolve(options, __import__("argparse").Namespace(), name)
            if config.values.get("model"):
                model_builder.parse_model_args(config.values["model"], config.model_args, [], 512)
            return
    pytest.fail(f"{path} fits no command's options")


def test_train_config_has_a_typed_field_for_each_option():
    """An option added to ``benco train``'s table without a field in ``TrainConfig`` (or the
    reverse) fails here, and ``run_config.typed`` refuses to build from such a table."""
    import typing
    from dataclasses import fields

    from imdlbenco_maskclip import run_config
    from imdlbenco_maskclip.commands import train
    from imdlbenco_maskclip.train_config import TrainConfig

    assert [f.name for f in fields(TrainConfig)] == [o.name for o in train.OPTIONS]
    hints = typing.get_type_hints(TrainConfig)
    for option in train.OPTIONS:
        if option.default is not None:
            allowed = typing.get_args(hints[option.name]) or (hints[option.name],)
            assert isinstance(option.default, tuple(typing.get_origin(t) or t for t in allowed)), option.name
    extra = run_config.Option("new_option", int, 1, "an option without a field")
    with pytest.raises(TypeError, match=r"options without a field: \['new_option'\]"):
        run_config.typed(TrainConfig, [*train.OPTIONS, extra], {})


def test_train_config_takes_defaults_then_config_file_then_flags(tmp_path):
    import argparse

    from imdlbenco_maskclip import run_config
    from imdlbenco_maskclip.commands import train
    from imdlbenco_maskclip.train_config import TrainConfig

    config_file = tmp_path / "run.yaml"
    config_file.write_text("model: MaskCLIP\nepochs: 3\nlr: 0.001\ngenerators: sd15\n")
    parser = argparse.ArgumentParser()
    train.configure(parser)
    flags = parser.parse_args(["--epochs", "5", "--if_padding"])
    config = run_config.typed(TrainConfig, train.OPTIONS, run_config.resolve(train.OPTIONS, flags, str(config_file)).values)
    assert (config.model, config.epochs, config.lr, config.generators) == ("MaskCLIP", 5, 0.001, ["sd15"])
    assert (config.if_padding, config.seed, config.amp, config.data_path) == (True, 42, "auto", None)
