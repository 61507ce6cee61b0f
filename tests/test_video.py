"""`ferkit video` and ferkit.video on real videos: the shared clip, a video built from real photos (a pan across a
group, a cut, a return), bad inputs, the lecture view, a killed run, a live source."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import DATA, PHOTOS, need
from ferkit.io import read_image
from tests.video_clips import count_frames, group_cut_return, read_csv, window, write_video

pytest.importorskip("supervision", reason="needs the video extra: pip install -e '.[video]'")

CLIP = DATA / "videos" / "huimiang__1543684773.avi"


def ferkit(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferkit.cli", *args], capture_output=True, text=True,
                          timeout=timeout)



@pytest.fixture(scope="module")
def recognizer():
    from ferkit.recognizer import Recognizer

    return Recognizer(workers=1)


@pytest.fixture(scope="module")
def shared_clip_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("clip") / "OUT"
    proc = ferkit("video", str(need(CLIP)), "--out", str(out))
    return proc, out


def test_shared_clip_writes_every_output_with_one_person(shared_clip_run):
    proc, out = shared_clip_run
    assert proc.returncode == 0, proc.stderr
    assert "67 frames" in proc.stdout and "1 person," in proc.stdout
    for name in ("frames.csv", "seconds.csv", "people.csv", "people.json", "timeline.png", "annotated.mp4",
                 "summary.json", "report.html", "thumbnails/person_1.jpg"):
        assert (out / name).stat().st_size > 0, name

    frames = read_csv(out / "frames.csv")
    assert {r["person"] for r in frames} == {"1"}  # one id for the one person, in every frame
    assert len({r["frame"] for r in frames}) >= 60  # the face is followed through (nearly) all 67 frames
    labels = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    for r in frames[:5]:
        assert math.isclose(sum(float(r[k]) for k in labels), 1.0, abs_tol=1e-3)
        assert r["smoothed_group"] in ("positive", "neutral", "negative")
    # boxes come from detections every 6th frame (default 5 detections/s at 30 fps) and from the tracker between
    assert {r["detected"] for r in frames} == {"0", "1"}

    people = json.loads((out / "people.json").read_text())
    assert len(people) == 1 and people[0]["person"] == 1
    p = people[0]
    assert 2.0 <= p["seconds"] <= 2.25
    assert math.isclose(sum(p["group_shares"].values()), 1.0, abs_tol=1e-3)
    assert p["dominant_emotion"] == max(p["emotion_shares"], key=p["emotion_shares"].get)
    assert read_csv(out / "people.csv")[0]["dominant_emotion"] == p["dominant_emotion"]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 67 and summary["clip"]["faces_seen"]
    assert summary["clip"]["group_shares"] == pytest.approx(p["group_shares"], abs=1e-3)  # one person = the group
    assert sum(int(r["frames"]) for r in read_csv(out / "seconds.csv")) == 67
    assert summary["settings"]["detect_every_frames"] == 6 and summary["settings"]["model"] == "default"
    assert count_frames(out / "annotated.mp4") == 67
    assert cv2.imread(str(out / "timeline.png")) is not None
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "data:image/jpeg;base64," in html
    assert "http://" not in html and "https://" not in html and "<script" not in html  # self-contained


@pytest.fixture(scope="module")
def group_video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("group") / "group.avi", group_cut_return(need(PHOTOS)))


def test_group_pan_cut_return_ends_with_one_id_per_person(group_video, recognizer, tmp_path):
    run = recognizer.analyze_video(group_video, out=tmp_path)
    frames = list(run)
    video = run.result()
    # 3 people in the group photo + 1 in the portrait after the cut; the group's 3 get their ids back on return
    assert [p.person for p in video.people] == [1, 2, 3, 4]
    first_group = [f for f in frames if f.index < 36 and len(f.faces) == 3]
    back = [f for f in frames if f.index >= 54 and len(f.faces) == 3]
    assert first_group and back
    order = lambda f: [face.person for face in sorted(f.faces, key=lambda face: face.box[0])]  # noqa: E731
    assert order(first_group[0]) == order(back[-1])  # the same person in the same place, left to right
    portrait = {face.person for f in frames if 36 <= f.index < 54 for face in f.faces}
    assert portrait == {4}
    df = video.to_dataframe()
    assert list(df["person"]) == [1, 2, 3, 4] and (df["seconds"] > 0).all()


def test_default_cadence_carries_people_and_their_scores_between_detections(group_video, tmp_path):
    """At the default 5 detections a second the tracker keeps all three people in every frame of the pan, with the
    same ids; a tracker frame's faces keep the scores of their person's last detection frame; the CLI's video
    recognizer (one ONNX thread per session) finds the same people."""
    from ferkit.recognizer import Recognizer
    from ferkit.video.pipeline import DEFAULT_DETECT_FPS

    run = Recognizer.for_video().analyze_video(group_video)
    frames = list(run)
    assert DEFAULT_DETECT_FPS == 5 and run.stride == 6
    assert [f.index for f in frames if f.detected] == list(range(0, 78, 6))
    pan = frames[12:36]  # from the second detection (tracks confirmed) to the cut
    assert all(len(f.faces) == 3 for f in pan)
    assert len({tuple(sorted(face.person for face in f.faces)) for f in pan}) == 1
    last: dict[int, dict[str, float]] = {}
    carried = 0
    for f in frames:
        for face in f.faces:
            if f.detected:
                last[face.person] = face.scores
            elif face.person in last:
                assert face.scores == last[face.person]
                carried += 1
    assert carried > 100
    assert [p.person for p in run.result().people] == [1, 2, 3, 4]


def test_whole_frame_scans_once_a_second_and_after_a_miss(group_video, recognizer, tmp_path):
    """Between whole-frame scans (one a second of video by default) a detection looks only around the faces found
    before; a cut (the faces not found where they were) brings a whole-frame scan at the next detection. Every
    detection scanning (scan_s 0) finds the same people; the count is in summary.json's settings."""
    scanning = recognizer.analyze_video(group_video, scan_s=0)
    steps = sum(f.detected for f in scanning)
    assert scanning.scans == steps == 13 and len(scanning.result().people) == 4

    run = recognizer.analyze_video(group_video, out=tmp_path)
    frames = list(run)
    # seconds 0 and 1 start with a scan (frames 0 and 30), and each cut's miss brings one (frames 42 and 60)
    assert run.scans == 4
    assert json.loads((tmp_path / "summary.json").read_text())["settings"]["whole_frame_detections"] == 4
    assert [f.index for f in frames if f.detected] == list(range(0, 78, 6))


