"""`ferkit rank`: order photos by their faces' expressions, for picking photos for a book (seed 003's use case).

Each photo gets one score in [0, 1] from its faces (see :func:`photo_score`); photos without faces get no score and
rank last. The analysis itself is ``ferkit analyze``'s runner (:func:`ferkit.analyze.analyze_paths`), so ranking a
folder into ``--out`` also resumes, and bad files are reported one line each. Outputs: ``ranking.csv`` (atomic) and
``contact_sheet.jpg``, a grid of the top photos with rank, score and face count drawn under each.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ferkit.analyze import AnalyzeSummary, run_analysis
from ferkit.io import atomic_write, atomic_write_csv
from ferkit.journal import open_journal, recognizer_settings
from ferkit.annotate import GROUP_COLOURS
from ferkit.errors import UserInputError
from ferkit.labels import VALENCE_3, try_canonical
from ferkit.recognizer import Recognizer
from ferkit.results import Face, ImageResult

WEIGHTS = ("area-confidence", "area", "confidence", "none")
RANKING_CSV = "ranking.csv"
CONTACT_SHEET = "contact_sheet.jpg"
RANKING_COLUMNS = ["rank", "source", "score", "faces", "emotions", "largest_face_px", "width", "height"]


def resolve_target(by: str, labels: Sequence[str]) -> str:
    """The canonical target of a score: 'positive' or 'negative' (groups), 'group:neutral' (the neutral group:
    neutral + surprise), or one of the model's labels ('happy'; aliases such as 'happiness' work; plain 'neutral'
    is the label). Raises UserInputError (a ValueError) naming the choices for anything else."""
    key = by.strip().lower()
    if key.startswith("group:"):
        name = key.split(":", 1)[1]
        if name in VALENCE_3:
            return f"group:{name}"
    elif key in ("positive", "negative"):
        return key
    else:
        name = try_canonical(key)
        if name is not None and name in labels:
            return name
    raise UserInputError(f"cannot rank by {by!r}: choose positive, negative, group:neutral or one of the model's labels "
                     f"({', '.join(labels)})")


def face_value(face: Face, target: str) -> float:
    """The probability a face gives the target: the group's summed probability for a group (positive = happy;
    neutral = neutral + surprise; negative = angry, disgust, fear, sad, contempt), else the label's own."""
    group = target.split(":", 1)[1] if target.startswith("group:") else target
    if group in ("positive", "negative") or target.startswith("group:"):
        return face.group_scores[group]
    return face.scores.get(target, 0.0)


def face_weight(face: Face, weight: str = "area-confidence") -> float:
    """How much a face counts within its photo: area = w*h in pixels, confidence = the top label's probability."""
    if weight not in WEIGHTS:
        raise ValueError(f"weight must be one of {WEIGHTS}, not {weight!r}")
    w = 1.0
    if weight in ("area-confidence", "area"):
        w *= max(face.box[2], 1) * max(face.box[3], 1)
    if weight in ("area-confidence", "confidence"):
        w *= face.confidence
    return w


def photo_score(faces: Sequence[Face], target: str = "positive", weight: str = "area-confidence") -> float | None:
    """A photo's score: the weighted mean, over its faces, of the probability each face gives the target.

        score = sum_f w_f * p_f(target) / sum_f w_f

    p_f(target) is the face's probability of the target label, or of the group when the target is a group
    (positive = happy; group:neutral = neutral + surprise; negative = the rest; see :func:`face_value`).
    The weight w_f is, by ``weight``: ``area-confidence`` (default) = box area in pixels x the face's top-label
    probability, so big faces in front count more than small faces in the background and faces the model is sure
    about count more than unclear ones; ``area`` = box area; ``confidence`` = top-label probability; ``none`` = 1
    (every face counts the same).
    The score is in [0, 1] (1: every face shows the target for sure). A photo without faces has no score (None).
    """
    if not faces:
        return None
    weights = [face_weight(f, weight) for f in faces]
    total = sum(weights)
    if total <= 0:
        weights, total = [1.0] * len(faces), float(len(faces))
    return sum(w * face_value(f, target) for w, f in zip(weights, faces)) / total


@dataclass
class RankedPhoto:
    rank: int
    result: ImageResult
    score: float | None

    def row(self) -> dict:
        faces = self.result.faces
        return {"rank": self.rank, "source": self.result.source,
                "score": "" if self.score is None else round(self.score, 6), "faces": len(faces),
                "emotions": ";".join(f.emotion for f in faces),
                "largest_face_px": max((f.box[2] * f.box[3] for f in faces), default=0),
                "width": self.result.width, "height": self.result.height}


def rank_results(results: Iterable[ImageResult], target: str = "positive",
                 weight: str = "area-confidence") -> list[RankedPhoto]:
    """Best first: by score (descending), then more faces, then source name; photos without faces last (by name)."""
    scored = [(r, photo_score(r.faces, target, weight)) for r in results if not r.error]
    with_faces = sorted((x for x in scored if x[1] is not None), key=lambda x: (-x[1], -len(x[0].faces), x[0].source))
    without = sorted((x for x in scored if x[1] is None), key=lambda x: x[0].source)
    return [RankedPhoto(i + 1, r, s) for i, (r, s) in enumerate(with_faces + without)]


