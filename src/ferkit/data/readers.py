"""Dataset readers: class-per-folder trees, the FER2013 csv, FER+ vote folders and manifest csv files.

Each reader lists :class:`Entry` records (label by name, split by FER2013 usage); :func:`open_dataset` picks the
reader from what is at the path, so every command accepts any of the four layouts.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ferkit.data.samples import SPLITS, Entry, Problem, canonical_split
from ferkit.io import is_image_path
from ferkit.labels import FER2013_7, FERPLUS_8, try_canonical
from ferkit.errors import UserInputError

_FER_NAME = re.compile(r"^(Training|PublicTest|PrivateTest)_", re.IGNORECASE)

FERPLUS_FOLDERS = {"FER2013Train": "Training", "FER2013Valid": "PublicTest", "FER2013Test": "PrivateTest"}
FERPLUS_COLUMNS = FERPLUS_8 + ("unknown", "NF")
"""Vote columns of FER+ label.csv (after image name and face box), canonical emotion names first."""

FERPLUS_LABEL_MODES = ("majority", "plurality", "soft")


class DatasetError(UserInputError):
    """A path that is not a dataset ferkit can read, with the reason."""


@dataclass
class Dataset:
    """Entries of one dataset plus what the reader had to leave out: ``ignored`` counts what is not meant to be read
    (non-image files, FER+ rows without a label), ``rejected`` holds records that are broken, each with its split
    (None when unknown) and a :class:`Problem` that says where and why."""

    root: str
    kind: str
    entries: list[Entry]
    ignored: dict[str, int]
    rejected: list[tuple[str | None, Problem]] = field(default_factory=list)

    def problems(self, split: str | None = None) -> list[Problem]:
        """Broken records of one split (plus those whose split is unreadable), or all of them for None."""
        wanted = canonical_split(split) if split is not None else None
        return [p for s, p in self.rejected if wanted is None or s in (wanted, None)]

    def split(self, name: str | None) -> list[Entry]:
        """Entries of one split ('PrivateTest', 'test', ...), or all entries for None."""
        if name is None:
            return list(self.entries)
        wanted = canonical_split(name)
        return [e for e in self.entries if e.split == wanted]

    @property
    def splits(self) -> list[str]:
        present = {e.split for e in self.entries}
        return [s for s in (*SPLITS, None) if s in present]


def _split_from_name(filename: str) -> str | None:
    m = _FER_NAME.match(filename)
    return canonical_split(m.group(1)) if m else None


def _split_from_folder(parts: tuple[str, ...]) -> str | None:
    for part in parts:
        try:
            return canonical_split(part)
        except ValueError:
            continue
    return None


def read_folder_tree(root: str | os.PathLike) -> Dataset:
    """A class-per-folder tree of any depth: the label is the nearest folder named after an emotion.

    The split comes from FER2013 file names (Training_/PublicTest_/PrivateTest_) when they carry it, else from a
    folder named train/val/test above the class folder. Files without an image extension are counted as ignored.
    """
    root = Path(root)
    entries: list[Entry] = []
    ignored = {"not an image extension": 0, "no emotion folder": 0}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = Path(dirpath).relative_to(root).parts
        label = next((lab for lab in map(try_canonical, reversed(rel)) if lab is not None), None)
        folder_split = _split_from_folder(rel)
        for fn in sorted(filenames):
            if not is_image_path(fn):
                ignored["not an image extension"] += 1
                continue
            if label is None:
                ignored["no emotion folder"] += 1
                continue
            split = _split_from_name(fn) or folder_split
            entries.append(Entry(str(Path(dirpath) / fn), label, split))
    if not entries:
        raise DatasetError(f"{root}: no images in class folders (expected e.g. {root}/happy/*.jpg)")
    return Dataset(str(root), "folders", entries, {k: v for k, v in ignored.items() if v})


FER2013_SIDE = 48
"""Every FER2013 image is 48x48 gray: a pixels cell holds exactly 48 * 48 = 2304 values in 0-255."""


def _fer2013_row(row: dict[str, str | None]) -> tuple[str, np.ndarray]:
    """(label, 48x48 uint8 pixels) of one csv row; ValueError with the reason when the row breaks the format.

    Why strict: a label of -1 would index FER2013's list from the end (read as neutral), a 4-value row is a valid
    2x2 square, and a value of 300 overflows uint8 -- each would train or score silently on a wrong sample.
    """
    raw_label, raw_pixels = row.get("emotion"), row.get("pixels")
    if raw_label is None or raw_pixels is None:
        raise ValueError("row has fewer cells than the header (emotion, pixels, Usage)")
    try:
        code = int(raw_label)
    except ValueError:
        raise ValueError(f"emotion {raw_label!r} is not a whole number 0-6") from None
    if not 0 <= code < len(FER2013_7):
        raise ValueError(f"emotion {code} is outside 0-{len(FER2013_7) - 1}")
    try:
        values = np.array(raw_pixels.split(), dtype=np.int64)
    except (ValueError, OverflowError):
        raise ValueError("pixels holds something that is not a whole number") from None
    if values.size != FER2013_SIDE ** 2:
        raise ValueError(f"pixels holds {values.size} values, not {FER2013_SIDE ** 2} (48x48)")
    if values.min() < 0 or values.max() > 255:
        bad = values[(values < 0) | (values > 255)][0]
        raise ValueError(f"pixel value {bad} is outside 0-255")
    return FER2013_7[code], values.astype(np.uint8).reshape(FER2013_SIDE, FER2013_SIDE)


def read_fer2013_csv(path: str | os.PathLike) -> Dataset:
    """The original fer2013.csv: columns emotion (0-6, FER2013 order), pixels (2304 values 0-255), Usage.

    A row that breaks the format is left out and kept in ``Dataset.rejected`` as a :class:`Problem` naming the csv
    line and what is wrong (reported beside unreadable image files); every other row is still read.
    """
    entries: list[Entry] = []
    rejected: list[tuple[str | None, Problem]] = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"emotion", "pixels"} - set(reader.fieldnames or ())
        if missing:
            raise DatasetError(f"{path}: not a FER2013 csv (missing columns {sorted(missing)})")
        for row in reader:
            source = f"{path}:{reader.line_num}"
            split = None
            try:
                split = canonical_split(row["Usage"]) if row.get("Usage") else None
                label, pixels = _fer2013_row(row)
            except ValueError as exc:
                rejected.append((split, Problem(source, f"{source}: {exc}")))
                continue
            entries.append(Entry(source, label, split, pixels=pixels))
    return Dataset(str(path), "fer2013-csv", entries, {}, rejected)


def ferplus_label(votes: dict[str, float], mode: str) -> str | None:
    """The label one FER+ image gets under a protocol.

    - ``majority``: the emotion with more than half of the valid (emotion) votes, else None (excluded);
    - ``plurality``: the column with most votes over all ten (first on ties); None when that is unknown or NF;
    - ``soft``: the plurality emotion over the eight emotion columns (the distribution itself is ``Entry.votes``).
    """
    emotion_votes = {k: votes[k] for k in FERPLUS_8}
    valid = sum(emotion_votes.values())
    if mode == "majority":
        best = max(emotion_votes, key=emotion_votes.__getitem__)
        return best if valid > 0 and emotion_votes[best] > valid / 2 else None
    if mode == "plurality":
        best = max(FERPLUS_COLUMNS, key=votes.__getitem__)
        return best if best in FERPLUS_8 else None
    if mode == "soft":
        return max(emotion_votes, key=emotion_votes.__getitem__) if valid > 0 else None
    raise ValueError(f"FER+ label mode must be one of {FERPLUS_LABEL_MODES}, not {mode!r}")


def _ferplus_rows(root: Path) -> list[tuple[Path, str | None, list[str]]]:
    """(image path, split, 10 vote strings) for every labelled FER+ image under ``root``.

    ``fer2013new.csv`` (Microsoft's current votes, rows in FER2013 order) is preferred when present: the per-folder
    label.csv files are an older export whose votes differ on 1,601 of 35,710 images. Rows with no image name are
    images FER+ dropped; they are skipped here as in FER+.
    """
    master = root / "fer2013new.csv"
    folder_of = {usage: folder for folder, usage in FERPLUS_FOLDERS.items()}
    if master.is_file():
        rows = []
        with open(master, newline="") as f:
            for rec in csv.DictReader(f):
                name, usage = rec.get("Image name"), rec.get("Usage")
                if name and usage in folder_of:
                    votes = [rec[c] for c in ("neutral", "happiness", "surprise", "sadness", "anger", "disgust",
                                              "fear", "contempt", "unknown", "NF")]
                    rows.append((root / folder_of[usage] / name, usage, votes))
        return rows
    folders = [root / name for name in FERPLUS_FOLDERS if (root / name / "label.csv").is_file()]
    if not folders and (root / "label.csv").is_file():
        folders = [root]
    if not folders:
        raise DatasetError(f"{root}: no FER+ votes found (fer2013new.csv or FER2013*/label.csv)")
    rows = []
    for folder in folders:
        with open(folder / "label.csv", newline="") as f:
            rows += [(folder / r[0], FERPLUS_FOLDERS.get(folder.name), r[2:]) for r in csv.reader(f) if r]
    return rows


def read_ferplus(root: str | os.PathLike, mode: str = "majority") -> Dataset:
    """FER+ (images in FER2013Train|Valid|Test, votes in fer2013new.csv or each folder's label.csv).

    ``Entry.votes`` holds the vote distribution over the eight emotions (sums to 1: a soft label); images that get
    no label under ``mode`` are left out and counted in ``ignored`` by split and reason.
    """
    entries: list[Entry] = []
    ignored: dict[str, int] = {}
    for path, split, raw in _ferplus_rows(Path(root)):
        if len(raw) < len(FERPLUS_COLUMNS):
            ignored["malformed vote row"] = ignored.get("malformed vote row", 0) + 1
            continue
        votes = dict(zip(FERPLUS_COLUMNS, map(float, raw[:len(FERPLUS_COLUMNS)])))
        label = ferplus_label(votes, mode)
        if label is None:
            why = f"plurality is {max(FERPLUS_COLUMNS, key=votes.__getitem__)}" if mode == "plurality" \
                else f"no {mode} label"
            reason = f"{split or path.parent.name}: {why}"
            ignored[reason] = ignored.get(reason, 0) + 1
            continue
        valid = sum(votes[k] for k in FERPLUS_8)
        entries.append(Entry(str(path), label, split, votes={k: votes[k] / valid for k in FERPLUS_8}))
    return Dataset(str(root), f"ferplus-{mode}", entries, ignored)


def read_manifest(path: str | os.PathLike) -> Dataset:
    """A csv with columns path, label[, split]; relative paths are relative to the csv's folder."""
    path = Path(path)
    entries: list[Entry] = []
    ignored = {"unknown label": 0}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not {"path", "label"} <= set(reader.fieldnames or ()):
            raise DatasetError(f"{path}: a manifest needs columns path,label[,split]")
        for row in reader:
            label = try_canonical(row["label"])
            if label is None:
                ignored["unknown label"] += 1
                continue
            p = Path(row["path"])
            p = p if p.is_absolute() else path.parent / p
            split = canonical_split(row["split"]) if row.get("split") else None
            entries.append(Entry(str(p), label, split))
    return Dataset(str(path), "manifest", entries, {k: v for k, v in ignored.items() if v})


def is_ferplus_folder(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and ((p / "fer2013new.csv").is_file() or (p / "label.csv").is_file()
                           or any((p / name / "label.csv").is_file() for name in FERPLUS_FOLDERS))


def open_dataset(path: str | os.PathLike, ferplus_mode: str = "majority") -> Dataset:
    """Read whatever dataset layout is at ``path`` (FER+ folder, FER2013 csv, manifest csv or class folders)."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{p}: no such file or folder")
    if p.is_dir():
        if is_ferplus_folder(p):
            return read_ferplus(p, ferplus_mode)
        return read_folder_tree(p)
    if p.suffix.lower() == ".csv":
        with open(p, newline="") as f:
            header = next(csv.reader(f), [])
        if "pixels" in header:
            return read_fer2013_csv(p)
        if "path" in header:
            return read_manifest(p)
        raise DatasetError(f"{p}: csv is neither FER2013 (emotion,pixels,Usage) nor a manifest (path,label)")
    raise DatasetError(f"{p}: expected a folder or a .csv file")
