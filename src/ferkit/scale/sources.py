"""The image files a ``--engine ray`` run reads: local paths, any filesystem pyarrow reaches, and manifests.

Why its own module: a cluster reads photos where they live (a bucket, a shared mount), so inputs are more than local
folders, yet each file must keep one identity across reruns, exactly as in single-process ``ferkit analyze``:

- a local file or folder is listed by :func:`ferkit.analyze.list_inputs` (absolute path, symlinks resolved, size and
  mtime), and so is a ``file://`` URI;
- a URI pyarrow understands (``s3://bucket/photos``, ``gs://...``, ``hdfs://...``) is listed with
  ``pyarrow.fs`` (folders recursively, image extensions only, sorted) and keeps its URI as its ``source``;
- a **manifest** lists inputs: a ``.txt`` file with one path or URI per line (blank lines and ``#`` comments
  skipped), or a ``.csv`` / ``.parquet`` file with a ``path`` column; relative paths are relative to the manifest's
  folder, and an entry may itself be a folder.

Every input carries ``key`` = [size, mtime_ns], which the journal compares to skip finished, unchanged files.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlparse

from ferkit.errors import UserInputError
from ferkit.io import is_image_path
from ferkit.journal import file_key

MANIFEST_SUFFIXES = (".txt", ".csv", ".parquet")


@dataclass(frozen=True)
class Input:
    source: str
    """Absolute local path (symlinks resolved) or URI: the file's identity and the ``source`` column."""
    key: tuple[int, int]
    """(size, mtime_ns) when listed."""


def is_uri(path: str) -> bool:
    """``s3://...``, ``gs://...``: a path for pyarrow's filesystems (``file://`` counts, Windows drives do not)."""
    return len(urlparse(path).scheme) > 1


def _local(path: str) -> str:
    return urlparse(path).path if path.startswith("file://") else path


@functools.lru_cache(maxsize=16)
def _filesystem(scheme: str, netloc: str):
    """(filesystem, whether its paths start with the netloc), once per bucket/host per process: making an S3 client
    costs a round of credentials. S3 and GCS paths are 'bucket/key', HDFS paths '/path' without the host."""
    from pyarrow import fs

    filesystem, probe = fs.FileSystem.from_uri(f"{scheme}://{netloc}/probe")
    return filesystem, bool(netloc) and probe.startswith(netloc)


def _remote(uri: str):
    """(filesystem, path inside it, prefix that turns such a path back into the URI)."""
    parsed = urlparse(uri)
    filesystem, with_netloc = _filesystem(parsed.scheme, parsed.netloc)
    if with_netloc:
        return filesystem, f"{parsed.netloc}{parsed.path}", f"{parsed.scheme}://"
    return filesystem, parsed.path, f"{parsed.scheme}://{parsed.netloc}"


def read_bytes(uri: str) -> bytes:
    """A remote file's bytes (raises OSError when it cannot be read)."""
    filesystem, path, _ = _remote(uri)
    with filesystem.open_input_stream(path) as f:
        return f.read()


def key_of(source: str) -> list[int]:
    """[size, mtime_ns] of a local path or URI now; OSError when it is gone (what the journal checks records with)."""
    if not is_uri(source):
        return file_key(source)
    from pyarrow import fs

    filesystem, path, _ = _remote(source)
    info = filesystem.get_file_info(path)
    if info.type != fs.FileType.File:
        raise FileNotFoundError(source)
    return [int(info.size or 0), int(info.mtime_ns or 0)]


def _is_manifest(path: str) -> bool:
    return path.lower().endswith(MANIFEST_SUFFIXES)


def _manifest_entries(path: str) -> list[str]:
    """The paths a manifest lists, relative ones made relative to the manifest's folder."""
    data = read_bytes(path) if is_uri(path) else open(path, "rb").read()
    lower = path.lower()
    if lower.endswith(".txt"):
        entries = [line.strip() for line in data.decode("utf-8").splitlines()]
        entries = [e for e in entries if e and not e.startswith("#")]
    else:
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        try:
            table = (pq.read_table(io.BytesIO(data), columns=["path"]) if lower.endswith(".parquet")
                     else pacsv.read_csv(io.BytesIO(data)))
        except Exception as exc:  # pyarrow raises ArrowInvalid / KeyError for a bad file or a missing column
            raise UserInputError(f"{path}: cannot read it as a manifest ({str(exc).splitlines()[0]}); a .csv or "
                                 ".parquet manifest needs a 'path' column") from None
        if "path" not in table.column_names:
            raise UserInputError(f"{path}: a manifest needs a 'path' column (it has {', '.join(table.column_names)})")
        entries = [str(p) for p in table.column("path").to_pylist() if p]
    if is_uri(path):
        base = path.rsplit("/", 1)[0]
        return [e if is_uri(e) or e.startswith("/") else f"{base}/{e}" for e in entries]
    folder = os.path.dirname(os.path.abspath(path))
    return [e if is_uri(e) else os.path.join(folder, e) for e in entries]


def _list_remote(uri: str, on_error: Callable[[str], None]) -> Iterable[Input]:
    from pyarrow import fs

    filesystem, path, prefix = _remote(uri)
    info = filesystem.get_file_info(path)
    if info.type == fs.FileType.NotFound:
        on_error(f"{uri}: no such file")
        return
    infos = ([info] if info.type == fs.FileType.File else
             sorted((i for i in filesystem.get_file_info(fs.FileSelector(path, recursive=True))
                     if i.type == fs.FileType.File and is_image_path(i.path)), key=lambda i: i.path))
    for i in infos:
        sep = "" if prefix.endswith("//") or i.path.startswith("/") else "/"
        yield Input(prefix + sep + i.path, (int(i.size or 0), int(i.mtime_ns or 0)))


def list_sources(paths: Sequence[str], on_error: Callable[[str], None]) -> list[Input]:
    """Every image file the paths (folders, files, URIs, manifests) name, each once, in order; a path that cannot be
    listed is reported through ``on_error`` and left out."""
    out: list[Input] = []
    seen: set[str] = set()

    def add(items: Iterable[Input]) -> None:
        for item in items:
            if item.source not in seen:
                seen.add(item.source)
                out.append(item)

    for path in paths:
        if _is_manifest(path):
            entries = _manifest_entries(_local(path))
            if not entries:
                raise UserInputError(f"{path}: the manifest lists no file")
            add(_expand(entries, on_error))
        else:
            add(_expand([path], on_error))
    return out


def _expand(paths: Sequence[str], on_error: Callable[[str], None]) -> Iterable[Input]:
    """Inputs of paths that are not manifests: local ones through analyze's own listing, URIs through pyarrow."""
    from ferkit.analyze import list_inputs

    for path in paths:
        if is_uri(path) and not path.startswith("file://"):
            yield from _list_remote(path, on_error)
            continue
        local = _local(path)
        if not os.path.exists(local):
            on_error(f"{local}: no such file")
            continue
        yield from (Input(i.source, tuple(i.key)) for i in list_inputs([local], on_error))

