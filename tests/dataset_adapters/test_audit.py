"""``benco opensdi audit``: header-only metadata per generator and label, and how well a detector that
sees only that metadata separates real from fake, on synthetic shards in the real HF format."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dataset_adapters.audit import audit_opensdi, estimate_jpeg_quality, load_audit
from dataset_adapters.errors import OpenSDIError
from dataset_adapters.synthetic import write_opensdi_shard
from imdlbenco_maskclip.cli import benco


def encode(rng: np.random.Generator, size: tuple[int, int], format: str, quality: int = 90) -> bytes:
    """Random pixels of ``size`` (width, height) as JPEG at ``quality`` or as PNG."""
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format, **({"quality": quality} if format == "JPEG" else {}))
    return buffer.getvalue()


def key(generator: str, label: int, i: int) -> str:
    return f"{'partial' if i % 2 else 'entire'}/{generator}/{('real', 'fake')[label]}/{i:05d}.jpg"


@pytest.fixture(scope="module")
def shortcut_source(tmp_path_factory):
    """flux and an unknown sd35: reals 64x48 JPEG q90, fakes 96x96 PNG (size alone separates them)."""
    root = tmp_path_factory.mktemp("shortcut")
    rng = np.random.default_rng(0)
    for generator in ("sd35", "flux"):
        rows = [(key(generator, 0, i), encode(rng, (64, 48), "JPEG", 90), None, 0) for i in range(20)]
        rows += [(key(generator, 1, i), encode(rng, (96, 96), "PNG"), None, 1) for i in range(20)]
        order = rng.permutation(len(rows))
        write_opensdi_shard(root / "data" / f"{generator}-00000-of-00001.parquet", [rows[i] for i in order], 8)
    return root


def test_size_that_separates_the_classes_is_found(shortcut_source):
    audit = audit_opensdi(shortcut_source)
    assert [g.generator for g in audit.generators] == ["flux", "sd35"]  # known generators first
    for result in audit.generators:
        assert result.counts == {"real": 20, "fake": 20} and result.folds == 5
        assert result.accuracy == pytest.approx(1.0) and result.accuracy_std == pytest.approx(0.0)
        real, fake = result.summary("real"), result.summary("fake")
        assert real["format"] == {"JPEG": 20} and fake["format"] == {"PNG": 20}
        assert real["sizes"] == {"64x48": 20} and fake["sizes"] == {"96x96": 20}
        assert real["jpeg_quality"]["min"] == real["jpeg_quality"]["max"] == 90
        assert fake["jpeg_quality"] is None and fake["width"]["median"] == 96


def test_metadata_from_one_distribution_gives_chance(tmp_path):
    rng = np.random.default_rng(1)
    sizes = [(64, 48), (48, 64), (64, 64), (80, 60)]
    rows = []
    for i in range(240):
        label = i % 2
        size = sizes[rng.integers(len(sizes))]
        format = ("JPEG", "PNG")[int(rng.random() < 0.3)]
        rows.append((key("sd15", label, i), encode(rng, size, format, int(rng.choice([70, 80, 90]))), None, label))
    write_opensdi_shard(tmp_path / "sd15-00000-of-00001.parquet", rows, 32)
    (result,) = audit_opensdi(tmp_path).generators
    assert result.counts == {"real": 120, "fake": 120} and result.majority == 0.5
    assert 0.25 <= result.accuracy <= 0.75


def test_jpeg_quality_is_recovered_from_the_quantization_table():
    """Exactly, for every quality Pillow (libjpeg) writes."""
    rng = np.random.default_rng(0)
    for quality in range(1, 101):
        with Image.open(io.BytesIO(encode(rng, (40, 24), "JPEG", quality))) as image:
            assert estimate_jpeg_quality(image.quantization[0]) == quality


def test_command_writes_json_and_figure_and_prints_a_line_per_generator(shortcut_source, tmp_path, capsys):
    out = tmp_path / "audit"
    assert benco.main(["opensdi", "audit", str(shortcut_source), "--output_dir", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["flux", "sd35"]
    assert "reaches 1.00 accuracy (± 0.00, 5 folds; 20 real, 20 fake; majority class 0.50)" in lines[0]
    assert lines[2] == f"wrote {out / 'audit.json'} and {out / 'audit.png'}"
    with Image.open(out / "audit.png") as figure:
        assert figure.format == "PNG" and figure.width > 600
    stored = json.loads((out / "audit.json").read_text())
    assert stored["source"] == str(shortcut_source)
    assert stored["features"] == ["width", "height", "format", "jpeg_quality", "bytes_per_pixel"]
    assert list(stored["generators"]) == ["flux", "sd35"]
    flux = stored["generators"]["flux"]
    assert flux["counts"] == {"real": 20, "fake": 20} and flux["folds"] == 5 and flux["accuracy"] == 1.0
    assert flux["real"]["format"] == {"JPEG": 20} and flux["fake"]["bytes_per_pixel"]["min"] > 1
    loaded = load_audit(out)
    assert loaded["generators"] == stored["generators"] and loaded["figure"] == str((out / "audit.png").resolve())


def test_only_headers_are_read_not_pixels(tmp_path):
    """Images whose pixel data is cut off after the header still count: the audit never decodes pixels."""
    rng = np.random.default_rng(4)
    rows = []
    for i in range(8):
        data = encode(rng, (64, 48), "JPEG", 90)
        with pytest.raises(OSError):  # decoding the pixels fails: the data is truncated
            Image.open(io.BytesIO(data[: len(data) // 3])).load()
        rows.append((key("sd15", i % 2, i), data[: len(data) // 3], None, i % 2))
    write_opensdi_shard(tmp_path / "sd15-00000-of-00001.parquet", rows, 4)
    (result,) = audit_opensdi(tmp_path).generators
    assert result.counts == {"real": 4, "fake": 4} and result.unreadable == {"real": 0, "fake": 0}
    assert set(result.metadata.width.tolist()) == {64} and set(result.metadata.jpeg_quality.tolist()) == {90}


def test_audit_lands_beside_the_data_by_default(shortcut_source, capsys):
    """Without --output_dir a folder source gets the audit, where benco test's report finds it."""
    assert benco.main(["opensdi", "audit", str(shortcut_source)]) == 0
    assert f"wrote {shortcut_source / 'audit.json'} and {shortcut_source / 'audit.png'}" in capsys.readouterr().out


