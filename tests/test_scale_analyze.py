"""`ferkit analyze --engine ray` on a real local Ray cluster (2 CPUs on loopback), against single-process analyze.

One cluster for the module (started once, shut down at the end); the CLI joins it, as `ray_session` reuses an
initialised Ray. The equality test runs every shared photo through both engines; the others use a few photos.
"""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from click.testing import CliRunner

from ferkit.cli import main
from tests.conftest import PHOTOS, need

PORTRAIT = "face_recognition__obama.jpg"
GROUP = "face_recognition__two_people.jpg"

PROB_TOLERANCE = 1e-5
"""Both engines round probabilities to 6 decimals, but not from the same float32 numbers: ONNX Runtime's kernels
sum in an order that depends on the batch (the single process classifies up to 16 images' faces together, the
actors whatever Ray Data's batches hold), which moves the last bits of a float32 (7 significant digits). 1e-5 is ten
times the rounding step and the bound tests/test_analyze.py uses for batched against single-image calls; a face
whose crop or detection differed would be off by far more (1e-2 and up)."""


@pytest.fixture(scope="module")
def ray_cluster():
    pytest.importorskip("ray", reason="the 'ray' extra is not installed (pip install -e '.[ray]')")
    need(PHOTOS)
    from ferkit.scale.cluster import ray_session

    with ray_session(None, "tests/test_scale_analyze.py", num_cpus=2) as ray:
        yield ray
    assert not ray.is_initialized()


def run(*args: str):
    return CliRunner().invoke(main, ["analyze", *map(str, args)])


def read_table(out):
    import pandas as pd

    table = pd.read_parquet(out / "faces.parquet")
    lines = [json.loads(line) for line in (out / "faces.jsonl").read_text().splitlines()]
    assert list(table.columns) == list(lines[0]), "Parquet and JSON lines have the same columns"
    assert len(table) == len(lines)
    return table


@pytest.fixture(scope="module")
def both_engines(ray_cluster, tmp_path_factory):
    """(single-process output folder, ray output folder, ray CLI result) for every shared photo."""
    local, dest = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("ray") / "dest"
    result = run(PHOTOS, "--out", local, "--no-annotate")
    assert result.exit_code == 0, result.output
    result = run("--engine", "ray", PHOTOS, "--out", dest)
    return local, dest, result


def test_ray_equals_single_process_row_by_row(both_engines):
    import pandas as pd

    local, dest, result = both_engines
    assert result.exit_code == 0, result.output
    summary = result.output.strip().splitlines()[-1]
    assert summary.startswith("26 images, ") and " 0 errors, " in summary and "images/s" in summary, summary
    expected = pd.read_csv(local / "faces.csv")
    table = read_table(dest)
    assert list(table.columns) == list(expected.columns) + ["error"]
    assert table["error"].isna().all()
    faces = table[table["face"].notna()].sort_values(["source", "face"]).reset_index(drop=True)
    expected = expected.sort_values(["source", "face"]).reset_index(drop=True)
    assert len(faces) == len(expected) > 26
    labels = list(expected.columns[9:])
    for (_, got), (_, want) in zip(faces.iterrows(), expected.iterrows()):
        where = f"{want['source']} face {want['face']}"
        assert [got[c] for c in ("source", "face", "x", "y", "w", "h", "emotion", "group")] == \
               [want[c] for c in ("source", "face", "x", "y", "w", "h", "emotion", "group")], where
        assert [got[c] for c in ["confidence", *labels]] == \
               pytest.approx([want[c] for c in ["confidence", *labels]], abs=PROB_TOLERANCE), where
    # images without a face: one row with only the source, as in results.json's empty faces lists
    local_results = json.loads((local / "results.json").read_text())
    assert set(table["source"]) == {r["source"] for r in local_results}
    faceless = {r["source"] for r in local_results if not r["faces"]}
    assert set(table[table["face"].isna()]["source"]) == faceless


def test_rerun_skips_finished_files_and_refuses_other_settings(both_engines):
    _, dest, _ = both_engines
    import pandas as pd

    before = read_table(dest)
    result = run("--engine", "ray", PHOTOS, "--out", dest)
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].startswith("0 images, 0 faces, 0 errors, 26 already done")
    pd.testing.assert_frame_equal(read_table(dest), before)
    result = run("--engine", "ray", PHOTOS, "--out", dest, "--tta", "none")
    assert result.exit_code == 1
    assert "--tta flip, not none" in result.output and "--force" in result.output


