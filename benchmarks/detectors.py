"""Face detector benchmark: faces found vs faces a person counts, false positives, eye landmarks, ms per photo.

    python benchmarks/detectors.py [--photos DIR] [--backends dlib,haar,...] [--repeats 5] [--out FILE]
                                   [--annotate DIR]

Runs every installed backend of ``ferkit.faces`` (or those named) with its default settings on every photo in
shared/data/photos, matches detections to the hand-labelled faces below and prints a markdown table (also written to
``--out``). ``--annotate DIR`` saves each photo with boxes: green = labelled face found, red = false positive,
yellow = an optional face (see below) found, blue cross = labelled face missed.

MediaPipe pins numpy<2, so it lives in its own environment; run the script there too to get its rows, e.g.
``PYTHONPATH=src /work/venv-mp/bin/python benchmarks/detectors.py``.

Timing: ``detect()`` on the decoded image (decoding not included; internal downscaling included), one warm-up call,
then ``--repeats`` timed calls per photo; the table gives the median and the mean over photos of the per-photo
medians, and the median over photos of the per-photo fastest call (robust to other load on the machine).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

# Hand-labelled faces: image file -> {"faces": [(cx, cy), ...], "optional": [(cx, cy), ...]} in original-image pixels
# (after EXIF orientation), one point near the centre of each face.
#
# How they were counted: each photo was viewed full size (group photos also zoomed 3.5x) and every face a person sees
# clearly was counted. Rule: a face counts when both eyes and the mouth are visible in the frame and it is at least
# ~20 px tall in the original image, whatever its expression, pose up to about three-quarter view, or glasses.
# Faces cut by the frame count when both eyes are inside it (obama_partial_face*.jpg: one face each).
# "optional" faces are tiny (< ~20 px) background faces and faces cut by the frame with an eye missing: a detection
# on one is neither a hit nor a false positive, and missing one is not a miss.
# The points were placed at the centres of boxes that were checked by eye on annotated images (all backends' boxes
# drawn); the optional points were read off zoomed views.
# Total: 43 counted faces in 26 photos (19 single portraits, 3 two- and three-person photos, 4 PASCAL-VOC groups).
GROUND_TRUTH: dict[str, dict[str, list[tuple[int, int]]]] = {
    "dlib__2008_001009.jpg": {"faces": [(180, 118), (171, 251)], "optional": []},
    "dlib__2008_001322.jpg": {"faces": [(142, 200), (264, 250), (390, 201)], "optional": []},
    "dlib__2008_002079.jpg": {
        "faces": [(64, 214), (82, 149), (140, 148), (364, 156), (424, 184), (462, 196)],
        # bartender and three diners in the background, 10-15 px faces
        "optional": [(284, 43), (421, 86), (467, 77), (480, 80)],
    },
    "dlib__2008_002470.jpg": {
        "faces": [(77, 178), (164, 184), (196, 100), (254, 92), (300, 208), (350, 77)], "optional": []},
    "dlib__Tom_Cruise_avp_2014_4.jpg": {"faces": [(262, 510)], "optional": [(548, 560)]},  # blurred half face, right
    "face_recognition__alex-lacamoire.png": {"faces": [(262, 228)], "optional": []},
    "face_recognition__alex_lacamoire1.jpg": {"faces": [(791, 339)], "optional": []},
    "face_recognition__alex_lacamoire_img1.jpg": {"faces": [(446, 379)], "optional": []},
    "face_recognition__biden.jpg": {"faces": [(580, 402)], "optional": []},
    "face_recognition__biden2.jpg": {"faces": [(642, 498)], "optional": []},
    "face_recognition__johnsnow_test1.jpg": {"faces": [(366, 276)], "optional": []},
    "face_recognition__kit_harington_john1.jpeg": {"faces": [(746, 165)], "optional": []},
    "face_recognition__kit_harington_john2.jpeg": {"faces": [(384, 184)], "optional": []},
    "face_recognition__kit_with_rose.jpg": {"faces": [(122, 170), (302, 141)], "optional": [(492, 145)]},
    "face_recognition__lin-manuel-miranda.png": {"faces": [(422, 320)], "optional": []},
    "face_recognition__obama-1080p.jpg": {"faces": [(1003, 288)], "optional": []},
    "face_recognition__obama.jpg": {"faces": [(484, 272)], "optional": []},
    "face_recognition__obama1.jpg": {"faces": [(756, 426)], "optional": []},
    "face_recognition__obama2.jpg": {"faces": [(311, 446)], "optional": [(587, 493)]},  # half face cut at right edge
    "face_recognition__obama3.jpg": {"faces": [(796, 449)], "optional": []},
    "face_recognition__obama_and_biden.jpg": {
        # Biden, Obama, and the girl at the lower right (looking down, but eyes and mouth visible)
        "faces": [(838, 544), (1244, 500), (1675, 1144)], "optional": [(1967, 711)]},  # woman cut at right edge
    "face_recognition__obama_partial_face.jpg": {"faces": [(104, 272)], "optional": []},
    "face_recognition__obama_partial_face2.jpg": {"faces": [(458, 272)], "optional": []},
    "face_recognition__rose_leslie_img1.jpg": {"faces": [(755, 247)], "optional": []},
    "face_recognition__rose_leslie_img2.jpg": {"faces": [(294, 324)], "optional": []},
    "face_recognition__two_people.jpg": {"faces": [(322, 126), (882, 158)], "optional": []},
}

DEFAULT_PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "photos"


def _inside(box, point) -> bool:
    x, y, w, h = box
    return x <= point[0] < x + w and y <= point[1] < y + h


def match(detections, labels) -> dict:
    """Greedy matching: a detection hits a labelled face when its box contains the face's point (each face once,
    nearest box centre first); otherwise it is 'optional' if it contains an optional point, else a false positive."""
    faces, optional = list(labels["faces"]), list(labels["optional"])
    pairs = []
    for i, d in enumerate(detections):
        cx, cy = d.box[0] + d.box[2] / 2, d.box[1] + d.box[3] / 2
        for j, p in enumerate(faces):
            if _inside(d.box, p):
                pairs.append((np.hypot(cx - p[0], cy - p[1]) / max(d.box[2], 1), i, j))
    pairs.sort()
    used_d, used_f = set(), set()
    for _, i, j in pairs:
        if i not in used_d and j not in used_f:
            used_d.add(i)
            used_f.add(j)
    status = []
    for i, d in enumerate(detections):
        if i in used_d:
            status.append("hit")
        elif any(_inside(d.box, p) for p in optional):
            status.append("optional")
        else:
            status.append("fp")
    missed = [p for j, p in enumerate(faces) if j not in used_f]
    return {"status": status, "missed": missed}


def annotate(image: np.ndarray, detections, result, path: Path) -> None:
    colours = {"hit": (0, 200, 0), "fp": (0, 0, 255), "optional": (0, 220, 220)}  # BGR
    vis = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    t = max(1, max(image.shape[:2]) // 400)
    for d, s in zip(detections, result["status"]):
        x, y, w, h = d.box
        cv2.rectangle(vis, (x, y), (x + w, y + h), colours[s], t)
        for name, (px, py) in d.landmarks.items():
            if name.endswith("_eye"):
                cv2.circle(vis, (int(round(px)), int(round(py))), 2 * t,
                           (255, 255, 0) if name == "right_eye" else (0, 255, 255), -1)
    for px, py in result["missed"]:
        cv2.drawMarker(vis, (px, py), (255, 0, 0), cv2.MARKER_CROSS, 20 * t, 2 * t)
    cv2.imwrite(str(path), vis)


def run(photos: Path, backends: list[str], repeats: int, annotate_dir: Path | None) -> tuple[str, dict]:
    from ferkit.faces import available_detectors, get_detector
    from ferkit.io import read_image

    files = sorted(f for f in os.listdir(photos) if f in GROUND_TRUTH)
    unknown = sorted(f for f in os.listdir(photos) if f not in GROUND_TRUTH and not f.endswith(".md"))
    if unknown:
        print(f"note: {len(unknown)} photos without labels are skipped: {', '.join(unknown)}", file=sys.stderr)
    images = {f: read_image(photos / f) for f in files}
    n_faces = sum(len(GROUND_TRUTH[f]["faces"]) for f in files)

    results: dict[str, dict] = {}
    for name in backends:
        det = get_detector(name)
        hits = fps = opt = eyes = n_det = 0
        per_photo, times, best = {}, [], []
        for f in files:
            img = images[f]
            dets = det.detect(img)  # warm-up (and the result we score)
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                det.detect(img)
                ts.append((time.perf_counter() - t0) * 1000)
            times.append(statistics.median(ts))
            best.append(min(ts))
            r = match(dets, GROUND_TRUTH[f])
            h = r["status"].count("hit")
            hits += h
            fps += r["status"].count("fp")
            opt += r["status"].count("optional")
            n_det += len(dets)
            eyes += sum(1 for d, s in zip(dets, r["status"]) if s == "hit" and d.eyes is not None)
            per_photo[f] = (h, r["status"].count("fp"))
            if annotate_dir is not None:
                annotate_dir.mkdir(parents=True, exist_ok=True)
                annotate(img, dets, r, annotate_dir / f"{name}__{Path(f).stem}.png")
        results[name] = {
            "found": hits, "missed": n_faces - hits, "fp": fps, "optional": opt, "eyes": eyes, "detections": n_det,
            "ms_median": statistics.median(times), "ms_mean": statistics.mean(times),
            "ms_best": statistics.median(best), "per_photo": per_photo,
        }
        print(f"{name}: {hits}/{n_faces} faces, {fps} false positives, {statistics.median(times):.1f} ms median",
              file=sys.stderr)

    command = "python benchmarks/detectors.py " + " ".join(sys.argv[1:])
    lines = [
        "## Face detectors", "",
        f"Measured with `{command.strip()}`.", "",
        f"Face detectors on {len(files)} photos ({n_faces} faces counted by hand; see GROUND_TRUTH in "
        f"benchmarks/detectors.py). Defaults of each backend; ms = median of {repeats} runs per photo "
        "(best = fastest of them: less sensitive to other load on the machine), then median/mean over photos.",
        "",
        "| backend | faces found / counted | missed | false positives | optional faces found | eyes on found faces "
        "| ms/photo median | ms/photo mean | ms/photo best |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['found']}/{n_faces} | {r['missed']} | {r['fp']} | {r['optional']} "
                     f"| {r['eyes']}/{r['found']} | {r['ms_median']:.1f} | {r['ms_mean']:.1f} | {r['ms_best']:.1f} |")
    lines += ["", "Per photo (found/counted, +false positives):", "",
              "| photo | size | " + " | ".join(results) + " |", "|---|---|" + "---|" * len(results)]
    for f in files:
        h, w = images[f].shape[:2]
        cells = []
        for r in results.values():
            found, fp = r["per_photo"][f]
            cells.append(f"{found}/{len(GROUND_TRUTH[f]['faces'])}" + (f" +{fp}" if fp else ""))
        lines.append(f"| {f} | {w}x{h} | " + " | ".join(cells) + " |")
    import cv2 as _cv2

    env = (f"Python {platform.python_version()}, numpy {np.__version__}, opencv {_cv2.__version__}, "
           f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
           f"load average at start {os.getloadavg()[0]:.2f}")
    lines += ["", env, f"installed backends: {', '.join(available_detectors())}"]
    return "\n".join(lines) + "\n", results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="folder of labelled photos")
    p.add_argument("--backends", default="", help="comma-separated backends (default: every installed one)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per photo (median)")
    p.add_argument("--out", type=Path, help="also write the markdown table here")
    p.add_argument("--annotate", type=Path, help="save annotated photos in this folder")
    a = p.parse_args(argv)
    if not a.photos.is_dir():
        print(f"detectors.py: no photo folder {a.photos} (use --photos)", file=sys.stderr)
        return 1
    from ferkit.faces import available_detectors

    backends = [b.strip() for b in a.backends.split(",") if b.strip()] or available_detectors()
    table, _ = run(a.photos, backends, a.repeats, a.annotate)
    print(table)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
