"""The `ferkit` command. Each subcommand is a thin shell over a library function.

Errors: a :class:`ferkit.errors.FerkitError` (bad input, a missing extra, a bad recipe) ends in one line,
``ferkit: error: ...``, and exit status 1; Ctrl-C in ``ferkit: interrupted`` and status 130; click's usage errors
(an unknown option, a value outside its choices) in status 2. Anything else is a bug and keeps its traceback.
Inputs and output folders are checked before any work starts, so a typo never costs a finished run.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click

from ferkit import __version__
from ferkit.errors import FerkitError, UserInputError
from ferkit.extras import require
from ferkit.scale.cluster import ENGINES

log = logging.getLogger("ferkit.cli")

DETECTORS = ("auto", "mtcnn", "dlib", "haar", "mediapipe", "mediapipe_short")
"""The face detector names (ferkit.faces.detector_names(); a test keeps the two equal), listed here so that
`ferkit --help` does not import OpenCV."""

DEVICES = ("cpu", "cuda")

TTA_MODES = ("none", "flip", "tencrop")
"""ferkit.runtime.TTA_MODES (a test keeps the two equal), listed here so that `ferkit --help` imports no ONNX
Runtime."""
DEFAULT_TTA = "flip"
"""ferkit.runtime.DEFAULT_TTA, the same for every command (a test keeps the two equal)."""
TTA_HELP = ("Test-time augmentation: none (the crop alone), flip (the crop and its mirror image averaged: +0.7 "
            "points on FER2013 PrivateTest for ~2 ms per photo beside ~55 ms of detection, hence the default "
            "everywhere), tencrop (ten shifted and mirrored views, 10x the classification cost).")



class _ConsoleHandler(logging.Handler):
    """ferkit's log records as plain lines on stderr, printed above a progress bar rather than through it."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise (logging.Handler's own convention)
            self.handleError(record)


def configure_logging(level: int = logging.INFO) -> None:
    """Send the library's log records (``logging.getLogger("ferkit....")``) to stderr, once per process.

    The records still propagate to the root logger (pytest's caplog, an application's own handlers); with no root
    handler configured, as in the ``ferkit`` command, they print once."""
    root = logging.getLogger("ferkit")
    root.setLevel(level)
    if not any(isinstance(h, _ConsoleHandler) for h in root.handlers):
        handler = _ConsoleHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)


def _close_progress_bars() -> None:
    """Finish the line of any open progress bar now, so that nothing is drawn after the last message."""
    if "tqdm" in sys.modules:
        from tqdm import tqdm

        for bar in list(getattr(tqdm, "_instances", ())):
            bar.close()


