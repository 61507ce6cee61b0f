"""Image decoding and validation: any file a user points at becomes a uint8 array or a one-line ImageError.

Why one place: EXIF orientation, palette/RGBA/16-bit/float modes and decompression bombs are each a classic source
of wrong results or crashes in FER tools; every reader (datasets, `ferkit analyze`) decodes through here.

Why ``max_side``: a 10000x9999 photo is 300 MB of RGB pixels, but face detection works on at most ~1024 px and a
face is classified at 48-64 px. :func:`decode_image` therefore reduces an image larger than ``max_side`` by the
smallest integer factor that brings it within ``max_side`` (JPEG: while decoding, by DCT scaling, PIL's ``draft``;
other formats: a box average, PIL's ``reduce``, right after decoding) and reports the original size and the exact
scale beside the pixels, so boxes can be mapped back to original-image pixels. An integer factor keeps that mapping
exact and costs a few ms, where resampling to exactly ``max_side`` would cost ~50 ms per photo; the working image's
longer side ends up between ``max_side / 2`` and ``max_side``.

Nothing here changes process-wide state: PIL's own ``Image.MAX_IMAGE_PIXELS`` is left as the user set it (PIL warns
above it and refuses twice it); ferkit refuses images above its own :data:`MAX_PIXELS`, read from the header before
any pixel is decoded.
"""

from __future__ import annotations

import csv
import ctypes
import functools
import io
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ferkit.errors import UserInputError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv"})

MAX_PIXELS = 100_000_000
"""Refuse images above this many pixels (10000x10000; 30000x30000 is 900 M), checked from the file's header.
Images between PIL's own limit (``PIL.Image.MAX_IMAGE_PIXELS``, 89.5 M by default) and this one make PIL warn;
``ferkit`` (the command) silences that warning, library users keep PIL's behaviour."""

TRIM_BYTES = 64 << 20
"""After a decode budgeted at this many bytes or more, freed heap memory is handed back to the OS (:func:`_trim`)."""

_STRIP_ROWS = 512
"""Rows converted at a time when a 16-bit or float image is scaled to 8 bits (a few MB per strip)."""

_HIGH_DEPTH = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
                7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
"""EXIF orientation -> the transpose that displays the image upright (the table of ``ImageOps.exif_transpose``,
applied here after downscaling, so a rotated 100 MP photo is never copied at full size)."""


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


def colour_mode(channels: int) -> str:
    """The :func:`read_image` / ``crop_face`` mode ('gray' or 'rgb') for a model with this many input channels."""
    if channels == 1:
        return "gray"
    if channels == 3:
        return "rgb"
    raise ValueError(f"a model input has 1 (gray) or 3 (RGB) channels, not {channels}")


class MemoryBudget:
    """At most ``limit`` bytes held at once by the threads that ask, each asking before it allocates.

    :class:`ferkit.recognizer.Recognizer` decodes in several threads; without this, N threads decoding N huge
    images hold N full-size pixel buffers at once. A request larger than the whole budget is granted only when
    nothing else is held, so one huge image still decodes, alone.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a memory budget must be positive, not {limit}")
        self.limit = limit
        self._held = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        nbytes = max(0, min(int(nbytes), self.limit))
        with self._cond:
            self._cond.wait_for(lambda: self._held + nbytes <= self.limit)
            self._held += nbytes
        try:
            yield
        finally:
            with self._cond:
                self._held -= nbytes
                self._cond.notify_all()


@dataclass(frozen=True)
class Decoded:
    """Pixels at a working size, with the original image's size (after EXIF orientation) and its file mode."""

    pixels: np.ndarray
    """uint8, HxWx3 (mode 'rgb') or HxW (mode 'gray'); at most ``max_side`` on its longer side."""
    width: int
    height: int
    file_mode: str
    """The mode PIL reads from the file ('RGB', 'P', 'I;16', 'F', ...), before any conversion."""
    scale: float = 1.0
    """Working pixels per original pixel: 1 / the integer reduction factor (1.0 when not reduced). Pixel ``i`` of
    the working image covers original pixels ``i / scale`` up to ``(i + 1) / scale``."""


