"""`ferkit video --engine ray` on a real local Ray cluster (2 CPUs, loopback): the shared clip and a video of real
photos (a group, a cut to a portrait, the group again), cut into small segments so that people cross segment
boundaries, compared with single-process runs of the same videos; bad videos among good ones.

Tolerance (docs/SCALING.md "Videos"): ids, people and detection-frame scores equal; tracker-frame boxes and scores
near boundaries differ a little, because a segment's Kalman state starts only ``overlap`` before its frames.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import DATA, PHOTOS, need
from tests.video_clips import count_frames, group_cut_return, read_csv, write_video

pytest.importorskip("ray", reason="needs the ray extra: pip install -e '.[ray]'")
pytest.importorskip("supervision", reason="needs the video extra: pip install -e '.[video]'")

CLIP = DATA / "videos" / "huimiang__1543684773.avi"
OUTPUTS = ("frames.csv", "seconds.csv", "people.csv", "people.json", "timeline.png", "annotated.mp4",
           "summary.json", "report.html", "thumbnails/person_1.jpg")
SPEC = {"model": "default", "detector": "auto", "min_face": 0, "tta": "flip"}


@pytest.fixture(scope="module")
def cluster():
    from ferkit.scale.cluster import ray_session

    with ray_session(None, "tests", num_cpus=2) as ray:
        yield ray


@pytest.fixture(scope="module")
def recognizer():
    from ferkit.recognizer import Recognizer

    return Recognizer(workers=1)


def single(recognizer, path: Path, out: Path) -> Path:
    recognizer.analyze_video(path, out=out).result()
    return out


def on_ray(recognizer, paths, out: Path, segment_s: float, overlap_s: float, errors: list | None = None):
    from ferkit.scale.video import run_videos_on_ray
    from ferkit.video import VideoOptions

    return run_videos_on_ray([str(p) for p in paths], recognizer, SPEC, out, VideoOptions(), segment_s, overlap_s,
                             on_error=(errors.append if errors is not None else None), progress=False)


def iou(a: dict, b: dict) -> float:
    ax, ay, aw, ah = (int(a[k]) for k in "xywh")
    bx, by, bw, bh = (int(b[k]) for k in "xywh")
    w, h = min(ax + aw, bx + bw) - max(ax, bx), min(ay + ah, by + bh) - max(ay, by)
    inter = max(w, 0) * max(h, 0)
    return inter / (aw * ah + bw * bh - inter)


def compare(one: Path, many: Path, labels: list[str]) -> dict:
    """Face rows of two frames.csv files paired by frame and box overlap; the differences, counted."""
    rows = lambda p: {int(r["frame"]): [] for r in read_csv(p)}  # noqa: E731
    a, b = rows(one / "frames.csv"), rows(many / "frames.csv")
    for r in read_csv(one / "frames.csv"):
        a[int(r["frame"])].append(r)
    for r in read_csv(many / "frames.csv"):
        b[int(r["frame"])].append(r)
    stats = {"frames": 0, "count_differs": 0, "faces": 0, "person_differs": 0, "detected_score_diff": 0.0,
             "tracked_score_diff": 0.0, "min_tracked_iou": 1.0, "emotion_agree": 0, "smoothed_agree": 0}
    for frame in sorted(set(a) | set(b)):
        fa, fb = a.get(frame, []), b.get(frame, [])
        stats["frames"] += 1
        if len(fa) != len(fb):
            stats["count_differs"] += 1
            continue
        for r in fa:
            s = max(fb, key=lambda x: iou(r, x))
            stats["faces"] += 1
            stats["person_differs"] += r["person"] != s["person"]
            diff = max(abs(float(r[k]) - float(s[k])) for k in labels)
            if r["detected"] == "1" and s["detected"] == "1":
                assert (r["x"], r["y"], r["w"], r["h"]) == (s["x"], s["y"], s["w"], s["h"]), frame
                stats["detected_score_diff"] = max(stats["detected_score_diff"], diff)
            else:
                stats["tracked_score_diff"] = max(stats["tracked_score_diff"], diff)
                stats["min_tracked_iou"] = min(stats["min_tracked_iou"], iou(r, s))
            stats["emotion_agree"] += r["emotion"] == s["emotion"]
            stats["smoothed_agree"] += r["smoothed_emotion"] == s["smoothed_emotion"]
    return stats


def within_tolerance(stats: dict) -> None:
    """The documented tolerance (docs/SCALING.md)."""
    assert stats["person_differs"] == 0, stats
    # a track confirmed one detection earlier or later changes the count until the next detection: one detection
    # step (6 frames at the default 5 detections/s on 30 fps video)
    from ferkit.video.pipeline import DEFAULT_DETECT_FPS

    assert stats["count_differs"] <= 0.05 * stats["frames"] + round(30 / DEFAULT_DETECT_FPS), stats
    assert stats["detected_score_diff"] <= 1e-4, stats  # same frame, same box, same crop: the same scores
    # tracker boxes: a 0.5 s warm-up holds 2-3 detections at 5/s, too few to settle the Kalman velocity exactly
    assert stats["min_tracked_iou"] >= 0.8 and stats["tracked_score_diff"] <= 0.3, stats
    assert stats["emotion_agree"] >= 0.9 * stats["faces"] and stats["smoothed_agree"] >= 0.85 * stats["faces"], stats


def test_segments_fall_on_detection_frames_and_cover_the_range():
    from ferkit.errors import UserInputError
    from ferkit.scale.video import plan_segments

    segments = plan_segments(10, 400, 30.0, 3, segment_s=2.0, overlap_s=0.5, end_s=None)
    assert [s.own_start for s in segments] == [10, 70, 130, 190, 250, 310, 370]
    assert all(a.own_end == b.own_start for a, b in zip(segments, segments[1:])) and segments[-1].own_end == 400
    assert segments[0].read_start == 10 and all(s.own_start - s.read_start == 15 for s in segments[1:])
    assert all((s.read_start - 10) % 3 == 0 for s in segments)  # a segment detects on the frames a run from 10 does
    assert segments[-1].end_s is None and round(segments[0].end_s * 30 + 0.5) == 70
    with pytest.raises(UserInputError, match="--segment-seconds must be positive"):
        plan_segments(0, 10, 30.0, 1, segment_s=0)


def test_stitcher_maps_ids_by_shared_boxes_then_descriptors_then_new():
    """Synthetic segments (exact boxes and descriptors) so each rule is checked on its own: box overlap on the
    warm-up frames wins over descriptors, a returning face takes its id by descriptor, a stranger gets the next id
    in order of first appearance, and no two people of one segment share an id."""
    import numpy as np

    from ferkit.scale.video import Segment, SegmentResult, Stitcher
    from ferkit.video.results import FrameResult, PersonFace

    def face(person: int, x: int) -> PersonFace:
        return PersonFace((x, 10, 50, 50), {"happy": 1.0}, person=person)

    alice, bob, carol = (np.eye(128, dtype=np.float32)[i] for i in range(3))
    stitcher = Stitcher(threshold=0.5)
    first = stitcher.add(Segment(0, 0, 0, 10, 0.0, 0.0), SegmentResult(
        [FrameResult(i, i / 10, [face(1, 0), face(2, 100)], True) for i in range(10)], {1: [alice], 2: [bob]}))
    assert {f.person for fr in first for f in fr.faces} == {1, 2}
    # segment 2 (warm-up frames 6-9): local 5 sits where person 2 was, though its descriptor says alice; local 4
    # is alice away from any earlier box; local 3 is a stranger, seen before local 4
    second = stitcher.add(Segment(1, 6, 10, 20, 0.6, 1.95), SegmentResult(
        [FrameResult(i, i / 10, [face(5, 100)], True) for i in range(6, 10)]
        + [FrameResult(10, 1.0, [face(5, 100), face(3, 300)], True),
           FrameResult(11, 1.1, [face(5, 100), face(3, 300), face(4, 200)], True)],
        {5: [alice], 3: [carol], 4: [alice + 0.01]}))
    assert [fr.index for fr in second] == [10, 11]  # the warm-up frames are dropped
    assert [(f.box[0], f.person) for f in second[1].faces] == [(100, 2), (300, 3), (200, 1)]
    assert stitcher.people == 3


def test_shared_clip_on_ray_equals_single_process(cluster, recognizer, tmp_path):
    from click.testing import CliRunner

    from ferkit.cli import main

    clip = need(CLIP)
    one = single(recognizer, clip, tmp_path / "single")
    many = tmp_path / "ray"
    result = CliRunner().invoke(main, ["video", str(clip), "--engine", "ray", "--segment-seconds", "0.8",
                                       "--overlap-seconds", "0.5", "--out", str(many)])
    assert result.exit_code == 0, result.output
    assert "67 frames" in result.output and "1 person," in result.output
    for name in OUTPUTS:
        assert (many / name).stat().st_size > 0, name
    summary = json.loads((many / "summary.json").read_text())
    assert summary["settings"]["engine"] == "ray" and summary["settings"]["segments"] == 3
    assert summary["frames"] == 67 and summary["settings"]["face_descriptors_computed"] > 0
    assert count_frames(many / "annotated.mp4") == 67
    assert sum(int(r["frames"]) for r in read_csv(many / "seconds.csv")) == 67
    within_tolerance(compare(one, many, recognizer.labels))
    people_one, people_many = (json.loads((d / "people.json").read_text()) for d in (one, many))
    assert [p["person"] for p in people_many] == [p["person"] for p in people_one] == [1]
    assert people_many[0]["seconds"] == people_one[0]["seconds"]
    assert "data:image/jpeg;base64," in (many / "report.html").read_text()


def test_people_keep_their_ids_across_segments_and_a_cut(cluster, recognizer, tmp_path):
    """Segments of 0.6 s: boundaries inside the group shot (ids by box overlap), inside the portrait, and where
    the group comes back after the cut (ids by face descriptors against the earlier segments')."""
    video = write_video(tmp_path / "group.avi", group_cut_return(need(PHOTOS)))
    one = single(recognizer, video, tmp_path / "single")
    summary = on_ray(recognizer, [video], tmp_path / "ray", segment_s=0.6, overlap_s=0.5)
    assert not summary.failed and summary.results[0].settings["segments"] == 5
    stats = compare(one, tmp_path / "ray", recognizer.labels)
    within_tolerance(stats)
    people_one, people_many = (json.loads((d / "people.json").read_text()) for d in (one, tmp_path / "ray"))
    assert [p["person"] for p in people_many] == [p["person"] for p in people_one] == [1, 2, 3, 4]
    from ferkit.video.pipeline import DEFAULT_DETECT_FPS

    step = 1 / DEFAULT_DETECT_FPS + 0.01  # a track confirmed one detection earlier or later
    for p, q in zip(people_one, people_many):
        assert abs(p["seconds"] - q["seconds"]) <= step and abs(p["first_s"] - q["first_s"]) <= step
    for name in OUTPUTS:
        assert (tmp_path / "ray" / name).stat().st_size > 0, name


def test_bad_videos_give_one_line_each_and_the_others_finish(cluster, recognizer, tmp_path):
    import cv2

    from ferkit.io import read_image

    photo = cv2.resize(read_image(need(PHOTOS) / "dlib__Tom_Cruise_avp_2014_4.jpg"), (320, 448))
    folder = tmp_path / "in"
    folder.mkdir()
    good = write_video(folder / "good.avi", [photo] * 30, fps=10)
    data = good.read_bytes()
    (folder / "truncated.avi").write_bytes(data[: len(data) // 2])
    (folder / "text.mp4").write_text("not a video\n")
    errors: list[str] = []
    summary = on_ray(recognizer, [folder, tmp_path / "missing.mp4"], tmp_path / "out", segment_s=1.0,
                     overlap_s=0.5, errors=errors)
    assert len(errors) == 3, errors
    for needle in ("missing.mp4: no such file", "text.mp4: not a video", "truncated.avi: the file ends at frame"):
        assert sum(needle in line for line in errors) == 1, (needle, errors)
    assert len(read_csv(tmp_path / "out" / "good" / "frames.csv")) == 30
    assert json.loads((tmp_path / "out" / "good" / "summary.json").read_text())["settings"]["segments"] == 3
    partial = json.loads((tmp_path / "out" / "truncated" / "summary.json").read_text())
    assert 0 < partial["frames"] < 30 and "truncated" in partial["error"]
    assert [r.frames for r in summary.results if r.source.endswith("good.avi")] == [30]
