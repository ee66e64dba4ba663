"""``benco opensdi info`` and ``benco opensdi export`` through the command module and argparse."""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from dataset_adapters import OpenSDIError, write_opensdi_shard
from dataset_adapters.info import opensdi_info

COMMAND = Path(__file__).resolve().parents[2] / "imdlbenco_maskclip" / "cli" / "opensdi.py"


def _load_command():
    """The command module by its file, so these tests do not need the model package to import."""
    spec = importlib.util.spec_from_file_location("opensdi_command", COMMAND)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


opensdi = _load_command()


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benco opensdi")
    opensdi.configure(parser)
    return parser.parse_args(argv)


def test_info_counts_rows_and_sizes(opensdi_root, capsys):
    assert opensdi.run(_parse(["info", str(opensdi_root), "--size-rows", "0"])) == 0
    out = capsys.readouterr().out
    assert "10 shard(s), 100 rows" in out
    lines = {tuple(line.split()[:2]): line.split()[2:] for line in out.splitlines()}
    for generator in ("sd15", "sd2", "sdxl", "sd3", "flux"):
        assert lines[(generator, "entire")] == ["5", "5", "0"]
        assert lines[(generator, "partial")] == ["5", "5", "5"]
    assert lines[("total", "50")] == ["50", "25"]
    assert "image sizes from 100 of 100 rows: width 59-64, height 48-71, most common 64x64" in out


def test_info_samples_row_groups_and_counts_other_keys(tmp_path):
    picture = io.BytesIO()
    Image.new("RGB", (30, 20)).save(picture, "JPEG")
    rows = [
        (f"sd15/{i}.jpg" if i % 4 == 0 else f"partial/sd15/real/{i}.jpg", picture.getvalue(), None, 0)
        for i in range(40)
    ]
    write_opensdi_shard(tmp_path / "sd15-00000-of-00001.parquet", rows, rows_per_group=8)
    info = opensdi_info(tmp_path, size_rows=10)
    assert info.counts == {("sd15", "partial", "real"): 30, ("sd15", "other", "real"): 10}
    assert info.size_rows_read == 16  # two whole row groups of 8 cover the 10 rows asked for
    assert dict(info.sizes) == {(30, 20): 16}
    assert "other" in info.format()


def test_info_filters_generators(opensdi_root):
    info = opensdi_info(opensdi_root, generators=["flux"], size_rows=1)
    assert info.rows == 20 and {g for g, _, _ in info.counts} == {"flux"}
    assert 0 < info.size_rows_read <= 5


def test_export_command_writes_json(opensdi_root, tmp_path, capsys):
    args = _parse(
        [
            "export",
            str(opensdi_root),
            str(tmp_path / "out"),
            "--format",
            "json",
            "--generators",
            "sd2",
            "sd3",
            "--subset",
            "localization",
        ]
    )
    assert opensdi.run(args) == 0
    listing = tmp_path / "out" / "opensdi.json"
    assert str(listing) in capsys.readouterr().out
    records = json.loads(listing.read_text())
    assert len(records) == 10 and all(gt != "Negative" for _, gt in records)


def test_export_command_takes_several_sources(opensdi_root, tmp_path):
    files = sorted(str(p) for p in (opensdi_root / "data").glob("sd15-*.parquet"))
    assert opensdi.run(_parse(["export", *files, str(tmp_path / "out")])) == 0
    assert len(list((tmp_path / "out" / "Tp").iterdir())) == 20 == len(list((tmp_path / "out" / "Gt").iterdir()))


def test_command_errors_are_opensdi_errors(opensdi_root, tmp_path):
    with pytest.raises(OpenSDIError, match="unknown generator"):
        opensdi.run(_parse(["info", str(opensdi_root), "--generators", "dalle"]))
    with pytest.raises(SystemExit):
        _parse(["export", str(opensdi_root), str(tmp_path), "--format", "tiff"])
    with pytest.raises(SystemExit):
        _parse([])


def test_configure_imports_nothing_heavy():
    import subprocess
    import sys

    code = (
        "import argparse, sys\n"
        "import importlib.util\n"
        "spec = importlib.util.spec_from_file_location('m', sys.argv[1])\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "m.configure(argparse.ArgumentParser())\n"
        "print(sorted(n for n in ('torch', 'pyarrow', 'IMDLBenCo', 'datasets') if n in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(COMMAND)], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