def test_generators_flag_and_too_few_images(tmp_path, shortcut_source):
    (only,) = audit_opensdi(shortcut_source, generators=["sd35"]).generators
    assert only.generator == "sd35"
    rng = np.random.default_rng(2)
    rows = [(key("sd3", 1, i), encode(rng, (32, 32), "PNG"), None, 1) for i in range(3)]
    rows.append((key("sd3", 0, 3), b"not an image", None, 0))
    write_opensdi_shard(tmp_path / "sd3-00000-of-00001.parquet", rows, 2)
    (result,) = audit_opensdi(tmp_path).generators
    assert result.counts == {"real": 0, "fake": 3} and result.unreadable == {"real": 1, "fake": 0}
    assert result.accuracy is None and result.folds == 0
    assert (
        result.line()
        == "sd3: too few images of a class to cross-validate a metadata-only detector (0 real, 3 fake, 1 unreadable)"
    )
    assert result.to_json()["real"]["width"] is None


def test_missing_source_and_bad_output_dir_are_clear_errors(tmp_path, shortcut_source, capsys):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        audit_opensdi(missing)
    assert benco.main(["opensdi", "audit", str(missing)]) == 2
    assert f"benco opensdi: error: no such file, folder or hub dataset: {missing}" in capsys.readouterr().err
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert benco.main(["opensdi", "audit", str(shortcut_source), "--output_dir", str(blocker)]) == 2
    assert f"--output_dir {blocker} is a file" in capsys.readouterr().err
    with pytest.raises(OpenSDIError, match="no audit at"):
        load_audit(tmp_path)
    (tmp_path / "audit.json").write_text("{}")
    with pytest.raises(OpenSDIError, match="lacks source, features, generators"):
        load_audit(tmp_path / "audit.json")


def test_help_imports_nothing_heavy_and_names_the_default_folder():
    code = (
        "import sys\nfrom imdlbenco_maskclip.cli import benco\n"
        "try:\n    benco.main(['opensdi', 'audit', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', [m for m in ('torch', 'open_clip', 'IMDLBenCo', 'pyarrow', 'sklearn', 'matplotlib') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr
    assert "(default: SRC when it is one local folder" in " ".join(result.stdout.split())