def test_file_frames_are_decoded_ahead_in_a_thread_that_ends_with_the_consumer(group_video):
    """A file's frames come from a reader thread (decoding overlaps the pipeline's work), in order and all of
    them; a consumer that stops early ends the thread instead of leaving it blocked on a full queue."""
    import threading

    from ferkit.video.source import VideoSource

    def readers() -> int:
        return sum(t.name == "ferkit-video-read" and t.is_alive() for t in threading.enumerate())

    with VideoSource(group_video) as source:
        assert [f.index for f in source] == list(range(78)) and source.decode_seconds > 0
    with VideoSource(group_video) as source:
        frames = iter(source)
        first = [next(frames) for _ in range(3)]
        time.sleep(0.2)  # the reader fills its queue and waits
        assert readers() == 1 and [f.index for f in first] == [0, 1, 2] and source.frames_read == 3
    assert readers() == 0


def test_classify_every_frame_classifies_the_tracker_boxes(group_video, recognizer):
    from ferkit.video import VideoOptions, VideoRun

    frames = list(VideoRun(recognizer, group_video, VideoOptions(classify_every_frame=True, end=1.0)))
    held = {}
    changed = 0
    for f in frames:
        for face in f.faces:
            if not f.detected and face.person in held:
                changed += face.scores != held[face.person]
            held[face.person] = face.scores
    assert changed > 20  # the boxes move, so the crops and their scores do


def test_without_reid_the_returning_people_get_new_ids(group_video, recognizer):
    """The check above is sharp: with re-identification off, the tracker alone loses people across the cut."""
    video = recognizer.analyze_video(group_video, reid=False).result()
    assert len(video.people) > 4