_PIL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
"""Bytes per pixel of a decoded image as PIL stores it (every other mode: 4)."""


def decode_cost(width: int, height: int, mode: str) -> int:
    """Bytes to budget for decoding a ``width`` x ``height`` image of PIL mode ``mode``: the full-size image as PIL
    stores it, plus the strip of rows being converted (everything after decoding works strip by strip)."""
    return width * height * _PIL_BYTES.get(mode, 4) + width * _STRIP_ROWS * 16


def _uint8_rule(img: Image.Image) -> tuple[float, float]:
    """``(scale, offset)`` that maps a 16-bit, 32-bit or float image to 0-255 (``out = v * scale + offset``).

    Floats within 0-1 are the usual convention for float images: x255. Values already within 0-255 stay as they
    are. Other non-negative ranges are scaled by their maximum (so 16-bit images keep their black point); ranges
    with negative values are stretched from their minimum to their maximum. NaN and infinities count as 0.
    """
    lo, hi = (float(v) for v in img.getextrema())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = _finite_extrema(img)
    if img.mode == "F" and lo >= 0 and hi <= 1:
        return 255.0, 0.0
    if lo >= 0 and hi <= 255:
        return 1.0, 0.0
    if lo >= 0:
        return 255.0 / hi, 0.0
    return 255.0 / (hi - lo), -lo * 255.0 / (hi - lo)


def _finite_extrema(img: Image.Image) -> tuple[float, float]:
    """Min and max over the finite values of a float image (one with NaN or inf), strip by strip."""
    lo, hi = math.inf, -math.inf
    for y in range(0, img.height, _STRIP_ROWS):
        strip = np.asarray(img.crop((0, y, img.width, min(img.height, y + _STRIP_ROWS))), dtype=np.float32)
        finite = strip[np.isfinite(strip)]
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    return (0.0, 0.0) if lo > hi else (lo, hi)


def _uint8_converter(img: Image.Image) -> Callable[[np.ndarray], np.ndarray]:
    """A function from the values of a strip of ``img`` (16-bit, 32-bit or float) to uint8, by :func:`_uint8_rule`
    for the whole image (PIL's own convert('L') would clip them instead)."""
    scale, offset = _uint8_rule(img)
    if img.mode.startswith("I;16"):  # a lookup table: 2x faster than float arithmetic on every pixel
        lut = np.clip(np.rint(np.arange(65536, dtype=np.float64) * scale + offset), 0, 255).astype(np.uint8)
        return lambda values: lut[values]
    return lambda values: np.clip(np.rint(np.nan_to_num(values.astype(np.float32)) * scale + offset), 0, 255
                                  ).astype(np.uint8)


def _eight_bit(strip: Image.Image, to_uint8: Callable[[np.ndarray], np.ndarray] | None, mode: str) -> Image.Image:
    """A strip as 8-bit 'L' or 'RGB' (for ``mode`` 'gray' or 'rgb'), transparency composited on white."""
    if to_uint8 is not None:
        strip = Image.fromarray(to_uint8(np.asarray(strip)))
    if strip.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in strip.info:
        rgba = strip.convert("RGBA")
        strip = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return strip.convert("L" if mode == "gray" else "RGB")


def reduction(width: int, height: int, max_side: int | None) -> int:
    """The smallest integer factor that brings a ``width`` x ``height`` image within ``max_side`` (1: keep it)."""
    if not max_side or max(width, height) <= max_side:
        return 1
    return math.ceil(max(width, height) / max_side)


