"""The journal of an output folder (``results.jsonl``): what a rerun into the same ``--out`` keeps and what it redoes.

Resume semantics (``ferkit analyze`` and ``ferkit rank`` share them, and the journal):

- The first line records the settings that shape results: the model (its name and a digest of its ONNX graph(s) and
  card(s): a package re-exported into the same folder is another model), the resolved detector, ``min_face``, ``max_faces`` and ``tta``. A rerun with other settings is refused with
  one line naming the setting that changed; ``force=True`` (``--force``) starts over: the old records, and the
  annotated images they named, are dropped.
- Each finished image adds one line: its result, the file's size and mtime (taken before it was read) and the name
  of its annotated image. A record counts only while its file still has that size and mtime: files deleted or
  changed since are dropped from the results (and their annotated images removed) and changed files are redone.
- The folder is locked (``.ferkit.lock``, with the ``filelock`` library) for the whole run, so a second run into
  the same folder stops at once with a clear line instead of overwriting the first one's results.
- On open the journal is rewritten (atomically) with only the header and the records still valid, so a line cut in
  half by a kill is dropped (that image is simply redone) and never glued to the next record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ferkit.errors import UserInputError
from ferkit.io import atomic_write

JOURNAL = "results.jsonl"
ANNOTATED = "annotated"
"""The folder, inside the output folder, of annotated images; each record names its own."""
LOCK = ".ferkit.lock"
FORMAT = 2

OPTION_OF = {"model": "--model", "detector": "--detector", "min_face": "--min-face", "max_faces": "--max-faces",
             "tta": "--tta"}
"""The settings a journal is keyed on, each with the CLI option that sets it (for the refusal message)."""


def file_key(path: str | os.PathLike) -> list[int]:
    """[size, mtime_ns]: what tells a rerun that a file changed since its record was written (raises OSError)."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def recognizer_settings(recognizer: Any) -> dict[str, Any]:
    """The settings of a Recognizer that change its results (threads, workers and batching do not)."""
    classifier = recognizer.classifier
    return {"model": classifier.name, "model_digest": classifier.digest(),
            "detector": recognizer.detector.name, "min_face": recognizer.min_face,
            "max_faces": recognizer.max_faces, "tta": recognizer.tta}


def _changed(out_dir: Path, old: dict[str, Any] | None, new: dict[str, Any]) -> str | None:
    """One line saying which setting differs between the journal and this run (None when none does)."""
    fix = "rerun with --force to redo every image with the new settings, or choose another --out"
    if old is None:
        return f"{out_dir} holds results from a ferkit that did not record its settings; {fix}"
    for key, option in OPTION_OF.items():
        if old.get(key) != new.get(key):
            return f"{out_dir} holds results made with {option} {old.get(key)}, not {new.get(key)}; {fix}"
    if old.get("model_digest") != new.get("model_digest"):
        return (f"{out_dir} holds results of another version of model {new.get('model')} (its model.onnx or card.json "
                f"changed since); {fix}")
    return None


def _read(path: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(settings or None, records in order); lines that are not JSON objects (a tail cut by a kill) are skipped."""
    settings, records = None, []
    if not path.exists():
        return settings, records
    for raw in path.read_bytes().split(b"\n"):
        try:
            obj = json.loads(raw)
        except ValueError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("source"), str) and isinstance(obj.get("faces"), list):
            records.append(obj)
        elif isinstance(obj, dict) and "settings" in obj:
            settings = obj["settings"]
    return settings, records


def _still_valid(record: dict[str, Any], key_of: Callable[[str], list[int]]) -> bool:
    try:
        return record.get("file_key") == key_of(record["source"])
    except OSError:
        return False


class Journal:
    """The valid records of an output folder, open for appending; make it with :func:`open_journal`."""

    def __init__(self, out_dir: Path, settings: dict[str, Any], records: dict[str, dict[str, Any]]) -> None:
        self.out_dir = out_dir
        self.path = out_dir / JOURNAL
        self.settings = settings
        self.records = records
        """source -> record, for every image whose file is unchanged since it was analysed with these settings."""
        self._file = None

    def _rewrite(self) -> None:
        lines = [json.dumps({"ferkit_journal": FORMAT, "settings": self.settings})]
        lines += [json.dumps(r) for r in self.records.values()]
        atomic_write(self.path, lambda tmp: tmp.write_text("\n".join(lines) + "\n", encoding="utf-8"))

    def is_done(self, source: str, key: list[int]) -> bool:
        rec = self.records.get(source)
        return rec is not None and rec.get("file_key") == key

    def add(self, record: dict[str, Any]) -> None:
        """Append one finished image (flushed at once, so a kill loses at most the image being written)."""
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        self.records[record["source"]] = record

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@contextmanager
def locked(out_dir: Path) -> Iterator[None]:
    """Hold the output folder's lock; another process holding it -> one-line UserInputError at once."""
    lock = FileLock(out_dir / LOCK)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserInputError(f"{out_dir} is in use by another ferkit run (it holds {out_dir / LOCK}); wait for it to "
                             "finish or choose another --out") from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def open_journal(out: str | os.PathLike, settings: dict[str, Any], force: bool = False,
                 key_of: Callable[[str], list[int]] = file_key) -> Iterator[Journal]:
    """Lock ``out``, check the settings, drop records no longer valid (removing their annotated images) and yield the
    journal; the lock is held until the block ends, so write every output inside it. ``key_of``: a source's
    [size, mtime_ns] (raises OSError when it is gone); ``ferkit.scale`` passes one that also reaches remote files."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with locked(out_dir):
        old_settings, old = _read(out_dir / JOURNAL)
        valid = {r["source"]: r for r in old if _still_valid(r, key_of)}
        problem = _changed(out_dir, old_settings, settings) if valid else None
        if problem and not force:
            raise UserInputError(problem)
        if problem:
            valid = {}
        kept = {r.get("annotated") for r in valid.values()}
        for rec in old:
            name = rec.get("annotated")
            if name and name not in kept and Path(name).name == name:
                (out_dir / ANNOTATED / name).unlink(missing_ok=True)
        journal = Journal(out_dir, settings, valid)
        journal._rewrite()
        try:
            yield journal
        finally:
            journal.close()