class FerkitGroup(click.Group):
    """Turns ferkit's own errors into one line on stderr (exit 1) and Ctrl-C into one line (exit 130)."""

    def invoke(self, ctx: click.Context) -> Any:  # type: ignore[override]
        configure_logging()
        try:
            return super().invoke(ctx)
        except FerkitError as exc:
            message = " ".join(str(exc).split()) or type(exc).__name__
            click.echo(f"ferkit: error: {message}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            _close_progress_bars()
            click.echo("ferkit: interrupted", err=True)
            sys.exit(130)


@click.group(cls=FerkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ferkit")
def main() -> None:
    """ferkit: facial expression recognition — analyze, evaluate, train and export emotion models.

    Errors end with one line, `ferkit: error: ...`, and exit status 1 (2 for a bad option, 130 for Ctrl-C).
    """
    import warnings

    from PIL import Image

    # ferkit.io refuses images over its own limit (ferkit.io.MAX_PIXELS) from their header; PIL's lower limit
    # would only print a 'decompression bomb' warning for the images ferkit accepts (the command's process, not the
    # library, decides which warnings show)
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


# ---------------------------------------------------------------------------------------------------------------
# Options shared by several commands: defined once, so their names, types and help never drift apart.


def _given_once(ctx: click.Context, param: click.Parameter, value: tuple) -> Any:
    """Callback of options that may be given once: a repeated one is an error, not a silent 'last one wins'."""
    if len(value) > 1:
        shown = ", ".join(f"{param.opts[0]} {v}" for v in value)
        raise click.BadParameter(f"given {len(value)} times ({shown}); give it once", ctx=ctx, param=param)
    return value[0] if value else None


def once_option(*decls: str, default: Any = None, **kwargs: Any) -> Callable:
    """A click option that refuses to be repeated (``multiple`` is only how click lets us see the repeats)."""
    return click.option(*decls, multiple=True, default=() if default is None else (default,),
                        callback=_given_once, show_default=default is not None, **kwargs)


def model_option() -> Callable:
    return once_option("--model", default="default", metavar="NAME|FOLDER",
                       help="Shipped model name (see `ferkit models`), a model package folder or an ensemble "
                            "package folder (`ferkit ensemble build`).")


class _DetectorOption(click.Option):
    """``--detector``, whose help says which detector ``auto`` picks in this environment and why: worked out only
    when that help is shown, so ``ferkit --help`` and every other command start without loading a detector."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.base_help = self.help

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        from ferkit.faces import auto_choice

        name, why = auto_choice()
        self.help = f"{self.base_help} auto = {name} here: {why}."
        return super().get_help_record(ctx)


def detector_option(help: str = "Face detector.") -> Callable:
    return once_option("--detector", default="auto", type=click.Choice(DETECTORS, case_sensitive=False), help=help,
                       cls=_DetectorOption)


def min_face_option() -> Callable:
    return once_option("--min-face", default=0, type=click.IntRange(min=0), metavar="PIXELS",
                       help="Ignore faces whose box is smaller than this on its shorter side.")


def tta_option() -> Callable:
    return once_option("--tta", default=DEFAULT_TTA, type=click.Choice(TTA_MODES), help=TTA_HELP)


def workers_option(more: str = "") -> Callable:
    return once_option("--workers", type=click.IntRange(min=1),
                       help="Images decoded and detected at once, in threads (default: one per core; detectors "
                            "that allow it)." + more)


def engine_option() -> Callable:
    return once_option("--engine", default="local", type=click.Choice(ENGINES),
                       help="local: this process (and its threads). ray: a Ray cluster (the 'ray' extra; see "
                            "--address and docs/SCALING.md).")


def address_option() -> Callable:
    return once_option("--address", metavar="ADDR",
                       help="With --engine ray: the cluster to join ('auto', 'ray://HOST:10001', 'HOST:6379'); "
                            "default: start a local one for this run.")


# ---------------------------------------------------------------------------------------------------------------
# Checks made before any work starts.


def plural(n: int, word: str, words: str | None = None) -> str:
    """'1 image', '2 images', '0 images'."""
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def check_inputs(paths: Iterable[str]) -> None:
    """Every input path exists, and there is at least one image among them (files as given, folders' images)."""
    from ferkit.io import IMAGE_EXTENSIONS
    from ferkit.recognizer import iter_image_paths

    paths = list(paths)
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise UserInputError(f"no such file or folder: {', '.join(missing)}")
    if next(iter(iter_image_paths(paths)), None) is None:
        where = paths[0] if len(paths) == 1 else f"{len(paths)} folders"
        raise UserInputError(f"{where}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}, "
                             "in subfolders too)")


def _probe_writable(folder: Path, what: str) -> None:
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserInputError(f"{what}: cannot write into the folder {folder} ({exc.strerror or exc})") from None


def _make_folder(folder: Path, what: str, noun: str) -> None:
    if folder.exists() and not folder.is_dir():
        raise UserInputError(f"{what}: cannot create {noun} {folder} (a file of that name exists)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(f"{what}: cannot create {noun} {folder} ({exc.strerror or exc})") from None
    _probe_writable(folder, what)


def prepare_out_dir(out: str | None, option: str = "--out") -> None:
    """Create an output folder now and check it is writable, before the work whose results go there."""
    if out is not None:
        _make_folder(Path(out), f"{option} {out}", "the folder")


def prepare_out_file(path: str | None, option: str) -> None:
    """An output file's folder exists (created now) and is writable; '-' (stdout) needs nothing."""
    if path is None or path == "-":
        return
    if Path(path).is_dir():
        raise UserInputError(f"{option} {path}: is a folder; give a file name")
    _make_folder(Path(path).parent, f"{option} {path}", "its folder")


def _existing_path(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Callback for input arguments: a missing path is a one-line ferkit error, not a usage screen."""
    if value is not None and not os.path.exists(value):
        raise UserInputError(f"{value}: no such file or folder")
    return value


FORCE = click.option("--force", is_flag=True,
                     help="With --out: if it holds results made with other settings, drop them and start over.")


def _report_skip(message: str) -> None:
    """One line per skipped input (through logging, so it prints above any progress bar)."""
    log.warning("skipped %s", message)


def _write_json_atomic(path: str, payload: dict) -> None:
    import json

    from ferkit.io import atomic_write

    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2) + "\n"))


# ---------------------------------------------------------------------------------------------------------------
# Commands.


@main.command(short_help="Faces and their emotions in images and folders.")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for results.json, faces.csv and annotated/ (a rerun skips finished images).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write all results as JSON ('-' = stdout).")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False), help="Write one row per face as CSV.")
@click.option("--no-annotate", is_flag=True, help="With --out, do not write annotated images (--engine ray never "
              "writes them).")
@model_option()
@detector_option()
@min_face_option()
@once_option("--max-faces", type=click.IntRange(min=1), help="Keep only the N largest faces per image.")
@tta_option()
@workers_option(" With --engine ray: detection tasks at once (default: as many as the cluster's CPUs allow).")
@engine_option()
@address_option()
@once_option("--actors", type=click.IntRange(min=1), default=1,
             help="With --engine ray: classifier actors, one model load and 1 CPU each.")
@FORCE
def analyze(paths: tuple[str, ...], out: str | None, json_out: str | None, csv_out: str | None, no_annotate: bool,
            model: str, detector: str, min_face: int, max_faces: int | None, tta: str, workers: int | None,
            engine: str, address: str | None, actors: int, force: bool) -> None:
    """Find every face in images and folders and classify its emotion.

    Faces are numbered from 0 in each image, largest first: the same number in this output, in faces.csv's
    `face` column and in the JSON `faces` list.

    With --engine ray, PATHS may also be URIs pyarrow reads (s3://bucket/photos, gs://...) and manifests (.txt: a
    path per line; .csv or .parquet: a 'path' column); --out is required and receives faces.parquet and
    faces.jsonl (faces.csv's columns plus 'error'), resumable like a local run (docs/SCALING.md).
    """
    from ferkit.analyze import analyze_paths, write_csv, write_json
    from ferkit.recognizer import Recognizer

    if engine == "ray":
        _analyze_on_ray(paths, out, json_out or csv_out, model, detector, min_face, max_faces, tta, workers,
                        address, actors, force)
        return
    if address is not None or actors != 1:
        raise UserInputError(f"{'--address' if address is not None else '--actors'} needs --engine ray")
    check_inputs(paths)
    prepare_out_file(json_out, "--json")
    prepare_out_file(csv_out, "--csv")
    prepare_out_dir(out)
    with Recognizer(model, detector, min_face=min_face, max_faces=max_faces, tta=tta, workers=workers) as recognizer:
        summary = analyze_paths(list(paths), recognizer, out, annotated=not no_annotate, on_error=_report_skip,
                                force=force)
    if out is None and not json_out:
        for r in summary.results:
            if not r.faces:
                click.echo(f"{r.source}: no face found")
            for i, f in enumerate(r.faces):
                x, y, w, h = f.box
                top3 = ", ".join(f"{k} {v:.2f}" for k, v in sorted(f.scores.items(), key=lambda kv: -kv[1])[:3])
                click.echo(f"{r.source}: face {i} at x={x} y={y} w={w} h={h}: {f.emotion} ({f.confidence:.2f}, "
                           f"{f.group}) [{top3}]")
    if json_out == "-":
        import json

        click.echo(json.dumps([r.to_dict() for r in summary.results], indent=1))
    elif json_out:
        write_json(Path(json_out), summary.results)
    if csv_out:
        write_csv(Path(csv_out), summary.results, recognizer.labels)
    done = f", {summary.skipped_done:,} already done" if summary.skipped_done else ""
    click.echo(f"{plural(summary.images, 'image')}, {plural(summary.faces, 'face')}{done}, "
               f"{len(summary.failed):,} failed" + (f"; results in {out}" if out else ""), err=True)
    if summary.failed:
        sys.exit(1)


def _analyze_on_ray(paths: tuple[str, ...], out: str | None, table: str | None, model: str, detector: str,
                    min_face: int, max_faces: int | None, tta: str, workers: int | None, address: str | None,
                    actors: int, force: bool) -> None:
    """`ferkit analyze --engine ray`: checks, then ferkit.scale.analyze on the cluster; exit 1 if some file failed."""
    from ferkit.scale.cluster import import_ray, ray_session
    from ferkit.scale.sources import is_uri

    what = "ferkit analyze --engine ray"
    import_ray(what)
    if out is None:
        raise UserInputError("--engine ray writes its results into a folder: give --out DIR")
    if table:
        raise UserInputError("--engine ray writes faces.parquet and faces.jsonl into --out; --json and --csv are for "
                             "--engine local")
    missing = [p for p in paths if not is_uri(p) and not os.path.exists(p)]
    if missing:
        raise UserInputError(f"no such file or folder: {', '.join(missing)}")
    prepare_out_dir(out)
    from ferkit.scale.analyze import analyze_on_ray

    with ray_session(address, what):
        summary = analyze_on_ray(list(paths), out, model, detector, min_face, max_faces, tta, force,
                                 workers=workers, actors=actors, on_error=_report_skip)
    click.echo(summary.line(), err=True)
    if summary.errors:
        sys.exit(1)


@main.command(short_help="Rank photos by their faces' expressions (photo books).")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for ranking.csv, contact_sheet.jpg and analyze's results (a rerun skips finished images).")
@click.option("--top", type=click.IntRange(min=0), default=12, show_default=True,
              help="Photos to list and to put on the contact sheet.")
@click.option("--by", "--score", "by", default="positive", show_default=True,
              help="What a photo is scored on: positive, negative, group:neutral, or a label (happy, neutral, ...).")
@click.option("--weight", type=click.Choice(["area-confidence", "area", "confidence", "none"]),
              default="area-confidence", show_default=True,
              help="How much each face counts within its photo: box area x top-label probability, either, or equally.")
@click.option("--columns", type=click.IntRange(min=1), default=4, show_default=True, help="Contact sheet columns.")
@click.option("--annotate", "annotated", is_flag=True, help="With --out, also write annotated images.")
@model_option()
@detector_option()
@min_face_option()
@tta_option()
@workers_option()
@FORCE
def rank(paths: tuple[str, ...], out: str | None, top: int, by: str, weight: str, columns: int, annotated: bool,
         model: str, detector: str, min_face: int, tta: str, workers: int | None, force: bool) -> None:
    """Rank photos by their faces' expressions (e.g. to pick smiling photos for a photo book).

    A photo's score is the mean over its faces of P(--by), each face weighted by --weight; photos without faces
    rank last with no score. See ferkit.rank.photo_score for the formula.
    """
    from ferkit.rank import rank_paths
    from ferkit.recognizer import Recognizer

    check_inputs(paths)
    prepare_out_dir(out)
    with Recognizer(model, detector, min_face=min_face, tta=tta, workers=workers) as recognizer:
        summary = rank_paths(list(paths), recognizer, out, by=by, weight=weight, top=top, columns=columns,
                             annotated=annotated, on_error=_report_skip, force=force)
    for p in summary.ranking[:top]:
        score = "   -  " if p.score is None else f"{p.score:.3f}"
        n = len(p.result.faces)
        click.echo(f"{p.rank:>4}  {score}  {n:>2} face{' ' if n == 1 else 's'}  {p.result.source}")
    no_face = summary.no_face
    if no_face:
        click.echo(f"{plural(len(no_face), 'photo')} without faces (ranked last, no score)", err=True)
    a = summary.analysis
    done = f", {a.skipped_done:,} already done" if a.skipped_done else ""
    where = f"; ranking in {summary.csv_path}" if summary.csv_path else ""
    sheet = f", contact sheet {summary.sheet_path}" if summary.sheet_path else ""
    click.echo(f"{plural(len(summary.ranking), 'photo')} ranked by {summary.target} (weight {weight}): "
               f"{a.images:,} analysed, {plural(a.faces, 'face')}{done}, {len(a.failed):,} failed{where}{sheet}",
               err=True)
    if a.failed:
        sys.exit(1)


@main.command(short_help="Per-stage timings and throughput on photos.")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed runs of each photo (median taken).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the numbers as JSON.")
@click.option("--batches", default="1,256", show_default=True,
              help="Batch sizes for classification-only throughput (1 to 4096 faces).")
@click.option("--min-seconds", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Time each classification batch size for at least this long.")
@click.option("--threads", type=click.IntRange(min=1), help="ONNX Runtime intra-op threads (default: all cores).")
@model_option()
@detector_option()
@tta_option()
@workers_option()
def bench(paths: tuple[str, ...], repeat: int, json_out: str | None, batches: str, min_seconds: float,
          threads: int | None, model: str, detector: str, tta: str, workers: int | None) -> None:
    """Time each stage (decode, detect, align+crop, classify) on photos, and classification throughput."""
    from ferkit.bench import MAX_BATCH, bench_paths, format_report
    from ferkit.recognizer import Recognizer

    try:
        sizes = [int(b) for b in batches.split(",") if b.strip()]
    except ValueError:
        raise UserInputError(f"--batches must be comma-separated integers, not {batches!r}") from None
    if not sizes or min(sizes) < 1 or max(sizes) > MAX_BATCH:
        raise UserInputError(f"--batches must be integers from 1 to {MAX_BATCH}, not {batches!r} (ONNX Runtime "
                             "runs 256 faces at a time: a larger batch only takes longer)")
    check_inputs(paths)
    prepare_out_file(json_out, "--json")
    with Recognizer(model, detector, threads=threads, tta=tta, workers=workers) as recognizer:
        report = bench_paths(list(paths), recognizer, repeat=repeat, batches=sizes, min_seconds=min_seconds,
                             progress=True)
    for msg in report.failed:
        _report_skip(msg)
    click.echo(format_report(report))
    if json_out:
        _write_json_atomic(json_out, report.to_dict())
    if report.failed:
        click.echo(f"{plural(len(report.failed), 'file')} could not be read (left out of the timings)", err=True)
        sys.exit(1)


@main.group(short_help="Inspect datasets: counts, sizes, unreadable files.")
def data() -> None:
    """Inspect datasets (class folders, FER2013 csv, FER+ folders, manifest csv)."""


@data.command("stats", short_help="Counts per split and class, sizes, modes, unreadable files.")
@click.argument("path", callback=_existing_path)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the statistics as JSON.")
@click.option("--no-check", is_flag=True, help="Do not decode every image (faster; unreadable files go unnoticed).")
def data_stats(path: str, json_out: str | None, no_check: bool) -> None:
    """Counts per split and class, image sizes and modes, unreadable files, FER+ protocol counts."""
    from ferkit.data.stats import dataset_stats, format_stats

    prepare_out_file(json_out, "--json")
    stats = dataset_stats(path, check_images=not no_check)
    click.echo(format_stats(stats))
    if json_out:
        _write_json_atomic(json_out, stats.to_dict())


def _split_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """'all', or a split name users type (train/val/test, ...) checked now, before the model loads."""
    if value is None or value.lower() == "all":
        return value and "all"
    from ferkit.data.samples import canonical_split

    try:
        return canonical_split(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc).replace("(or train/val/test)", "(or train/val/test/all)")) from None


@main.command(short_help="Accuracy, macro-F1, confusion of a model on a dataset.")
@click.argument("data_path", metavar="DATA", callback=_existing_path)
@model_option()
@click.option("--split", callback=_split_option, show_default="PrivateTest where DATA has it, else all",
              help="Training, PublicTest or PrivateTest (also train/val/test), or all.")
@click.option("--grouping", type=click.Choice(["7", "8", "6", "3"]), help="Collapse labels into this space first.")
@tta_option()
@click.option("--ferplus-mode", type=click.Choice(["majority", "plurality", "soft"]), default="majority",
              show_default=True, help="FER+ labelling protocol.")
@click.option("--faces", type=click.Choice(["none", "detect", "auto"]), default="none", show_default=True,
              help="none: DATA holds face crops; detect: find the largest face in each image (whole photos); "
                   "auto: detect only in images more than twice the model's input size.")
@detector_option("Face detector for --faces detect/auto.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the full report as JSON.")
@click.option("--plots", type=click.Path(file_okay=False),
              help="Write confusion matrices and the reliability diagram (PNG) into this folder.")
def evaluate(data_path: str, model: str, split: str | None, grouping: str | None, tta: str, ferplus_mode: str,
             faces: str, detector: str, json_out: str | None, plots: str | None) -> None:
    """Accuracy, macro-F1, top-2, per-class P/R/F1, confusion and calibration (ECE with 15 bins, NLL, Brier
    score) of a model on a labelled dataset.

    The first line of the report names the split that was scored and its size.
    """
    from ferkit.calibration import save_reliability_diagram
    from ferkit.evaluate import evaluate_dataset, format_report, save_confusion_plots

    prepare_out_file(json_out, "--json")
    prepare_out_dir(plots, "--plots")
    report = evaluate_dataset(data_path, model, split, grouping, tta, ferplus_mode, faces, detector, progress=True)
    for problem in report["problems"]:
        _report_skip(problem)
    click.echo(format_report(report))
    if json_out:
        _write_json_atomic(json_out, report)
    if plots:
        title = Path(report["model"]).name
        for p in [*save_confusion_plots(report, plots, title=title), save_reliability_diagram(report, plots, title)]:
            click.echo(f"wrote {p}")


@main.command(short_help="Fit calibrated confidences on a validation split.")
@click.argument("package", metavar="PKG")
@click.option("--val", "val", required=True, metavar="DATA", callback=_existing_path,
              help="Labelled face crops to fit on (any dataset layout `ferkit evaluate` reads).")
@click.option("--split", callback=_split_option, show_default="PublicTest where DATA has it",
              help="The validation split (also val, or all for data without Training/PrivateTest rows); test and "
                   "training splits are refused.")
@click.option("--method", type=click.Choice(["temperature", "vector"]), default="temperature", show_default=True,
              help="temperature: one number per TTA mode, keeps every prediction; vector: a scale and bias per "
                   "class (ridge strength by cross-validation), can also move predictions.")
@click.option("--ferplus-mode", type=click.Choice(["majority", "plurality", "soft"]), default="majority",
              show_default=True, help="FER+ labelling protocol.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Write a calibrated copy here and leave PKG untouched (default: update PKG's card.json).")
@click.option("--no-evaluate", is_flag=True,
              help="Do not measure the card's test metrics again (they then lose their ECE, NLL and Brier score).")
def calibrate(package: str, val: str, split: str | None, method: str, ferplus_mode: str, out: str | None,
              no_evaluate: bool) -> None:
    """Fit a calibration of PKG's confidences on a validation split, one per TTA mode, and store it in its card.

    PKG is a shipped model name, a model package folder or an ensemble package folder. Every command then applies
    it (analyze, evaluate, the API, video), and the card's test metrics are measured again with it (ECE, NLL,
    Brier score).
    """
    from ferkit.packages.calibrate import calibrate_package

    prepare_out_dir(str(Path(out).parent) if out else None, "--out")
    command = "ferkit calibrate " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else ""
    card = calibrate_package(package, val, split, method, out, command=command, ferplus_mode=ferplus_mode,
                             remeasure=not no_evaluate, progress=True)
    cal = card["calibration"]
    click.echo(f"{out or package}: {method} calibration fitted on {cal['fitted_on']} (n={cal['n']:,})")
    for tta, fit in cal["per_tta"].items():
        b, a = fit["before"], fit["after"]
        click.echo(f"  tta={tta}: temperature {fit['temperature']:.4f}; on the fitting split ECE {b['ece']:.4f} -> "
                   f"{a['ece']:.4f}, NLL {b['nll']:.4f} -> {a['nll']:.4f}, Brier {b['brier']:.4f} -> {a['brier']:.4f}")
    m = card.get("metrics") or {}
    if m.get("ece") is not None:
        click.echo(f"  test {m['split']} (card metrics): ECE {m['ece']:.4f}, flip-TTA ECE {m['flip_tta_ece']:.4f}, "
                   f"accuracy {m['accuracy']:.4f}, flip-TTA accuracy {m['flip_tta_accuracy']:.4f}")


def _ensemble_row(folder: Path) -> tuple[tuple[str, ...], list[str]]:
    """An ensemble's row and its lines (method, members and weights); reads cards only, opens no graph."""
    from ferkit.packages import GRAPH_NAME, read_card
    from ferkit.packages.ensemble import member_folder, read_ensemble_card

    card = read_ensemble_card(folder)
    members = [(m, read_card(member_folder(folder, m))) for m in card.members]
    size = sum((member_folder(folder, m) / GRAPH_NAME).stat().st_size for m, _ in members) / 1e6
    val = card.metrics.get("validation") or {}
    acc = (f"{100 * val['accuracy']:.2f}% {val.get('split', '?')} (n={val.get('n', '?')}), {val.get('tta')} TTA"
           if val.get("accuracy") is not None else "not measured")
    crops = sorted({f"{c.crop_policy}" + (f" {c.crop_margin:g}" if c.crop_policy == "margin" else "")
                    for _, c in members})
    row = (card.name, str(len(card.labels)), f"{size:.1f} MB", acc, "-", " + ".join(crops), "auto")
    lines = [f"  {card.name}: ensemble, method {card.method}, {len(members)} members: "
             + ", ".join(f"{m.name} (weight {m.weight:.3g}, {len(c.labels)} labels)" for m, c in members)
             + f"; labels {', '.join(card.labels)}"]
    if card.selection:
        lines.append(f"    selected by {card.selection.get('how')} on {card.selection.get('split')}: k="
                     f"{card.selection.get('k')} (curve in {folder / card.selection.get('plot', '')})")
    return row, lines


def _models_table(folders: list[Path]) -> str:
    """One row per model or ensemble package: what a user compares before choosing ``--model``."""
    from ferkit.packages import GRAPH_NAME, card_kind, read_card

    header = ("name", "labels", "size", "accuracy", "ECE", "crop", "detector")
    rows, label_lines = [], []
    for folder in folders:
        if card_kind(folder) == "ensemble":
            row, lines = _ensemble_row(folder)
            rows.append(row)
            label_lines += lines
            continue
        card = read_card(folder)
        m = card.metrics
        if m.get("accuracy") is not None:
            acc = f"{100 * m['accuracy']:.2f}% {m.get('split') or '?'} (n={m.get('n', '?')}), no TTA"
            if m.get("flip_tta_accuracy") is not None:
                acc += f"; {100 * m['flip_tta_accuracy']:.2f}% flip TTA"
        else:
            acc = "not measured"
        ece = "; ".join(f"{m[k]:.3f}{label}" for k, label in (("ece", ""), ("flip_tta_ece", " flip TTA")) if k in m)
        size_mb = (folder / GRAPH_NAME).stat().st_size / 1e6 if (folder / GRAPH_NAME).is_file() else 0.0
        crop = f"{card.crop_policy}" + (f" {card.crop_margin:g}" if card.crop_policy == "margin" else "")
        crop += ", aligned" if card.align else ""
        detector = card.training.get("detector") or ("auto (needs eye landmarks)" if card.align else "auto")
        rows.append((card.name, str(len(card.labels)), f"{size_mb:.1f} MB", acc,
                     ece or "-", crop, detector))
        label_lines.append(f"  {card.name}: {', '.join(card.labels)}; {card.arch or '?'}, "
                           f"{card.parameters / 1e6:.1f}M parameters, input {card.input_size}x{card.input_size}x"
                           f"{card.channels}")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in (header, *rows)]
    return "\n".join(lines + ["", "labels and architecture:"] + label_lines)


@main.command(short_help="Shipped or given models and ensembles: labels, size, scores.")
@click.argument("packages", nargs=-1, type=click.Path())
def models(packages: tuple[str, ...]) -> None:
    """List the shipped model packages, or the model and ensemble PACKAGES given: labels, size, accuracy (split,
    TTA), calibration, crop, detector; for an ensemble its method, members and weights."""
    from ferkit.packages import WEIGHTS_DIR, resolve_folder, shipped_models

    if packages:
        click.echo(_models_table([resolve_folder(p) for p in packages]))
        return
    names = shipped_models()
    if not names:
        click.echo("no shipped models")
        return
    click.echo(_models_table([WEIGHTS_DIR / name for name in names]))
    from ferkit.faces import auto_choice

    detector, why = auto_choice()
    click.echo(f"\nface detector: auto = {detector} here: {why}")


@main.group(short_help="Combine model packages into an ensemble package.")
def ensemble() -> None:
    """Ensembles of model packages: an ensemble is a package every --model accepts."""


def _weights_option(ctx: click.Context, param: click.Parameter, value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"comma-separated numbers, not {value!r}") from None


@ensemble.command("build", short_help="Build an ensemble package from model packages.")
@click.argument("models_", metavar="MODELS...", nargs=-1, required=True)
@click.option("--method", type=click.Choice(["vote", "average", "rank", "accuracy", "manual"]), default="average",
              show_default=True,
              help="vote: majority vote, ties broken by mean probability (seed 001); average: unweighted mean of "
                   "probabilities (seed 002); rank: weights R(A_i)/sum R(A_i) by validation accuracy rank (seed 000); "
                   "accuracy: weights proportional to validation accuracy; manual: --weights.")
@click.option("--weights", callback=_weights_option, help="With --method manual: one weight per model, e.g. 0.6,0.4.")
@click.option("--select", "selection", type=click.Choice(["topk", "greedy"]),
              help="Choose members on the validation split: topk (the best k by accuracy, seed 001's accuracy-vs-k "
                   "curve) or greedy forward selection; the curve goes into the card and accuracy_vs_k.png.")
@click.option("--k", type=click.IntRange(min=1), help="With --select: keep this many members (default: the k with "
              "the best validation accuracy).")
@click.option("--val", type=click.Path(exists=True), help="Validation data (any DATA evaluate reads) for --select and "
              "for rank/accuracy weights.")
@click.option("--split", default=None, show_default="PublicTest",
              help="The validation split of --val (PrivateTest and Training are refused).")
@tta_option()
@click.option("--name", help="The ensemble's name in its card (default: the --out folder name).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="The ensemble package folder (new).")
def ensemble_build(models_: tuple[str, ...], method: str, weights: list[float] | None, selection: str | None,
                   k: int | None, val: str | None, split: str | None, tta: str, name: str | None, out: str) -> None:
    """Combine model packages (shipped names or folders) into an ensemble package, a self-contained folder with a
    copy of each member, which every command's --model accepts. --tta is the TTA the members are scored with on
    --val; at run time each command's own --tta applies."""
    from ferkit.ensembles import build_ensemble

    card = build_ensemble(list(models_), out, method, weights, selection, val, split, k, name, tta,
                          command="ferkit ensemble " + " ".join(sys.argv[2:]))
    members = ", ".join(f"{m.name} {m.weight:.3g}" for m in card.members)
    click.echo(f"wrote {out}: {len(card.members)} members ({members}), method {card.method}, labels "
               f"{', '.join(card.labels)}")
    val_metrics = card.metrics.get("validation")
    if val_metrics:
        click.echo(f"validation {val_metrics['split']} (n={val_metrics['n']:,}, {tta} TTA): ensemble accuracy "
                   f"{val_metrics['accuracy']:.4f}; members " +
                   ", ".join(f"{Path(p).name} {a:.4f}" for p, a in val_metrics["members"].items()))
    if card.selection:
        curve = ", ".join(f"{row['k']}: {row['accuracy']:.4f}" for row in card.selection["curve"])
        click.echo(f"accuracy vs k: {curve}; plot {Path(out) / card.selection['plot']}")


@main.command(short_help="Train a model from a YAML recipe (resumable; on N workers too).")
@click.argument("config", callback=_existing_path)
@click.option("--out", type=click.Path(file_okay=False), help="Run folder (default: runs/<recipe name>).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last epoch checkpoint (on any "
              "number of workers).")
@once_option("--device", default="cpu", type=click.Choice(DEVICES), help="Where to train (cuda: one GPU per worker).")
@click.option("--epochs", type=click.IntRange(min=1),
              help="Override the recipe's epoch count; with phases, every phase gets this many (1 = smoke run).")
@click.option("--limit", type=click.IntRange(min=1),
              help="Train on the first N samples of each train source after a seeded shuffle (deterministic).")
@click.option("--val-limit", type=click.IntRange(min=1), help="The same for each validation and test source.")
@engine_option()
@address_option()
@once_option("--workers", type=click.IntRange(min=1),
             help="With --engine ray: data-parallel training workers (default 2); the recipe's batch_size is the "
                  "global batch, shared among them. Under torchrun, --nproc-per-node sets the workers instead.")
def train(config: str, out: str | None, resume: bool, device: str, epochs: int | None, limit: int | None,
          val_limit: int | None, engine: str, address: str | None, workers: int | None) -> None:
    """Train a model from a YAML recipe; checkpoints every epoch, --resume continues exactly.

    Overrides (--epochs, --limit, --val-limit) are written into the run's recipe.yaml; --resume needs the same ones.
    Several workers (torchrun --nproc-per-node N -m ferkit.cli train ..., or --engine ray --workers N) train one
    model data-parallel: batch_size is the global batch, rank 0 writes the run (docs/SCALING.md).
    """
    require("train", "ferkit train")
    from ferkit.train.config import load_config

    if engine != "ray" and (workers is not None or address is not None):
        raise click.UsageError(f"{'--workers' if workers is not None else '--address'} needs --engine ray "
                               f"(under torchrun, --nproc-per-node sets the workers)")
    cfg = load_config(config)
    if epochs is not None:
        cfg.set_epochs(epochs)
    if limit is not None:
        cfg.data.limit = limit
    if val_limit is not None:
        cfg.data.val_limit = val_limit
    run_dir = Path(out) if out else Path("runs") / cfg.name
    prepare_out_dir(str(run_dir))
    command = "ferkit train " + " ".join(sys.argv[2:])
    if engine == "ray":
        from ferkit.scale.train import fit_on_ray

        summary = fit_on_ray(cfg, run_dir, workers or 2, resume, device, address, command)
    else:
        from ferkit.train.distributed import from_environment
        from ferkit.train.loop import fit

        team, device = from_environment(device)
        if not team.is_main:  # one worker speaks: the others' progress and messages would repeat rank 0's
            logging.getLogger("ferkit").setLevel(logging.WARNING)
        summary = fit(cfg, run_dir, resume=resume, device=device, command=command, workers=team)
        if not team.is_main:
            return
    click.echo(f"run {summary['run']}: {plural(summary['epochs_done'], 'epoch')}, "
               f"best val {cfg.monitor} {summary['best_val']:.4f}")


@main.command("export", short_help="Export a training run to a model package.")
@click.argument("run", callback=_existing_path)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Package folder to write.")
@click.option("--which", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Checkpoint: best by the validation metric, or the last epoch.")
@click.option("--name", help="Model name in the card (default: the --out folder name).")
@click.option("--crop-policy", type=click.Choice(["box", "margin", "eyes"]), default="margin", show_default=True,
              help="How faces must be cropped for this model at run time (as in its training data).")
@click.option("--crop-margin", type=float, default=0.2, show_default=True,
              help="For --crop-policy margin: fraction of the box added on every side (see benchmarks/crop_framing.py).")
@click.option("--no-evaluate", is_flag=True, help="Skip measuring the recipe's test split into the card.")
@click.option("--quantize", type=click.Choice(["int8"]), help="Static int8 quantisation calibrated on training images "
              "(about 3x faster on CPU, 4x smaller; the card records fp32 and int8 scores).")
@click.option("--calibrate", "calibrate_method", type=click.Choice(["temperature", "vector", "none"]),
              default="temperature", show_default=True,
              help="Calibrate confidences on the recipe's validation split (as `ferkit calibrate` does); none: keep "
                   "the raw probabilities.")
def export_cmd(run: str, out: str, which: str, name: str | None, crop_policy: str, crop_margin: float,
               no_evaluate: bool, quantize: str | None, calibrate_method: str) -> None:
    """Export a training run to a model package (ONNX + card), checking ONNX/torch parity."""
    require("train", "ferkit export")
    from ferkit.train.export_run import export_run

    if not Path(run).is_dir():
        raise UserInputError(f"{run}: not a run folder (give the --out folder of `ferkit train`)")
    created = not Path(out).exists()
    prepare_out_dir(out)
    command = "ferkit export " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else ""
    try:
        card = export_run(run, out, which, name, crop_policy, crop_margin, evaluate=not no_evaluate, command=command,
                          quantize=quantize, calibrate=None if calibrate_method == "none" else calibrate_method)
    except BaseException:
        if created and not any(Path(out).iterdir()):
            Path(out).rmdir()  # a refused run leaves no empty package folder behind
        raise
    click.echo(f"wrote {out}: {card.parameters:,} parameters, ONNX parity max abs diff "
               f"{card.training['onnx_parity_max_abs_diff']:.2e}")
    if card.calibration:
        temperatures = ", ".join(f"{t} {f['temperature']:.3f}" for t, f in card.calibration["per_tta"].items())
        click.echo(f"calibrated ({card.calibration['method']}) on {card.calibration['fitted_on']}: temperature "
                   f"{temperatures}")
    if card.metrics:
        click.echo(f"test {card.metrics['split']}: accuracy {card.metrics['accuracy']:.4f}, "
                   f"flip-TTA {card.metrics['flip_tta_accuracy']:.4f}, macro-F1 {card.metrics['macro_f1']:.4f}, "
                   f"ECE {card.metrics['ece']:.4f}")


@main.command(short_help="Where a model looks: Grad-CAM per face, class images.")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for the overlay PNGs, faces.csv and explain.json (or the class grids).")
@once_option("--class", "target", metavar="NAME",
             help="Explain this class (a label name, e.g. happy) for every face (default: each face's predicted "
                  "class).")
@model_option()
@detector_option()
@min_face_option()
@once_option("--max-faces", type=click.IntRange(min=1), help="Explain only the N largest faces per image.")
@click.option("--classes", "classes", is_flag=True,
              help="Instead of photos: draw, per model, the input that maximises each class (seed 003), as a grid.")
@click.option("--steps", type=click.IntRange(min=1), default=128, show_default=True,
              help="With --classes: optimisation steps per grid.")
@click.option("--seed", type=int, default=0, show_default=True, help="With --classes: seed of the starting noise.")
def explain(paths: tuple[str, ...], out: str, target: str | None, model: str, detector: str, min_face: int,
            max_faces: int | None, classes: bool, steps: int, seed: int) -> None:
    """Show where a model looks: Grad-CAM of every face, overlaid on each whole photo.

    Needs the 'explain' extra (torch, pytorch-grad-cam): pip install "ferkit[explain]" (from a checkout:
    pip install -e ".[explain]"), and a model package with weights.safetensors (`ferkit export` writes it; the
    shipped default has it). For an ensemble package, each member's CAM is drawn too (PHOTO.MEMBER.png) beside
    their weighted average (PHOTO.png).

    --classes draws, instead, the input each class responds to most (an optimised image, regularised), one grid
    per model: classes-MODEL.png.
    """
    require("explain", "ferkit explain")
    if classes and paths:
        raise UserInputError("--classes draws each class of the model and takes no photos; drop the paths")
    if not classes and not paths:
        raise click.UsageError("give photos or folders to explain (or --classes for class visualisations)")
    if paths:
        check_inputs(paths)
    prepare_out_dir(out)
    if classes:
        _explain_classes(model, out, steps, seed)
        return
    from ferkit.explain.gradcam import Explainer
    from ferkit.explain.run import explain_paths

    failed: list[str] = []

    def on_error(message: str) -> None:
        failed.append(message)
        _report_skip(message)

    def show(result) -> None:
        if not result.faces:
            click.echo(f"{result.source}: no face found")
        for i, f in enumerate(result.faces):
            x, y, w, h = f.box
            click.echo(f"{result.source}: face {i} at x={x} y={y} w={w} h={h}: {f.target} {f.probability:.2f}"
                       + ("" if f.target == f.predicted else f" (predicted {f.predicted})"))

    explainer = Explainer(model, detector, target, min_face=min_face, max_faces=max_faces)
    records = explain_paths(list(paths), explainer, out, on_error, show)
    faces = sum(len(r["faces"]) for r in records)
    click.echo(f"{plural(len(records), 'image')}, {plural(faces, 'face')}, {len(failed):,} failed; overlays, "
               f"faces.csv and explain.json in {out}", err=True)
    if failed:
        sys.exit(1)


def _explain_classes(model: str, out: str, steps: int, seed: int) -> None:
    import cv2

    from ferkit.explain.classvis import class_grid, class_images
    from ferkit.io import atomic_write

    per_model = class_images(model, steps=steps, seed=seed)
    summary = {}
    for name, images in per_model.items():
        grid = class_grid(images, f"{name}: input optimised per class ({steps} steps, seed {seed})")
        ok, png = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        target = Path(out) / f"classes-{name}.png"
        atomic_write(target, lambda tmp: tmp.write_bytes(png.tobytes()))
        summary[name] = {ci.label: {"start_probability": round(ci.start_probability, 4),
                                    "probability": round(ci.probability, 4)} for ci in images}
        click.echo(f"wrote {target}: " + ", ".join(f"{ci.label} {ci.probability:.2f}" for ci in images))
    _write_json_atomic(str(Path(out) / "classes.json"), {"steps": steps, "seed": seed, "models": summary})


@main.command(short_help="The HTTP API and a web page for photos and the webcam.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback: only this machine; see docs/SERVE.md before exposing it).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port.")
@click.option("--model", "models", multiple=True, default=("default",), show_default=True, metavar="NAME|FOLDER",
              help="Shipped model name, model or ensemble package folder; repeat to load several (the first is "
                   "the default).")
@detector_option()
@tta_option()
@click.option("--api-key", envvar="FERKIT_API_KEY", show_envvar=True,
              help="Require this key on every endpoint but /health (prefer the environment variable: a command "
                   "line is visible to other users).")
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True,
              help="Largest image file accepted (a batch may hold --max-files of them).")
@click.option("--max-video-mb", type=click.FloatRange(min=0, min_open=True), default=500.0, show_default=True,
              help="Largest video accepted by POST /v1/videos (where `ferkit video` is installed).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=50_000_000, show_default=True,
              help="Largest image accepted, in pixels, checked from its header before decoding.")
@click.option("--max-files", type=click.IntRange(min=1), default=16, show_default=True,
              help="Most images in one batch request.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Seconds a request may take, reading its body included (slow clients get 408).")
@workers_option()
@click.option("--max-batch", type=click.IntRange(min=1), default=16, show_default=True,
              help="Most images of concurrent requests that go through the model together (1: no batching).")
def serve(host: str, port: int, models: tuple[str, ...], detector: str, tta: str, api_key: str | None,
          max_upload_mb: float,
          max_video_mb: float, max_pixels: int, max_files: int, timeout_s: float, workers: int | None,
          max_batch: int) -> None:
    """Serve the HTTP API (/v1/analyze, /docs) and the web page (/) until Ctrl-C."""
    require("serve", "ferkit serve")
    from ferkit.serve.app import run
    from ferkit.serve.config import ServeConfig

    config = ServeConfig(host=host, port=port, models=models, detector=detector, tta=tta, api_key=api_key,
                         max_upload_mb=max_upload_mb, max_video_mb=max_video_mb, max_pixels=max_pixels,
                         max_files=max_files, timeout_s=timeout_s, workers=workers, max_batch=max_batch)
    if not api_key and host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"ferkit serve: warning: listening on {host} without an API key: anyone who can reach this "
                   "machine can use it (set FERKIT_API_KEY; see docs/SERVE.md)", err=True)
    click.echo(f"ferkit serve: loading models, then http://{host}:{port}/ (API docs at /docs); Ctrl-C stops it",
               err=True)
    run(config)


# --- video (ferkit.video): self-contained, so changes to the shared options above rebase cleanly -----------------

@main.command(short_help="People's emotions over time in videos or a live camera.")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--camera", help="Analyze live camera N (or a stream URL) instead of files; drops frames rather than "
              "falling behind; Ctrl-C stops, outputs stay valid.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for frames.csv, people.csv/json, timeline.png, annotated.mp4, summary.json, report.html "
                   "(several videos: a subfolder each).")
@click.option("--stride", type=click.IntRange(min=1), help="Detect faces on every K-th frame (tracker in between).")
@click.option("--fps", "detect_fps", type=click.FloatRange(min=0, min_open=True),
              help="Detect and classify faces this many times per second of video (default 5; ignored with "
                   "--stride); the tracker carries boxes and scores in between.")
@model_option()
@detector_option()
@min_face_option()
@click.option("--max-people", type=click.IntRange(min=1), help="Follow at most the N largest faces per frame.")
@click.option("--start", type=click.FloatRange(min=0), default=0.0, show_default=True, help="Start at this second.")
@click.option("--end", type=click.FloatRange(min=0, min_open=True), help="Stop at this second.")
@click.option("--smooth", type=click.FloatRange(min=0), default=0.5, show_default=True,
              help="Time constant (seconds) of each person's moving average of scores; 0 = no smoothing.")
@click.option("--no-reid", is_flag=True, help="Do not re-identify people who leave and come back (no face descriptors).")
@click.option("--lecture", is_flag=True, help="The lecture view: the audience per second and minute, low/high moments.")
@click.option("--aggregate-only/--per-person", default=None,
              help="Keep no identities and write nothing per person (the default with --lecture).")
@click.option("--no-annotate", is_flag=True, help="Do not write annotated.mp4.")
@click.option("--classify-every-frame", is_flag=True,
              help="Also classify the tracker's boxes between detections (default: they keep each person's last "
                   "scores; classifying every frame costs ~4 ms per face per frame).")
@click.option("--scan-every", "scan_s", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds of video between whole-frame face searches; the detections in between look only around "
                   "the faces already followed (a new face is found within this time); 0 = search every time.")
@click.option("--window/--no-window", default=True, show_default=True,
              help="With --camera: show the overlay window where a display exists (q or Esc stops); "
                   "--no-window runs headless.")
@tta_option()
@engine_option()
@address_option()
@click.option("--segment-seconds", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="With --engine ray: seconds of video per task (each video is cut into segments run in parallel).")
@click.option("--overlap-seconds", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="With --engine ray: warm-up seconds read before each segment, to stitch people's ids and warm "
                   "up tracking and smoothing (docs/SCALING.md).")
def video(paths: tuple[str, ...], camera: str | None, out: str | None, stride: int | None, detect_fps: float | None,
          model: str, detector: str, min_face: int, max_people: int | None, start: float, end: float | None,
          smooth: float, no_reid: bool, lecture: bool, aggregate_only: bool | None, no_annotate: bool,
          classify_every_frame: bool, scan_s: float, window: bool, tta: str, engine: str, address: str | None,
          segment_seconds: float, overlap_seconds: float) -> None:
    """Follow every person through videos (mp4, avi, mkv, webm, mov; folders) or a live camera: emotions per
    person over time, the group per second, and the lecture view (see docs/VIDEO.md).

    By default faces are detected and classified 5 times per second of video, the tracker carrying boxes and
    scores in between (--fps/--stride, --classify-every-frame), with the auto detector (MTCNN: it finds faces from
    20 px, as in an audience; --detector dlib is faster on close-ups but misses faces under ~80 px)."""
    if (camera is None) == (not paths):
        raise UserInputError("give video files/folders or --camera N (not both)")
    if engine == "ray" and camera is not None:
        raise UserInputError("--engine ray cuts video files into segments; a live --camera runs with --engine local")
    require("video", "ferkit video")
    prepare_out_dir(out)
    from ferkit.recognizer import Recognizer
    from ferkit.video import VideoOptions

    options = VideoOptions(stride=stride, detect_fps=detect_fps, max_people=max_people, start=start, end=end,
                           smooth_s=smooth, reid=not no_reid, lecture=lecture,
                           aggregate_only=lecture if aggregate_only is None else aggregate_only,
                           annotate=not no_annotate, classify_every_frame=classify_every_frame, scan_s=scan_s)
    recognizer = Recognizer.for_video(model, detector, min_face=min_face, tta=tta)
    if camera is not None:
        from ferkit.video.live import run_camera

        result = run_camera(camera, recognizer, out, options, echo=lambda m: click.echo(m, err=True), window=window)
        click.echo(_video_line(result, out))
        return
    if engine == "ray":
        from ferkit.scale.video import run_videos_on_ray

        spec = {"model": model, "detector": detector, "min_face": min_face, "tta": tta}
        summary = run_videos_on_ray(list(paths), recognizer, spec, out, options, segment_seconds, overlap_seconds,
                                    address, on_error=_report_line)
    else:
        from ferkit.video.run import run_videos

        summary = run_videos(list(paths), recognizer, out, options, on_error=_report_line)
    for result in summary.results:
        click.echo(_video_line(result, None))
    fps = summary.frames / summary.seconds if summary.seconds else 0.0
    click.echo(f"{len(summary.results)} videos, {summary.frames} frames at {fps:.1f} fps, {len(summary.failed)} "
               f"failed" + (f"; results in {out}" if out else ""), err=True)
    if summary.failed:
        sys.exit(1)


def _report_line(message: str) -> None:
    """A bad or ignored input: one line (through logging, so it prints above any progress bar)."""
    log.warning("%s", message)


def _video_line(result, out: str | None) -> str:
    clip = result.clip
    n = len(result.people)
    who = "" if result.settings.get("aggregate_only") else f", {n} {'person' if n == 1 else 'people'}"
    what = (f"mostly {clip['dominant_emotion']} ({clip['group']} {clip['group_shares'][clip['group']]:.0%})"
            if clip["faces_seen"] else "no face found")
    return f"{result.source}: {result.frames} frames ({result.duration_s:.1f} s){who}, {what}"


@main.group(short_help="Whole-clip emotion: train and apply clip classifiers.")
def clips() -> None:
    """Whole-clip emotion (seed 004): face embeddings pooled per clip, then LinearSVC or a random forest."""


@clips.command("train", short_help="Train a clip classifier on a folder of clips per class.")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the classifier.")
@click.option("--classifier", type=click.Choice(["linear-svc", "random-forest"]), default="linear-svc",
              show_default=True)
@click.option("--group", is_flag=True, help="Group descriptor: mean/std over the faces of each frame, then over frames "
              "(default: the largest face of each frame; mean/std/min/max over frames).")
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True, help="Cross-validation folds.")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True, help="Use every K-th frame.")
@click.option("--model", default="default", show_default=True, help="Model package whose embedding is used.")
@click.option("--detector", default="auto", show_default=True, help="auto, mtcnn, dlib, haar, mediapipe.")
def clips_train(folder: str, out: str, classifier: str, group: bool, folds: int, every: int, model: str,
                detector: str) -> None:
    """Train a clip classifier on FOLDER (one subfolder of video clips per class); prints a cross-validated report."""
    from ferkit.recognizer import Recognizer
    from ferkit.video import clips as clip_lib

    failed: list[str] = []

    def bad(message: str) -> None:
        failed.append(message)
        _report_line(message)

    recognizer = Recognizer(model, detector, workers=1)
    report = clip_lib.train(folder, out, recognizer, classifier, "group" if group else "single", folds, every=every,
                            on_error=bad)
    counts = ", ".join(f"{k} {v}" for k, v in report["per_class"].items())
    click.echo(f"{report['clips']} clips ({counts}); {report['kind']} descriptors of {report['descriptor_dim']} "
               f"dims; {classifier}")
    if report["cv_accuracy"] is not None:
        click.echo(f"{report['cv_folds']}-fold cross-validated accuracy {report['cv_accuracy']:.3f}")
    click.echo(report["cv_report"])
    click.echo(f"classifier in {out}", err=True)
    if failed:
        sys.exit(1)


@clips.command("predict", short_help="Label whole clips with a trained clip classifier.")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--classifier", "classifier_dir", required=True, type=click.Path(file_okay=False),
              help="A folder written by `ferkit clips train`.")
@click.option("--model", default="default", show_default=True, help="The model package the classifier was trained on.")
@click.option("--detector", default="auto", show_default=True, help="auto, mtcnn, dlib, haar, mediapipe.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the predictions as JSON.")
def clips_predict(paths: tuple[str, ...], classifier_dir: str, model: str, detector: str,
                  json_out: str | None) -> None:
    """Label whole clips (files or folders) with a trained clip classifier."""
    from ferkit.recognizer import Recognizer
    from ferkit.video import clips as clip_lib

    failed: list[str] = []

    def bad(message: str) -> None:
        failed.append(message)
        _report_line(message)

    rows = clip_lib.predict(list(paths), classifier_dir, Recognizer(model, detector, workers=1), on_error=bad)
    for row in rows:
        scores = " ".join(f"{k} {v:.2f}" for k, v in row.get("scores", {}).items())
        click.echo(f"{row['clip']}: {row['label']}" + (f" [{scores}]" if scores else ""))
    if json_out:
        _write_json_atomic(json_out, {"predictions": rows, "failed": failed})
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