def _thumbnail(photo: RankedPhoto, cell: int) -> np.ndarray:
    """The photo fitted into a cell x cell square (letterboxed on dark grey), face boxes coloured by group."""
    from ferkit.io import ImageError, read_image

    tile = np.full((cell, cell, 3), 40, np.uint8)
    try:
        image = read_image(photo.result.source, "rgb", max_side=2 * cell)  # reduced while decoding
    except ImageError:
        cv2.putText(tile, "unreadable", (10, cell // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (200, 200, 200), 1, cv2.LINE_AA)
        return tile
    h, w = photo.result.height or image.shape[0], photo.result.width or image.shape[1]  # the boxes' pixels
    s = cell / max(h, w)
    tw, th = max(1, round(w * s)), max(1, round(h * s))
    small = cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA if tw < image.shape[1] else cv2.INTER_LINEAR)
    for face in photo.result.faces:
        x, y, fw, fh = (round(v * s) for v in face.box)
        cv2.rectangle(small, (x, y), (x + fw, y + fh), GROUP_COLOURS[face.group], 2)
    y0, x0 = (cell - th) // 2, (cell - tw) // 2
    tile[y0:y0 + th, x0:x0 + tw] = small
    return tile


def contact_sheet(ranking: Sequence[RankedPhoto], top: int = 12, columns: int = 4, cell: int = 256,
                  caption: int = 28) -> np.ndarray:
    """An RGB grid of the first ``top`` photos: each a cell x cell thumbnail above a caption bar reading
    '#rank  score  N faces'. Size: min(top, n, columns) * cell wide, rows * (cell + caption) high."""
    shown = list(ranking[:top])
    if not shown:
        raise ValueError("nothing to draw: no photo was analysed")
    cols = min(columns, len(shown))
    rows = math.ceil(len(shown) / cols)
    sheet = np.full((rows * (cell + caption), cols * cell, 3), 255, np.uint8)
    for i, photo in enumerate(shown):
        r, c = divmod(i, cols)
        y, x = r * (cell + caption), c * cell
        sheet[y:y + cell, x:x + cell] = _thumbnail(photo, cell)
        n = len(photo.result.faces)
        score = "no face" if photo.score is None else f"{photo.score:.2f}"
        text = f"#{photo.rank}  {score}  {n} face{'s' if n != 1 else ''}" if n else f"#{photo.rank}  no face"
        cv2.putText(sheet, text, (x + 6, y + cell + caption - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (20, 20, 20), 1,
                    cv2.LINE_AA)
        cv2.rectangle(sheet, (x, y), (x + cell - 1, y + cell + caption - 1), (200, 200, 200), 1)
    return sheet


def write_contact_sheet(path: Path, sheet: np.ndarray) -> None:
    """JPEG (or PNG, by the suffix) written atomically."""
    ext = path.suffix.lower() if path.suffix.lower() in (".jpg", ".jpeg", ".png") else ".jpg"
    ok, data = cv2.imencode(ext, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise OSError(f"{path}: could not encode the contact sheet")
    atomic_write(path, lambda tmp: tmp.write_bytes(data.tobytes()))


@dataclass
class RankSummary:
    analysis: AnalyzeSummary
    ranking: list[RankedPhoto]
    target: str
    weight: str
    csv_path: Path | None = None
    sheet_path: Path | None = None

    @property
    def no_face(self) -> list[RankedPhoto]:
        return [p for p in self.ranking if p.score is None]


def rank_paths(paths: Sequence[str | os.PathLike], recognizer: Recognizer, out: str | os.PathLike | None = None,
               by: str = "positive", weight: str = "area-confidence", top: int = 12, columns: int = 4,
               annotated: bool = False, on_error: Callable[[str], None] | None = None,
               progress: bool = True, force: bool = False) -> RankSummary:
    """Analyse files and folders (resumable with ``out``) and rank the photos; with ``out``, write ranking.csv and
    contact_sheet.jpg there next to analyze's results.jsonl/results.json/faces.csv, all under the folder's lock.
    ``force`` as in :func:`ferkit.analyze.analyze_paths`."""
    target = resolve_target(by, recognizer.labels)
    if weight not in WEIGHTS:
        raise ValueError(f"weight must be one of {WEIGHTS}, not {weight!r}")
    if out is None:
        analysis = run_analysis(paths, recognizer, None, annotated, on_error, progress)
        return RankSummary(analysis, rank_results(analysis.results, target, weight), target, weight)
    with open_journal(out, recognizer_settings(recognizer), force) as journal:
        analysis = run_analysis(paths, recognizer, journal, annotated, on_error, progress)
        # the journal may hold photos from earlier runs into the same folder: rank only what was asked for now
        wanted = set(analysis.sources)
        results = [r for r in analysis.results if r.source in wanted]
        summary = RankSummary(analysis, rank_results(results, target, weight), target, weight)
        summary.csv_path = journal.out_dir / RANKING_CSV
        atomic_write_csv(summary.csv_path, RANKING_COLUMNS, (p.row() for p in summary.ranking))
        if summary.ranking and top > 0:
            summary.sheet_path = journal.out_dir / CONTACT_SHEET
            write_contact_sheet(summary.sheet_path, contact_sheet(summary.ranking, top, columns))
    return summary
