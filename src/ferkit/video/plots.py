"""timeline.png: one lane per person (their smoothed emotion each second) above the group's positive / neutral /
negative shares per second and the number of faces in view; the lecture view's low and high moments are shaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ferkit.io import atomic_write
from ferkit.video.results import GROUPS

EMOTION_COLOURS = {"angry": "#d62728", "disgust": "#8c564b", "fear": "#9467bd", "happy": "#2ca02c",
                   "sad": "#1f77b4", "surprise": "#ff7f0e", "neutral": "#b0b0b0", "contempt": "#e377c2"}
GROUP_COLOURS = {"positive": "#2ca02c", "neutral": "#b0b0b0", "negative": "#d62728"}
MAX_LANES = 24


def label_spans(by_second: dict[int, str]) -> dict[str, list[tuple[int, int]]]:
    """label -> (start, length) runs of consecutive seconds with that label: one artist per person and label, not
    one per second, so drawing a long video's timeline costs memory and time by its changes, not its length."""
    spans: dict[str, list[tuple[int, int]]] = {}
    run_label, run_start, run_end = None, 0, 0
    for sec in sorted(by_second):
        label = by_second[sec]
        if label == run_label and sec == run_end:
            run_end += 1
            continue
        if run_label is not None:
            spans.setdefault(run_label, []).append((run_start, run_end - run_start))
        run_label, run_start, run_end = label, sec, sec + 1
    if run_label is not None:
        spans.setdefault(run_label, []).append((run_start, run_end - run_start))
    return spans


def plot_timeline(path: Path, lanes: dict[int, dict[int, str]], seconds: list[dict[str, Any]], labels: list[str],
                  moments: list[dict[str, Any]] | None = None, title: str = "") -> Path:
    """Write the timeline; ``lanes`` person -> second -> label (empty in aggregate-only mode). Drawn on a bare
    matplotlib ``Figure``, not pyplot, so the process's matplotlib backend is left alone."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    if len(lanes) > MAX_LANES:  # the people longest on screen
        keep = sorted(lanes, key=lambda p: -len(lanes[p]))[:MAX_LANES]
        lanes = {p: lanes[p] for p in sorted(keep)}
    end = max([r["second"] + 1 for r in seconds] + [1])
    n_lanes = len(lanes)
    heights = ([max(1.0, 0.35 * n_lanes)] if n_lanes else []) + [1.6, 0.8]
    fig = Figure(figsize=(11, 1.2 + sum(heights)))
    axes = fig.subplots(len(heights), 1, sharex=True, gridspec_kw={"height_ratios": heights}, squeeze=False)
    axes = axes[:, 0]
    if n_lanes:
        ax = axes[0]
        for row, (pid, by_second) in enumerate(sorted(lanes.items())):
            for label, spans in label_spans(by_second).items():
                ax.broken_barh(spans, (row - 0.4, 0.8), color=EMOTION_COLOURS.get(label, "#444444"))
        ax.set_yticks(range(n_lanes), [f"P{p}" for p in sorted(lanes)])
        ax.set_ylim(n_lanes - 0.5, -0.5)
        ax.set_ylabel("person")
        ax.legend(handles=[Patch(color=EMOTION_COLOURS.get(k, "#444444"), label=k) for k in labels],
                  loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax_g, ax_n = axes[-2], axes[-1]
    if seconds:  # each second drawn as a step from its start to its end (the last row repeated at the end)
        xs = [r["second"] for r in seconds] + [seconds[-1]["second"] + 1]
        rows = seconds + seconds[-1:]
        ax_g.stackplot(xs, *[[r[g] for r in rows] for g in GROUPS], labels=GROUPS, step="post",
                       colors=[GROUP_COLOURS[g] for g in GROUPS])
        ax_n.step(xs, [r["faces"] for r in rows], where="post", color="black", lw=1)
        ax_g.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax_g.set_ylim(0, 1)
    ax_g.set_ylabel("group share")
    ax_n.set_ylabel("faces")
    ax_n.set_xlabel("seconds")
    ax_n.set_ylim(bottom=0)
    for m in moments or []:
        colour = "#d62728" if m["kind"] == "low" else "#2ca02c"
        for ax in axes:
            ax.axvspan(m["start_s"], m["end_s"], color=colour, alpha=0.12, lw=0)
        ax_g.text(m["start_s"], 1.02, m["kind"], color=colour, fontsize=7, transform=ax_g.get_xaxis_transform())
    axes[-1].set_xlim(0, end)
    if title:
        axes[0].set_title(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    return path
