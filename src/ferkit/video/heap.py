"""glibc's heap over a long video: fewer arenas and freed memory handed back, so peak RSS stays flat with length.

Why: a video run allocates and frees a frame-sized buffer many times a second in several threads (decoding,
detection, classification, the annotated.mp4 encoder). glibc gives each thread that allocates its own arena (up to
8 per core) and keeps freed blocks in them for reuse; fragmentation across those arenas made peak RSS creep up with
video length (+10-19% from 10 s to 10 min, native memory, not Python objects: docs/DESIGN.md). Two calls bound it:
``mallopt(M_ARENA_MAX, 2)`` when a run starts (threads created afterwards share two arenas; the setting is
process-wide, as ``MALLOC_ARENA_MAX=2`` in the environment would be) and ``malloc_trim(0)`` every few seconds of
the run (returns the free pages at the top of each arena and the unused ones inside). Both are no-ops where libc is
not glibc (macOS, Windows, musl), whose allocators behave differently.
"""

from __future__ import annotations

import ctypes
import functools

M_ARENA_MAX = -8
"""mallopt's parameter number for the arena limit (glibc's malloc.h)."""
M_MMAP_THRESHOLD = -3
"""mallopt's parameter number for the size from which a block is its own mmap (glibc's malloc.h)."""
MMAP_THRESHOLD = 256 * 1024


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both exist only in glibc
        return libc
    except (OSError, AttributeError):
        return None


def limit_arenas(arenas: int = 2) -> bool:
    """Let threads created from now on share at most ``arenas`` heap arenas, and give every block of 256 KB or
    more (a frame, a crop batch) its own mmap, returned to the OS when freed; False where that is not glibc.

    The fixed mmap threshold matters most: glibc raises its threshold to the size of each mmapped block freed
    (up to 32 MB), so after the first frame is freed every later frame buffer came from the heap, in between the
    run's long-lived small objects, and the heap grew with the holes they left (main arena +60 MB over 10 min)."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, arenas)
                and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def trim() -> None:
    """Hand the heap's free pages back to the OS (glibc ``malloc_trim(0)``; a no-op elsewhere)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
