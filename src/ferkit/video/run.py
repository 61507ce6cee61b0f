"""`ferkit video` over files, folders and a camera: one output folder per video, one line per bad input, the
other videos still processed."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ferkit.errors import FerkitError
from ferkit.video.pipeline import VideoOptions, VideoRun
from ferkit.video.results import VideoResult
from ferkit.video.source import iter_video_paths


@dataclass
class VideosSummary:
    results: list[VideoResult] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    """Wall-clock seconds spent (all videos)."""


def _out_dirs(files: list[Path], out: Path | None) -> list[Path | None]:
    """One video writes into ``out``; several write into ``out/<file stem>`` (made unique with a counter)."""
    if out is None:
        return [None] * len(files)
    if len(files) == 1:
        return [out]
    taken: dict[str, int] = {}
    dirs = []
    for f in files:
        n = taken.get(f.stem, 0)
        taken[f.stem] = n + 1
        dirs.append(out / (f.stem if n == 0 else f"{f.stem}_{n + 1}"))
    return dirs


def run_videos(paths: list[str | os.PathLike], recognizer, out: str | os.PathLike | None, options: VideoOptions,
               on_error: Callable[[str], None] | None = None, on_frame: Callable | None = None,
               progress: bool = True) -> VideosSummary:
    """Analyze every video of ``paths`` (files and folders). ``on_error`` gets one line per bad input or ignored
    file; ``on_frame(run, frame_result)`` is called after each frame (the CLI prints the results to the screen)."""
    from tqdm import tqdm

    summary = VideosSummary()

    def ignored(p: Path) -> None:
        summary.ignored.append(str(p))
        if on_error:
            on_error(f"ignored {p}: not a video file")

    files = list(iter_video_paths(paths, on_ignored=ignored))
    t0 = time.perf_counter()
    for path, target in zip(files, _out_dirs(files, Path(out) if out is not None else None)):
        try:
            run = VideoRun(recognizer, path, options, target, on_warning=None)
        except FerkitError as exc:
            summary.failed.append(str(exc))
            if on_error:
                on_error(str(exc))
            continue
        total = run.source.frame_count
        if total is not None and options.end is not None:
            total = min(total, int(options.end * run.fps)) - int(options.start * run.fps)
        bar = tqdm(total=total, disable=not progress, desc=path.name[:30], unit="frame", leave=False)
        for frame in run:
            bar.update(1)
            if on_frame is not None:
                on_frame(run, frame)
        bar.close()
        result = run.result()
        summary.results.append(result)
        summary.frames += result.frames
        if result.error:
            summary.failed.append(result.error)
            if on_error:
                on_error(result.error)
    summary.seconds = time.perf_counter() - t0
    return summary
