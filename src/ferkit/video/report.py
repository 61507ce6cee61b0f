"""report.html: one self-contained page (plots and thumbnails embedded as data URIs) that opens from disk in any
browser, no server and no network."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from ferkit.io import atomic_write
from ferkit.video.results import GROUPS, VideoResult


def _data_uri(path: Path, mime: str) -> str | None:
    if not path.exists():
        return None
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(out: Path, result: VideoResult) -> Path:
    clip = result.clip
    parts = [f"<h1>ferkit video: {html.escape(Path(result.source).name)}</h1>",
             f"<p>{result.frames} frames, {result.duration_s:.1f} s at {result.fps:.2f} fps; model "
             f"{html.escape(str(result.settings.get('model')))}, detector "
             f"{html.escape(str(result.settings.get('detector')))}.</p>"]
    if result.error:
        parts.append(f"<p class=err>{html.escape(result.error)}</p>")
    if clip.get("faces_seen"):
        shares = ", ".join(f"{g} {clip['group_shares'][g]:.0%}" for g in GROUPS)
        parts.append(f"<p><b>Clip:</b> dominant emotion {html.escape(clip['dominant_emotion'])}, group "
                     f"{html.escape(clip['group'])} ({shares}); {clip['mean_faces_in_view']} faces in view on "
                     "average.</p>")
    else:
        parts.append("<p><b>No face was found in this video.</b></p>")
    timeline = _data_uri(out / "timeline.png", "image/png")
    if timeline:
        parts.append(f'<img class=plot alt="timeline" src="{timeline}">')
    if result.people:
        rows = []
        for p in result.people:
            thumb = _data_uri(out / p.thumbnail, "image/jpeg") if p.thumbnail else None
            img = f'<img class=thumb src="{thumb}">' if thumb else ""
            shares = " ".join(f"{k} {v:.0%}" for k, v in sorted(p.emotion_shares.items(), key=lambda kv: -kv[1])
                              if v >= 0.01)
            rows.append(f"<tr><td>{img}</td><td>P{p.person}</td><td>{p.seconds:.1f}</td><td>{p.first_s:.1f}–"
                        f"{p.last_s:.1f}</td><td>{html.escape(p.dominant_emotion)}</td><td>"
                        + " ".join(f"{g} {p.group_shares[g]:.0%}" for g in GROUPS)
                        + f"</td><td>{html.escape(shares)}</td></tr>")
        parts.append("<h2>People</h2><table><thead><tr><th></th><th>person</th><th>seconds on screen</th>"
                     "<th>in view (s)</th><th>dominant</th><th>groups</th><th>emotions</th></tr></thead><tbody>"
                     + "".join(rows) + "</tbody></table>")
    if result.moments:
        parts.append("<h2>Low and high moments</h2>"
                     + _table(result.moments, ["kind", "start_s", "end_s", "valence"])
                     + "<p>valence = share positive − share negative of the faces in view, averaged over the "
                       "window.</p>")
    if result.minutes:
        parts.append("<h2>Per minute</h2>"
                     + _table(result.minutes, ["minute", "faces", "max_faces", *GROUPS, *result.labels]))
    parts.append("<h2>Settings</h2>" + _table([{"setting": k, "value": v} for k, v in result.settings.items()],
                                               ["setting", "value"]))
    parts.append("<p class=note>Facial expressions are not feelings; the model is wrong on about 3 faces in 10. "
                 "Do not use this to judge individuals. In the EU, inferring emotions in workplaces and education "
                 "institutions is prohibited except for medical or safety reasons (AI Act, Art. 5(1)(f)).</p>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
             "font-size:13px;text-align:left}img.plot{max-width:100%}img.thumb{height:64px}"
             ".note{color:#666;font-size:12px}.err{color:#b00}")
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>ferkit video report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")
    path = out / "report.html"
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path