def decode_image(source: str | os.PathLike | bytes, mode: str = "rgb", max_side: int | None = None,
                 budget: MemoryBudget | None = None, name: str | None = None) -> Decoded:
    """Decode an image file (or its bytes) to uint8 pixels, reduced to at most ``max_side`` on the longer side.

    EXIF orientation is applied, transparency is composited on white, 16-bit and float images are scaled to 8 bits
    (:func:`_uint8_rule`). With ``budget``, the full-size decode waits for room in it. Raises ImageError with a
    one-line message for missing, empty, corrupt, truncated, non-image or oversized input, naming ``name`` (default:
    the path, or ``<bytes>``).
    """
    if mode not in ("rgb", "gray"):
        raise ValueError(f"mode must be 'rgb' or 'gray', not {mode!r}")
    name = name or ("<bytes>" if isinstance(source, bytes) else str(source))
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
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageError(f"{name}: image too large ({w}x{h} > {MAX_PIXELS:,} pixels); downscale it first")
            file_mode = img.mode
            drafted = 1
            if reduction(w, h, max_side) > 1:  # JPEG: decode at 1/2, 1/4 or 1/8 scale, not below the target size
                k = reduction(w, h, max_side)
                box = img.draft(None, (math.ceil(w / k), math.ceil(h / k)))  # other formats: None, a no-op
                drafted = round(w / box[1][2]) if box else 1
            rest = reduction(*img.size, max_side)
            cost = decode_cost(*img.size, img.mode)
            with budget.hold(cost) if budget else nullcontext():
                pixels, rotated = _decode(img, mode, rest)
                if cost >= TRIM_BYTES:
                    _trim()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (or an unsupported format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageError(f"{name}: corrupt or truncated image ({reason})") from None
    if rotated:
        w, h = h, w
    return Decoded(pixels, w, h, file_mode, 1.0 / (drafted * rest))


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): their allocators return memory themselves
        return None


def _trim() -> None:
    """Hand the heap memory a large decode freed back to the OS (glibc's ``malloc_trim``; a no-op elsewhere).

    Why: glibc gives each thread its own heap arena and keeps freed blocks below 32 MB (PIL allocates images in
    16 MB blocks) inside the arena for reuse, so every detection thread that once decoded a 100 MP image would keep
    ~0.4 GB of it: peak memory grew with the number of workers (0.87 GB instead of 0.53 GB with 4 workers on four
    10000x9999 PNGs). Trimming releases those pages; it changes no setting.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _decode(img: Image.Image, mode: str, factor: int) -> tuple[np.ndarray, bool]:
    """Decode at full size (the one full-size buffer), then convert and reduce by ``factor`` strip by strip of
    rows: a 100 MP RGBA image needs its own 400 MB and a few MB more, where converting or reducing it whole would
    need a second full-size copy (PIL's ``reduce`` premultiplies alpha into one). Returns the pixels and whether
    the EXIF orientation turned the image by 90 degrees."""
    img.load()
    orientation = _ORIENTATION.get(img.getexif().get(0x0112, 1))  # after load: a PNG's eXIf may follow its pixels
    to_uint8 = _uint8_converter(img) if img.mode in _HIGH_DEPTH else None
    w, h = img.size
    rows = factor * max(1, _STRIP_ROWS // factor)  # a multiple of factor: strips reduce exactly as the whole would
    pixels = None
    for y in range(0, h, rows):
        strip = _eight_bit(img if rows >= h else img.crop((0, y, w, min(h, y + rows))), to_uint8, mode)
        part = np.asarray(strip.reduce(factor) if factor > 1 else strip)
        if pixels is None:
            pixels = np.empty((math.ceil(h / factor), *part.shape[1:]), np.uint8)
        pixels[y // factor:y // factor + len(part)] = part
    img.close()  # frees the full-size decode now, not when the caller's `with` ends
    if orientation is not None:
        pixels = np.array(Image.fromarray(pixels).transpose(orientation))
    rotated = orientation in (Image.Transpose.TRANSPOSE, Image.Transpose.ROTATE_270, Image.Transpose.TRANSVERSE,
                              Image.Transpose.ROTATE_90)
    return pixels, rotated


def read_image(source: str | os.PathLike | bytes, mode: str = "rgb", max_side: int | None = None) -> np.ndarray:
    """Decode an image file (or its bytes) to a uint8 array: HxWx3 for mode 'rgb', HxW for mode 'gray'.

    ``max_side`` reduces larger images by the smallest integer factor that fits them within it (see
    :func:`decode_image`, which also returns the original size and the scale). Raises ImageError with a one-line
    message for missing, empty, corrupt, truncated, non-image or oversized input.
    """
    return decode_image(source, mode, max_side).pixels
