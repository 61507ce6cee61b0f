"""Dataset readers on the real FER2013 / FER+ data, plus the corrupt-file cases."""

import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from ferkit.data import class_counts, class_weights, decode, open_dataset
from ferkit.data.readers import DatasetError, ferplus_label, read_ferplus
from ferkit.io import ImageError, read_image

# ../shared/data/fer2013/SOURCE.md
FER2013_COUNTS = {
    "Training": {"angry": 3995, "disgust": 436, "fear": 4097, "happy": 7215, "neutral": 4965, "sad": 4830, "surprise": 3171},
    "PublicTest": {"angry": 467, "disgust": 56, "fear": 496, "happy": 895, "neutral": 607, "sad": 653, "surprise": 415},
    "PrivateTest": {"angry": 491, "disgust": 55, "fear": 528, "happy": 879, "neutral": 626, "sad": 594, "surprise": 416},
}

# ../shared/data/ferplus/SOURCE.md, plurality (argmax of the ten vote columns, first on ties), canonical names
FERPLUS_PLURALITY = {
    "Training": {"neutral": 10309, "happy": 7528, "surprise": 3562, "sad": 3515, "angry": 2467, "fear": 652,
                 "disgust": 191, "contempt": 165, "unknown": 170, "NF": 2},
    "PublicTest": {"neutral": 1335, "happy": 899, "surprise": 456, "sad": 412, "angry": 319, "fear": 74,
                   "disgust": 34, "contempt": 24, "unknown": 25, "NF": 1},
    "PrivateTest": {"neutral": 1262, "happy": 928, "surprise": 444, "sad": 444, "angry": 325, "fear": 93,
                    "disgust": 23, "contempt": 27, "unknown": 27, "NF": 1},
}


def test_fer2013_folder_counts_match_source(fer2013):
    ds = open_dataset(fer2013)
    for split, expected in FER2013_COUNTS.items():
        assert class_counts(ds.split(split)) == expected
    assert ds.split("test") == ds.split("PrivateTest")


def test_ferplus_plurality_reproduces_source_counts(ferplus):
    ds = read_ferplus(ferplus, "plurality")
    for split, expected in FERPLUS_PLURALITY.items():
        got = class_counts(ds.split(split))
        for name in ("unknown", "NF"):
            got[name] = ds.ignored.get(f"{split}: plurality is {name}", 0)
        assert got == expected


def test_ferplus_majority_excludes_images_without_majority(ferplus):
    ds = read_ferplus(ferplus, "majority")
    plural = read_ferplus(ferplus, "plurality")
    excluded = sum(v for k, v in ds.ignored.items() if k.startswith("PrivateTest"))
    assert len(ds.split("PrivateTest")) + excluded == 3574  # named PrivateTest rows in fer2013new.csv
    assert 0 < len(ds.split("PrivateTest")) < len(plural.split("PrivateTest"))
    e = ds.split("PrivateTest")[0]
    assert sum(e.votes.values()) == pytest.approx(1.0) and e.votes[e.label] > 0.5


def test_ferplus_label_rules():
    votes = dict.fromkeys(["neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt", "unknown", "NF"], 0.0)
    tie = {**votes, "happy": 4, "sad": 4, "unknown": 2}
    assert ferplus_label(tie, "majority") is None  # 4 of 8 valid votes is not more than half
    assert ferplus_label(tie, "plurality") == "happy"  # first on ties, FER+ column order
    clear = {**votes, "sad": 5, "angry": 2, "unknown": 3}
    assert ferplus_label(clear, "majority") == "sad"  # 5 of 7 valid votes
    assert ferplus_label({**votes, "unknown": 6, "happy": 4}, "plurality") is None
    with pytest.raises(ValueError):
        ferplus_label(clear, "vote")