def test_bad_inputs_one_line_each_and_the_rest_processed(tmp_path):
    photo = cv2.cvtColor(cv2.imread(str(need(PHOTOS) / "dlib__Tom_Cruise_avp_2014_4.jpg")), cv2.COLOR_BGR2RGB)
    frame = cv2.resize(photo, (320, 448))
    folder = tmp_path / "in"
    folder.mkdir()
    good = write_video(folder / "good.avi", [frame] * 12, fps=10)
    data = good.read_bytes()
    (folder / "truncated.avi").write_bytes(data[: len(data) // 2])
    (folder / "codec.avi").write_bytes(data.replace(b"MJPG", b"ZZZZ"))  # a codec no decoder knows
    (folder / "text.mp4").write_text("not a video\n")
    writer = cv2.VideoWriter(str(folder / "zero.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 448))
    writer.release()
    (folder / "notes.txt").write_text("a folder mixing videos and other files\n")
    out = tmp_path / "out"
    proc = ferkit("video", str(folder), str(tmp_path / "missing.mp4"), "--out", str(out), "--fps", "5")
    assert proc.returncode == 1
    err = [line for line in proc.stderr.splitlines() if "frame/s" not in line and "s/frame" not in line]
    expect = {"missing.mp4: no such file", "text.mp4: not a video", "zero.avi: the video has no frames",
              "codec.avi: cannot decode its video", "truncated.avi: the file ends at frame",
              "ignored " + str(folder / "notes.txt")}
    for needle in expect:
        assert sum(needle in line for line in err) == 1, (needle, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert "2 videos" in proc.stderr and "5 failed" in proc.stderr
    # the good video and the readable part of the truncated one have their results
    assert len(read_csv(out / "good" / "frames.csv")) == 12
    partial = json.loads((out / "truncated" / "summary.json").read_text())
    assert 0 < partial["frames"] < 12 and "truncated" in partial["error"]


def test_missing_camera_is_one_line():
    proc = ferkit("video", "--camera", "47")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "camera 47: no such camera" in proc.stderr


def test_analyze_given_a_video_points_to_ferkit_video():
    proc = ferkit("analyze", str(need(CLIP)))
    assert proc.returncode == 1 and f"use `ferkit video {CLIP}`" in proc.stderr


def test_lecture_aggregate_only_writes_nothing_per_person(group_video, recognizer, tmp_path):
    proc = ferkit("video", str(group_video), "--lecture", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    names = {p.name for p in tmp_path.iterdir()}
    assert {"seconds.csv", "minutes.csv", "summary.json", "timeline.png", "report.html"} <= names
    assert not names & {"frames.csv", "people.csv", "people.json", "thumbnails", "annotated.mp4"}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["people"] == [] and "face_descriptors_computed" not in summary["settings"]
    assert {m["kind"] for m in summary["moments"]} == {"low", "high"}
    seconds = read_csv(tmp_path / "seconds.csv")
    assert [int(r["second"]) for r in seconds] == [0, 1, 2]
    assert float(seconds[0]["faces"]) == pytest.approx(3.0, abs=0.5)  # the group of three in view
    minute = read_csv(tmp_path / "minutes.csv")
    assert len(minute) == 1 and math.isclose(sum(float(minute[0][g]) for g in ("positive", "neutral", "negative")),
                                             1.0, abs_tol=1e-3)


def test_a_killed_run_keeps_valid_outputs(tmp_path):
    """SIGKILL mid-video: frames.csv holds complete rows up to the kill and annotated.mp4 still plays."""
    photo = read_image(need(PHOTOS) / "dlib__Tom_Cruise_avp_2014_4.jpg")
    long_video = write_video(tmp_path / "long.avi", (window(photo, 0.5 + i / 6000, 0.5, 0.5, (480, 320))
                                                     for i in range(600)), fps=30)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "ferkit.cli", "video", str(long_video), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "frames.csv").exists() and len((out / "frames.csv").read_text().splitlines()) > 70:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    rows = read_csv(out / "frames.csv")
    assert 70 <= len(rows) < 600
    assert all(r["neutral"] != "" for r in rows)  # no half-written row
    assert count_frames(out / "annotated.mp4") > 0  # fragmented MP4: playable without its end


def test_live_source_drops_frames_rather_than_falling_behind(group_video, recognizer, tmp_path):
    from ferkit.video import VideoOptions
    from ferkit.video.live import run_camera

    messages: list[str] = []
    video = run_camera(str(group_video), recognizer, tmp_path, VideoOptions(), echo=messages.append, window=False)
    assert "headless (--no-window)" in messages[0]
    dropped = int(messages[-1].split(", ")[-1].split()[0])
    assert dropped > 0 and video.frames + dropped == 78
    assert len(read_csv(tmp_path / "frames.csv")) > 0 and json.loads((tmp_path / "summary.json").read_text())


def test_lecture_moments_are_the_windows_with_the_lowest_and_highest_valence():
    """Each window's mean valence (positive - negative share over the seconds with faces) from running sums equals
    the mean computed window by window, and the chosen moments are the extremes that do not overlap."""
    from ferkit.video.lecture import moments

    rng = np.random.default_rng(0)
    seconds = [{"second": s, "faces": float(rng.integers(0, 4)), "positive": p, "negative": (1 - p) * q}
               for s, p, q in zip(range(600), rng.random(600), rng.random(600))]
    found = moments(seconds, window_s=10, count=3)
    seen = [r for r in seconds if r["faces"] > 0]
    brute = {}
    for start in {r["second"] for r in seen}:
        inside = [r["positive"] - r["negative"] for r in seen if start <= r["second"] < start + 10]
        brute[start] = sum(inside) / len(inside)
    for m in found:
        assert m["valence"] == pytest.approx(brute[m["start_s"]], abs=1e-4)
    lows = [m for m in found if m["kind"] == "low"]
    assert len(lows) == 3 and lows[0]["start_s"] == min(brute, key=brute.get)
    assert all(abs(a["start_s"] - b["start_s"]) >= 10 for a in lows for b in lows if a is not b)
    highs = [m for m in found if m["kind"] == "high"]
    assert len(highs) == 3 and highs[0]["start_s"] == max(brute, key=brute.get)


def test_ema_time_constant_is_in_seconds():
    from ferkit.video.smoothing import EmaSmoother

    for fps in (10, 30):  # the same smoothing at any frame rate: after tau seconds a step is 1 - 1/e of the way
        s = EmaSmoother(tau=0.5)
        s.update(1, 0.0, np.array([1.0, 0.0]))
        for i in range(1, int(0.5 * fps) + 1):
            value = s.update(1, i / fps, np.array([0.0, 1.0]))
        assert value[1] == pytest.approx(1 - math.exp(-1), abs=1e-9)


def test_clips_train_and_predict_from_the_cli(tmp_path):
    """Clips of real FER2013 faces (4 of one class per clip, small motion): happy vs surprise, trained and labelled
    from the command line; held-out clips of each class get their class."""
    from tests.video_clips import fer_clip

    fer = need(DATA / "fer2013") / "test"
    data, held_out = tmp_path / "clips", tmp_path / "held_out"
    for cls in ("happy", "surprise"):
        files = sorted((fer / cls).glob("PrivateTest_*.jpg"))[:32]
        faces = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]
        (data / cls).mkdir(parents=True)
        for i in range(6):
            write_video(data / cls / f"{cls}_{i}.avi", fer_clip(faces[4 * i:4 * i + 4], seed=i), fps=10)
        held_out.mkdir(exist_ok=True)
        write_video(held_out / f"{cls}.avi", fer_clip(faces[24:32], seed=99), fps=10)
    proc = ferkit("clips", "train", str(data), "--out", str(tmp_path / "clf"), "--folds", "3")
    assert proc.returncode == 0, proc.stderr
    assert "12 clips (happy 6, surprise 6)" in proc.stdout and "3-fold cross-validated accuracy" in proc.stdout
    accuracy = float(proc.stdout.split("cross-validated accuracy ")[1].split()[0])
    assert accuracy >= 0.75  # the embedding separates these two expressions well above chance (0.5)
    card = json.loads((tmp_path / "clf" / "classifier.json").read_text())
    assert card["labels"] == ["happy", "surprise"] and card["descriptor_dim"] == 4 * 256
    proc = ferkit("clips", "predict", str(held_out), "--classifier", str(tmp_path / "clf"))
    assert proc.returncode == 0, proc.stderr
    labels = dict(line.rsplit(": ", 1) for line in proc.stdout.strip().splitlines())
    assert labels == {str(held_out / "happy.avi"): "happy", str(held_out / "surprise.avi"): "surprise"}


def test_embedding_is_the_penultimate_layer_of_the_shipped_int8_graph():
    from ferkit.classify import load_classifier

    faces = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
             for f in sorted((need(DATA / "fer2013") / "test" / "happy").glob("*.jpg"))[:4]]
    classifier = load_classifier("default")
    e = classifier.embed(faces)
    assert e.shape == (4, 256) and (e >= 0).all()  # after the head's ReLU
    session = classifier.runtime.session  # the classifying session is untouched: one output, the logits
    assert session.get_outputs()[0].name == "logits" and len(session.get_outputs()) == 1


def test_timeline_shows_each_second_in_its_pixel_columns(tmp_path):
    """The timeline is a raster whose columns show the seconds they cover: each lane and the group's stacked
    shares have the right colour at the right time, and a 10-hour video draws an image of the same size as an
    hour (its cost is bounded by the pixels, not the video's length)."""
    from PIL import Image, ImageColor

    from ferkit.video import plots

    def draw(hours: int) -> np.ndarray:
        n = 3600 * hours
        lanes = {1: {s: ("happy" if s < n * 5 // 6 else "sad") for s in range(n)}}
        seconds = [dict(second=s, faces=1, positive=float(s < n // 2), neutral=0.0, negative=float(s >= n // 2))
                   for s in range(n)]
        path = plots.plot_timeline(tmp_path / f"timeline_{hours}.png", lanes, seconds, ["happy", "sad", "neutral"])
        with Image.open(path) as png:
            return np.asarray(png.convert("RGB"))

    def colour(name: str) -> list[int]:
        return list(ImageColor.getrgb(name))

    one, ten = draw(1), draw(10)
    assert one.shape == ten.shape and one.shape[1] == plots.WIDTH
    lane_y = plots.TOP + plots.LANE_PX // 2
    group_y = plots.TOP + plots.LANE_PX + plots.GAP_PX + plots.GROUP_PX // 2
    for image in (one, ten):
        def at(fraction: float, y: int) -> list[int]:
            return image[y, plots.LEFT + int(plots.PLOT_PX * fraction)].tolist()

        assert at(0.4, lane_y) == colour(plots.EMOTION_COLOURS["happy"])
        assert at(0.9, lane_y) == colour(plots.EMOTION_COLOURS["sad"])
        assert at(0.25, group_y) == colour(plots.GROUP_COLOURS["positive"])
        assert at(0.75, group_y) == colour(plots.GROUP_COLOURS["negative"])


def test_annotated_video_encodes_in_its_thread_and_reports_its_errors(tmp_path):
    """annotated.mp4 is drawn and encoded in a thread: every queued frame is written, and a frame it cannot
    encode raises in the pipeline's thread (on a later write or at close) instead of vanishing with the thread."""
    from ferkit.video.results import FrameResult
    from ferkit.video.writers import AnnotatedVideo

    rgb = np.full((120, 160, 3), 90, np.uint8)
    video = AnnotatedVideo(tmp_path / "ok.mp4", 30, 160, 120)
    for i in range(40):
        video.write(rgb, FrameResult(i, i / 30, [], True))
    video.close()
    assert count_frames(tmp_path / "ok.mp4") == 40 and video.seconds > 0

    broken = AnnotatedVideo(tmp_path / "broken.mp4", 30, 160, 120)
    broken.write(np.zeros((121, 161), np.uint8), FrameResult(0, 0.0, [], True))  # gray: not an RGB frame
    with pytest.raises(Exception):
        for i in range(10):
            broken.write(rgb, FrameResult(i, i / 30, [], True))
        broken.close()


def test_heap_settings_are_glibc_calls_or_no_ops():
    from ferkit.video import heap

    assert heap.limit_arenas() == (heap._libc() is not None)
    heap.trim()  # returns nothing, raises nothing
