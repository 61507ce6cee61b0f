"""Video and live streams: faces followed over time, people re-identified, scores smoothed, per-person and group
summaries, the lecture view, and progressive writers (frames.csv, people.csv/json, timeline.png, annotated.mp4,
summary.json, report.html).

    from ferkit import Recognizer

    run = Recognizer().analyze_video("talk.mp4", out="talk/")   # a VideoRun
    for frame in run:                                          # FrameResult: faces with person ids
        ...
    video = run.result()                                       # VideoResult: people, seconds, clip
    print(video.to_dataframe())

Modules, in the order data flows: source (frames) -> tracking (ByteTrack) -> reid (dlib descriptors) ->
smoothing (EMA in seconds) -> summary / lecture -> writers, plots, report; pipeline composes them; run drives
files and folders for the CLI.
"""

from ferkit.video.pipeline import VideoOptions, VideoRun
from ferkit.video.results import FrameResult, PersonFace, PersonSummary, VideoResult

__all__ = ["FrameResult", "PersonFace", "PersonSummary", "VideoOptions", "VideoResult", "VideoRun"]