def test_fer2013_csv_written_from_real_images(tmp_path, small_fer_tree):
    ds = open_dataset(small_fer_tree)
    order = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    path = tmp_path / "fer2013.csv"
    expected = []
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        for s in decode(ds.entries):
            w.writerow([order.index(s.label), " ".join(map(str, s.image.ravel())), s.split])
            expected.append(s)
    back = open_dataset(path)
    assert back.kind == "fer2013-csv"
    got = list(decode(back.entries))
    assert [(s.label, s.split) for s in got] == [(s.label, s.split) for s in expected]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(got, expected))
    assert len(back.split("PublicTest")) == len(ds.split("PublicTest"))


def test_manifest_with_relative_paths(tmp_path, small_fer_tree):
    rows = [(p.relative_to(small_fer_tree), p.parent.name) for p in sorted(small_fer_tree.rglob("*.jpg"))[:5]]
    man = small_fer_tree / "manifest.csv"
    with open(man, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        for rel, lab in rows:
            w.writerow([rel, lab.upper() if lab == "happy" else lab, "val"])
    ds = open_dataset(man)
    assert ds.kind == "manifest" and len(ds.entries) == 5
    assert {e.split for e in ds.entries} == {"PublicTest"}
    assert len(list(decode(ds.entries))) == 5


def test_corrupt_files_are_reported_and_skipped(small_fer_tree):
    happy = small_fer_tree / "happy"
    good = sorted(happy.glob("*.jpg"))[0].read_bytes()
    (happy / "Training_truncated.jpg").write_bytes(good[: len(good) // 2])
    (happy / "Training_empty.jpg").write_bytes(b"")
    (happy / "Training_text.png").write_text("this is not an image\n")
    ds = open_dataset(small_fer_tree)
    problems = []
    samples = list(decode(ds.entries, problems=problems))
    assert len(samples) == 7 * 12
    assert sorted(p.source.rsplit("/", 1)[1] for p in problems) == ["Training_empty.jpg", "Training_text.png",
                                                                     "Training_truncated.jpg"]
    reasons = " | ".join(p.reason for p in problems)
    assert "empty file" in reasons and "not an image" in reasons and "corrupt or truncated" in reasons


def test_read_image_modes_and_orientation(tmp_path):
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "transparent.png")
    assert read_image(tmp_path / "transparent.png").tolist() == np.full((4, 6, 3), 255).tolist()  # on white
    deep = (np.arange(24, dtype=np.uint16).reshape(4, 6) * 2000)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    g = read_image(tmp_path / "deep.png", "gray")
    assert g.dtype == np.uint8 and g.max() == 255 and g.min() == 0
    img = Image.new("RGB", (6, 4))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    img.save(tmp_path / "rotated.jpg", exif=exif)
    assert read_image(tmp_path / "rotated.jpg").shape == (6, 4, 3)
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "missing.jpg")


def test_huge_image_is_refused_without_decoding(tmp_path):
    # a 30000x30000 PNG header (a few KB on disk) must be refused before any pixel buffer is allocated
    path = tmp_path / "huge.png"
    Image.new("1", (30000, 30000)).save(path)
    with pytest.raises(ImageError, match="too large"):
        read_image(path)


def test_class_weights_formulas():
    counts = {"angry": 100, "disgust": 10, "happy": 200, "contempt": 0}
    w3 = class_weights(counts, "seed003")
    n, c = 310, 4
    assert w3["happy"] == pytest.approx((200 / n) / (c * 200 / n))
    assert w3["disgust"] == pytest.approx((200 / n) / (c * 10 / n))
    w4 = class_weights(counts, "seed004")
    assert w4 == {"angry": 2.0, "disgust": 20.0, "happy": 1.0, "contempt": 0.0}
    with pytest.raises(ValueError):
        class_weights(counts, "inverse")


def test_not_a_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        open_dataset(tmp_path / "nope")
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match="neither FER2013"):
        open_dataset(tmp_path / "x.csv")
    shutil.rmtree(tmp_path / "x.csv", ignore_errors=True)