def test_corrupt_file_is_an_error_row_and_a_manifest_lists_inputs(ray_cluster, tmp_path):
    """A truncated photo and a text file named .jpg are rows with their errors; the job finishes (exit 1, as a local
    run with unreadable files), the good photo's faces are there; a rerun skips it and retries the two others."""
    import pandas as pd

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(PHOTOS / PORTRAIT, folder / PORTRAIT)
    data = (PHOTOS / GROUP).read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "notes.jpg").write_text("not a photo\n")
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"# photos to analyse\nin/{PORTRAIT}\nin/truncated.jpg\n\n{folder / 'notes.jpg'}\n")
    dest = tmp_path / "dest"
    result = run("--engine", "ray", manifest, "--out", dest)
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1].startswith("1 images, 1 faces, 2 errors")
    table = read_table(dest).set_index("source")
    truncated, notes = str(folder / "truncated.jpg"), str(folder / "notes.jpg")
    assert table.loc[truncated, "error"].startswith(f"{truncated}: corrupt or truncated image")
    assert table.loc[notes, "error"] == f"{notes}: not an image file (or an unsupported format)"
    assert table.loc[str(folder / PORTRAIT), "face"] == 0 and pd.isna(table.loc[str(folder / PORTRAIT), "error"])
    assert f"skipped {truncated}: corrupt" in result.output
    result = run("--engine", "ray", manifest, "--out", dest)
    assert result.output.strip().splitlines()[-1].startswith("0 images, 0 faces, 2 errors, 1 already done")
    assert len(read_table(dest)) == 3


def test_csv_and_parquet_manifests_and_remote_listing(tmp_path, monkeypatch):
    """Manifests with a 'path' column, and a URI listed through a real pyarrow filesystem (a local subtree standing
    for a bucket: 'mem://bucket/...' paths are 'bucket/...' inside it, as S3's are)."""
    pa = pytest.importorskip("pyarrow", reason="the 'ray' extra is not installed")
    import pyarrow.parquet as pq
    from pyarrow import fs

    from ferkit.scale import analyze as scale_analyze
    from ferkit.scale import sources
    from ferkit.scale.sources import list_sources

    need(PHOTOS)
    (tmp_path / "m.csv").write_text(f"path,label\n{PHOTOS / PORTRAIT},x\n{PHOTOS / GROUP},y\n")
    pq.write_table(pa.table({"path": [str(PHOTOS / GROUP)]}), tmp_path / "m.parquet")
    listed = list_sources([str(tmp_path / "m.csv"), str(tmp_path / "m.parquet")], pytest.fail)
    assert [i.source for i in listed] == [str(PHOTOS / PORTRAIT), str(PHOTOS / GROUP)]
    (tmp_path / "bad.csv").write_text("file\nx.jpg\n")
    with pytest.raises(Exception, match="needs a 'path' column"):
        list_sources([str(tmp_path / "bad.csv")], pytest.fail)

    bucket = tmp_path / "store" / "bucket" / "photos"
    bucket.mkdir(parents=True)
    shutil.copy(PHOTOS / PORTRAIT, bucket / PORTRAIT)
    (bucket / "cut.jpg").write_bytes((PHOTOS / GROUP).read_bytes()[:3000])
    (bucket / "readme.md").write_text("not listed")
    store = fs.SubTreeFileSystem(str(tmp_path / "store"), fs.LocalFileSystem())
    monkeypatch.setattr(sources, "_filesystem", lambda scheme, netloc: (store, True))
    errors: list[str] = []
    listed = list_sources(["mem://bucket/photos", "mem://bucket/gone.jpg"], errors.append)
    assert [i.source for i in listed] == ["mem://bucket/photos/cut.jpg", f"mem://bucket/photos/{PORTRAIT}"]
    assert errors == ["mem://bucket/gone.jpg: no such file"]
    assert sources.key_of(listed[1].source) == [(bucket / PORTRAIT).stat().st_size, (bucket / PORTRAIT).stat().st_mtime_ns]
    with pytest.raises(FileNotFoundError):
        sources.key_of("mem://bucket/gone.jpg")

    # the detection task reads remote bytes and names the URI in its results and errors
    import pickle

    import numpy as np

    from ferkit.recognizer import Recognizer

    with Recognizer() as rec:
        spec = scale_analyze.DetectSpec(rec.detector.name, rec.classifier.crop_specs, rec.max_side, 0, None,
                                        rec.model_name)
    out = scale_analyze.detect_batch({"source": np.array([i.source for i in listed]), "size": np.zeros(2),
                                      "mtime_ns": np.zeros(2)}, spec)
    cut, portrait = (pickle.loads(b) for b in out["pending"])
    assert cut.result.error.startswith("mem://bucket/photos/cut.jpg: corrupt or truncated image")
    assert portrait.result.source == f"mem://bucket/photos/{PORTRAIT}" and len(portrait.detections) == 1


def test_engine_ray_needs_out_and_refuses_json(tmp_path):
    pytest.importorskip("ray", reason="the 'ray' extra is not installed")
    result = run("--engine", "ray", PHOTOS / PORTRAIT)
    assert result.exit_code == 1 and "give --out DIR" in result.output
    result = run("--engine", "ray", PHOTOS / PORTRAIT, "--out", tmp_path, "--json", tmp_path / "x.json")
    assert result.exit_code == 1 and "--json and --csv are for --engine local" in result.output
    result = run(PHOTOS / PORTRAIT, "--actors", "2")
    assert result.exit_code == 1 and "--actors needs --engine ray" in result.output


def test_missing_ray_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError, as when it is absent
    result = run("--engine", "ray", PHOTOS / PORTRAIT, "--out", tmp_path / "dest")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines == ["ferkit: error: ferkit analyze --engine ray needs the 'ray' extra: pip install \"ferkit[ray]\" "
                     "(from a source checkout: pip install -e \".[ray]\")"]
    assert not (tmp_path / "dest").exists()
