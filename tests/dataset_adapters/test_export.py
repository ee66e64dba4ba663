"""Export to Benco's Tp/Gt folders and JSON list: bytes unchanged, pairs sorted alike, resumable."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from IMDLBenCo.datasets import ManiDataset
from PIL import Image

import dataset_adapters.export as export_module
from dataset_adapters import OpenSDIError, export_opensdi, write_opensdi_shard
from dataset_adapters.export import file_stem


def _rows(root: Path) -> dict[str, dict]:
    rows = {}
    for shard in sorted((root / "data").glob("*.parquet")):
        for row in pq.read_table(shard).to_pylist():
            rows[row["key"]] = row
    return rows


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _listing(root: Path, target: str) -> list:
    return json.loads(Path(target).read_text().replace(str(root), "ROOT"))


def _stem(name: str) -> str:
    return os.path.basename(name).split(".")[0]


def test_mani_export_copies_bytes_and_pairs(opensdi_root, mani_export):
    rows = _rows(opensdi_root)
    tp = sorted(os.listdir(Path(mani_export) / "Tp"))
    gt = sorted(os.listdir(Path(mani_export) / "Gt"))
    assert len(tp) == len(gt) == len(rows) == 100
    assert [_stem(n) for n in tp] == [_stem(n) for n in gt]
    assert not (Path(mani_export) / ".partial").exists()
    by_stem = {file_stem(k): row for k, row in rows.items()}
    for tp_name, gt_name in zip(tp, gt):
        row = by_stem[_stem(tp_name)]
        assert (Path(mani_export) / "Tp" / tp_name).read_bytes() == row["image"]["bytes"]
        assert tp_name.endswith(os.path.splitext(row["key"])[1])
        gt_bytes = (Path(mani_export) / "Gt" / gt_name).read_bytes()
        if row["mask"] is not None and row["label"] == 1:
            assert gt_bytes == row["mask"]["bytes"]
        else:
            assert gt_name.endswith(".png")
            with Image.open(io.BytesIO(gt_bytes)) as mask, Image.open(io.BytesIO(row["image"]["bytes"])) as image:
                assert mask.size == image.size
                assert set(np.unique(np.array(mask.convert("RGB")))) == {255 if row["label"] else 0}


def test_json_export_lists_negatives_and_absolute_paths(opensdi_root, json_export):
    rows = _rows(opensdi_root)
    records = json.loads(Path(json_export).read_text())
    assert Path(json_export).name == "opensdi.json" and len(records) == len(rows)
    by_stem = {file_stem(k): r for k, r in rows.items()}
    for tp, gt in records:
        assert os.path.isabs(tp) and os.path.isfile(tp)
        row = by_stem[_stem(tp)]
        if row["label"] == 0:
            assert gt == "Negative"
        else:
            assert os.path.isabs(gt) and _stem(gt) == _stem(tp)
            if row["mask"] is not None:
                assert Path(gt).read_bytes() == row["mask"]["bytes"]
    gt_files = os.listdir(Path(json_export).parent / "Gt")
    assert len(gt_files) == sum(r["label"] for r in rows.values())


@pytest.mark.parametrize(
    "keys",
    [
        [
            "a.jpg",
            "a_1.jpg",
            "a-b.jpg",
            "a.b.jpg",
            "a.k.jpg",
            "a.m.tif",
            "a b.png",
            "x/a.jpg",
            "A.jpg",
            "a1.png",
            "ä.jpg",
            "a~b.jpg",
            "a=b.tif",
        ],
        ["p/q.jpg", "p.jpg", "p/q/r.png", "p_q.jpg", "pq"],
    ],
)
def test_tp_and_gt_names_sort_alike(tmp_path, keys):
    image = io.BytesIO()
    Image.new("RGB", (20, 18), (10, 200, 30)).save(image, "PNG")
    mask = io.BytesIO()
    Image.new("L", (20, 18), 255).save(mask, "JPEG")
    rows = [(key, image.getvalue(), mask.getvalue() if i % 3 == 0 else None, i % 2) for i, key in enumerate(keys)]
    write_opensdi_shard(tmp_path / "src" / "sd15-00000-of-00001.parquet", rows)
    target = export_opensdi(tmp_path / "src", tmp_path / "out")
    tp = sorted(os.listdir(Path(target) / "Tp"))
    gt = sorted(os.listdir(Path(target) / "Gt"))
    assert len(tp) == len(gt) == len(keys)
    assert [_stem(n) for n in tp] == [_stem(n) for n in gt]
    assert len({_stem(n) for n in tp}) == len(keys)
    assert all(set(_stem(n)) <= set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_~=") for n in tp)
    benco = ManiDataset(target, is_resizing=True, output_size=(16, 16))
    assert [_stem(p) for p in benco.tp_path] == [_stem(p) for p in benco.gt_path]


def test_keys_that_differ_only_in_extension_are_refused(tmp_path):
    image = io.BytesIO()
    Image.new("RGB", (8, 8)).save(image, "PNG")
    rows = [
        ("entire/sd15/real/5.jpg", image.getvalue(), None, 0),
        ("entire/sd15/real/5.png", image.getvalue(), None, 0),
    ]
    write_opensdi_shard(tmp_path / "src" / "sd15-00000-of-00001.parquet", rows)
    with pytest.raises(OpenSDIError, match="'entire/sd15/real/5.jpg' and 'entire/sd15/real/5.png' differ only"):
        export_opensdi(tmp_path / "src", tmp_path / "out")


def test_foreign_files_in_the_destination_are_refused(opensdi_root, tmp_path):
    (tmp_path / "out" / "Gt").mkdir(parents=True)
    (tmp_path / "out" / "Gt" / "holiday.png").write_bytes(b"x")
    with pytest.raises(
        OpenSDIError, match=r"Gt holds 1 file\(s\) that this export does not write \(e.g. holiday.png\)"
    ):
        export_opensdi(opensdi_root, tmp_path / "out", generators=["sd2"])


def test_json_destination_may_name_the_list(opensdi_root, tmp_path):
    target = export_opensdi(opensdi_root, tmp_path / "benco_data" / "sd3.json", format="json", generators=["sd3"])
    assert target == str(tmp_path / "benco_data" / "sd3.json")
    records = json.loads(Path(target).read_text())
    assert len(records) == 20 and all(tp.startswith(str(tmp_path / "benco_data" / "sd3" / "Tp")) for tp, _ in records)
    with pytest.raises(OpenSDIError, match="the mani format writes Tp/Gt folders"):
        export_opensdi(opensdi_root, tmp_path / "x.json", format="mani")


def test_filters_apply_to_export(opensdi_root, tmp_path):
    target = export_opensdi(opensdi_root, tmp_path / "loc", format="json", generators=["sdxl"], subset="localization")
    records = json.loads(Path(target).read_text())
    assert len(records) == 5
    assert all(_stem(tp).startswith("partial~sdxl~fake~") and gt != "Negative" for tp, gt in records)


@pytest.mark.parametrize("format", ["mani", "json"])
def test_interrupted_export_resumes_to_the_same_result(opensdi_root, tmp_path, monkeypatch, format):
    whole = export_opensdi(opensdi_root, tmp_path / "whole", format=format, generators=["sd15", "sd3"])

    real_write = export_module._write_atomic
    calls = {"n": 0}

    def dying_write(target, scratch, data):
        calls["n"] += 1
        if calls["n"] == 23:
            (scratch / target.name).write_bytes(data[: len(data) // 2])  # half a file, then the kill
            raise KeyboardInterrupt
        real_write(target, scratch, data)

    monkeypatch.setattr(export_module, "_write_atomic", dying_write)
    with pytest.raises(KeyboardInterrupt):
        export_opensdi(opensdi_root, tmp_path / "resumed", format=format, generators=["sd15", "sd3"])
    partial_tree = _tree(tmp_path / "resumed")
    whole_tree = _tree(tmp_path / "whole")
    assert 0 < len(partial_tree) < len(whole_tree) and "opensdi.json" not in partial_tree
    assert all(whole_tree[name] == data for name, data in partial_tree.items())  # only complete files in place
    (tmp_path / "resumed" / ".partial").mkdir()
    (tmp_path / "resumed" / ".partial" / "stale.jpg").write_bytes(b"half")  # what a hard kill leaves
    monkeypatch.setattr(export_module, "_write_atomic", real_write)

    resumed = export_opensdi(opensdi_root, tmp_path / "resumed", format=format, generators=["sd15", "sd3"])
    resumed_tree = _tree(tmp_path / "resumed")
    if format == "json":
        assert _listing(tmp_path / "whole", whole) == _listing(tmp_path / "resumed", resumed)
        whole_tree.pop("opensdi.json"), resumed_tree.pop("opensdi.json")
    assert resumed_tree == whole_tree
    assert not any(".partial" in name for name in resumed_tree)


def test_rerun_rewrites_a_damaged_copy(opensdi_root, tmp_path):
    target = Path(export_opensdi(opensdi_root, tmp_path / "out", generators=["flux"]))
    victim = sorted((target / "Tp").iterdir())[3]
    original = victim.read_bytes()
    victim.write_bytes(original[:10])
    export_opensdi(opensdi_root, tmp_path / "out", generators=["flux"])
    assert victim.read_bytes() == original


def test_export_keys_come_from_the_index_order(opensdi_root, tmp_path):
    target = export_opensdi(opensdi_root, tmp_path / "out", format="json", generators=["sd2"])
    shards = sorted((opensdi_root / "data").glob("sd2-*.parquet"))
    keys = [k for s in shards for k in pc.cast(pq.read_table(s, columns=["key"]).column("key"), "string").to_pylist()]
    assert [_stem(tp) for tp, _ in json.loads(Path(target).read_text())] == [file_stem(k) for k in keys]
