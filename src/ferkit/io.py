"""Image decoding and validation: any file a user points at becomes a uint8 array or a one-line ImageError.

Why one place: EXIF orientation, palette/RGBA/16-bit modes and decompression bombs are each a classic source of
wrong results or crashes in FER tools; every reader (datasets, `ferkit analyze`) decodes through here.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from ferkit.errors import UserInputError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv"})

MAX_PIXELS = 100_000_000
"""Refuse images above this many pixels (30000x30000 is 900 M): decoding them would need gigabytes."""

Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageError(UserInputError):
    """An input that cannot be used as an image, with a one-line reason that names the file."""


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a sibling temporary path, then rename it over ``path``.

    A crash or kill mid-write leaves the previous file (or none), never half of one: every output ferkit writes
    (results, reports, checkpoints, model packages) goes through here.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_csv(path: str | os.PathLike, fieldnames: Sequence[str], rows: Iterable[Mapping[str, object]]) -> Path:
    """A CSV with a header row, written atomically; every table ferkit writes goes through here.

    UTF-8, except that a file name which is not valid UTF-8 (Linux allows any bytes) is written as its own bytes
    (``surrogateescape``, the way ``os.fsdecode`` read it) instead of failing the whole file.
    """
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
            w = csv.DictWriter(f, fieldnames=list(fieldnames))
            w.writeheader()
            w.writerows(rows)
    return atomic_write(path, write)


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_video_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _to_uint8(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit modes scaled down to 8 bits (PIL's convert('L') would clip them instead)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size else 0.0
        scale = 255.0 / hi if hi > 255 else 1.0
        return Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), mode="L")
    return img


def read_image(source: str | os.PathLike | bytes, mode: str = "rgb") -> np.ndarray:
    """Decode an image file (or its bytes) to a uint8 array: HxWx3 for mode 'rgb', HxW for mode 'gray'.

    EXIF orientation is applied, transparency is composited on white, 16-bit images are rescaled. Raises
    ImageError with a one-line message for missing, empty, corrupt, truncated, non-image or oversized input.
    """
    if mode not in ("rgb", "gray"):
        raise ValueError(f"mode must be 'rgb' or 'gray', not {mode!r}")
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes):
        if not os.path.exists(source):
            raise ImageError(f"{name}: no such file")
        if os.path.isdir(source):
            raise ImageError(f"{name}: is a folder, not an image")
        if os.path.getsize(source) == 0:
            raise ImageError(f"{name}: empty file (0 bytes)")
        if is_video_path(source):
            raise ImageError(f"{name}: a video, not an image: use `ferkit video {name}`")
    try:
        import io as _io

        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(_io.BytesIO(source) if isinstance(source, bytes) else source) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise ImageError(f"{name}: image too large ({w}x{h} > {MAX_PIXELS:,} pixels); downscale it first")
                img = ImageOps.exif_transpose(img)
                img = _to_uint8(img)
                if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                    rgba = img.convert("RGBA")
                    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    img = Image.alpha_composite(background, rgba)
                img = img.convert("L" if mode == "gray" else "RGB")
                return np.asarray(img, dtype=np.uint8).copy()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (or an unsupported format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageError(f"{name}: corrupt or truncated image ({reason})") from None
