"""The `ferkit` command. Each subcommand is a thin shell over a library function; errors end in one line."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ferkit import __version__


class FerkitGroup(click.Group):
    """Turns expected errors (bad input, bad recipe) into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (ValueError, OSError, KeyError) as exc:
            if isinstance(exc, click.ClickException):
                raise
            click.echo(f"ferkit: error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=FerkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ferkit")
def main() -> None:
    """ferkit: facial expression recognition — analyze, evaluate, train and export emotion models."""


WORKERS = click.option("--workers", type=click.IntRange(min=1),
                       help="Images decoded and detected at once, in threads (default: one per core; detectors that "
                            "allow it).")


FORCE = click.option("--force", is_flag=True,
                     help="With --out: if it holds results made with other settings, drop them and start over.")


def _report_skip(message: str) -> None:
    """One line per skipped input, printed above any progress bar instead of glued onto it."""
    from tqdm import tqdm

    tqdm.write(f"skipped {message}", file=sys.stderr)


def _write_json_atomic(path: str, payload: dict) -> None:
    import json

    from ferkit.io import atomic_write

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2) + "\n"))


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for results.json, faces.csv and annotated/ (a rerun skips finished images).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write all results as JSON ('-' = stdout).")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False), help="Write one row per face as CSV.")
@click.option("--no-annotate", is_flag=True, help="With --out, do not write annotated images.")
@click.option("--model", default="default", show_default=True, help="Shipped model name or package folder.")
@click.option("--detector", default="auto", show_default=True, help="auto, dlib, haar, mediapipe.")
@click.option("--min-face", type=int, default=0, show_default=True, help="Ignore faces smaller than this (pixels).")
@click.option("--max-faces", type=int, help="Keep only the N largest faces per image.")
@click.option("--tta", type=click.Choice(["none", "flip"]), default="flip", show_default=True,
              help="flip: average each face with its mirror image (more accurate, ~2 ms per photo).")
@WORKERS
@FORCE
def analyze(paths: tuple[str, ...], out: str | None, json_out: str | None, csv_out: str | None, no_annotate: bool,
            model: str, detector: str, min_face: int, max_faces: int | None, tta: str, workers: int | None,
            force: bool) -> None:
    """Find every face in images and folders and classify its emotion."""
    from ferkit.analyze import analyze_paths, prepare_output_file, write_csv, write_json
    from ferkit.recognizer import Recognizer

    for target in (json_out, csv_out):
        if target and target != "-":
            prepare_output_file(target)
    recognizer = Recognizer(model, detector, min_face=min_face, max_faces=max_faces, tta=tta, workers=workers)
    summary = analyze_paths(list(paths), recognizer, out, annotated=not no_annotate,
                            on_error=_report_skip, force=force)
    if out is None and not json_out:
        for r in summary.results:
            if not r.faces:
                click.echo(f"{r.source}: no face found")
            for i, f in enumerate(r.faces):
                x, y, w, h = f.box
                top3 = ", ".join(f"{k} {v:.2f}" for k, v in sorted(f.scores.items(), key=lambda kv: -kv[1])[:3])
                click.echo(f"{r.source}: face {i + 1} at x={x} y={y} w={w} h={h}: {f.emotion} ({f.confidence:.2f}, "
                           f"{f.group}) [{top3}]")
    if json_out == "-":
        import json

        click.echo(json.dumps([r.to_dict() for r in summary.results], indent=1))
    elif json_out:
        write_json(Path(json_out), summary.results)
    if csv_out:
        write_csv(Path(csv_out), summary.results, recognizer.runtime.labels)
    done = f", {summary.skipped_done} already done" if summary.skipped_done else ""
    click.echo(f"{summary.images} images, {summary.faces} faces{done}, {len(summary.failed)} failed"
               + (f"; results in {out}" if out else ""), err=True)
    if summary.failed:
        sys.exit(1)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for ranking.csv, contact_sheet.jpg and analyze's results (a rerun skips finished images).")
@click.option("--top", type=click.IntRange(min=0), default=12, show_default=True, help="Photos to list and to put on the contact sheet.")
@click.option("--by", "--score", "by", default="positive", show_default=True,
              help="What a photo is scored on: positive, negative, group:neutral, or a label (happy, neutral, ...).")
@click.option("--weight", type=click.Choice(["area-confidence", "area", "confidence", "none"]),
              default="area-confidence", show_default=True,
              help="How much each face counts within its photo: box area x top-label probability, either, or equally.")
@click.option("--columns", type=click.IntRange(min=1), default=4, show_default=True, help="Contact sheet columns.")
@click.option("--annotate", "annotated", is_flag=True, help="With --out, also write annotated images.")
@click.option("--model", default="default", show_default=True, help="Shipped model name or package folder.")
@click.option("--detector", default="auto", show_default=True, help="auto, dlib, haar, mediapipe.")
@click.option("--min-face", type=int, default=0, show_default=True, help="Ignore faces smaller than this (pixels).")
@WORKERS
@FORCE
def rank(paths: tuple[str, ...], out: str | None, top: int, by: str, weight: str, columns: int, annotated: bool,
         model: str, detector: str, min_face: int, workers: int | None, force: bool) -> None:
    """Rank photos by their faces' expressions (e.g. to pick smiling photos for a photo book).

    A photo's score is the mean over its faces of P(--by), each face weighted by --weight; photos without faces
    rank last with no score. See ferkit.rank.photo_score for the formula.
    """
    from ferkit.rank import rank_paths
    from ferkit.recognizer import Recognizer

    recognizer = Recognizer(model, detector, min_face=min_face, workers=workers)
    summary = rank_paths(list(paths), recognizer, out, by=by, weight=weight, top=top, columns=columns,
                         annotated=annotated, on_error=_report_skip, force=force)
    for p in summary.ranking[:top]:
        score = "   -  " if p.score is None else f"{p.score:.3f}"
        n = len(p.result.faces)
        click.echo(f"{p.rank:>4}  {score}  {n:>2} face{' ' if n == 1 else 's'}  {p.result.source}")
    no_face = summary.no_face
    if no_face:
        click.echo(f"{len(no_face)} photo{'' if len(no_face) == 1 else 's'} without faces (ranked last, no score)",
                   err=True)
    a = summary.analysis
    done = f", {a.skipped_done} already done" if a.skipped_done else ""
    where = f"; ranking in {summary.csv_path}" if summary.csv_path else ""
    sheet = f", contact sheet {summary.sheet_path}" if summary.sheet_path else ""
    click.echo(f"{len(summary.ranking)} photos ranked by {summary.target} (weight {weight}): {a.images} analysed, "
               f"{a.faces} faces{done}, {len(a.failed)} failed{where}{sheet}", err=True)
    if a.failed:
        sys.exit(1)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed runs of each photo (median taken).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the numbers as JSON.")
@click.option("--batches", default="1,256", show_default=True, help="Batch sizes for classification-only throughput.")
@click.option("--min-seconds", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Time each classification batch size for at least this long.")
@click.option("--threads", type=int, help="ONNX Runtime intra-op threads (default: all cores).")
@click.option("--model", default="default", show_default=True, help="Shipped model name or package folder.")
@click.option("--detector", default="auto", show_default=True, help="auto, dlib, haar, mediapipe.")
@WORKERS
def bench(paths: tuple[str, ...], repeat: int, json_out: str | None, batches: str, min_seconds: float,
          threads: int | None, model: str, detector: str, workers: int | None) -> None:
    """Time each stage (decode, detect, align+crop, classify) on photos, and classification throughput."""
    from ferkit.bench import bench_paths, format_report
    from ferkit.recognizer import Recognizer

    try:
        sizes = [int(b) for b in batches.split(",") if b.strip()]
    except ValueError:
        raise ValueError(f"--batches must be comma-separated integers, not {batches!r}") from None
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--batches must be positive integers, not {batches!r}")
    recognizer = Recognizer(model, detector, threads=threads, workers=workers)
    report = bench_paths(list(paths), recognizer, repeat=repeat, batches=sizes,
                         min_seconds=min_seconds, progress=True)
    for msg in report.failed:
        click.echo(f"skipped {msg}", err=True)
    click.echo(format_report(report))
    if json_out:
        _write_json_atomic(json_out, report.to_dict())
    if report.failed:
        click.echo(f"{len(report.failed)} files could not be read (left out of the timings)", err=True)
        sys.exit(1)


@main.group()
def data() -> None:
    """Inspect datasets (class folders, FER2013 csv, FER+ folders, manifest csv)."""


@data.command("stats")
@click.argument("path", type=click.Path(exists=True))
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the statistics as JSON.")
@click.option("--no-check", is_flag=True, help="Do not decode every image (faster; unreadable files go unnoticed).")
def data_stats(path: str, json_out: str | None, no_check: bool) -> None:
    """Counts per split and class, image sizes and modes, unreadable files, FER+ protocol counts."""
    from ferkit.data.stats import dataset_stats, format_stats

    stats = dataset_stats(path, check_images=not no_check)
    click.echo(format_stats(stats))
    if json_out:
        _write_json_atomic(json_out, stats.to_dict())


@main.command()
@click.argument("data_path", metavar="DATA", type=click.Path(exists=True))
@click.option("--model", default="default", show_default=True, help="Shipped model name or package folder.")
@click.option("--split", help="Training, PublicTest or PrivateTest (also train/val/test).")
@click.option("--grouping", type=click.Choice(["7", "8", "6", "3"]), help="Collapse labels into this space first.")
@click.option("--tta", type=click.Choice(["none", "flip"]), default="none", show_default=True,
              help="Test-time augmentation: average with the mirrored crop.")
@click.option("--ferplus-mode", type=click.Choice(["majority", "plurality", "soft"]), default="majority",
              show_default=True, help="FER+ labelling protocol.")
@click.option("--faces", type=click.Choice(["none", "detect", "auto"]), default="none", show_default=True,
              help="none: DATA holds face crops; detect: find the largest face in each image (whole photos); "
                   "auto: detect only in images more than twice the model's input size.")
@click.option("--detector", default="auto", show_default=True, help="Face detector for --faces detect/auto.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the full report as JSON.")
@click.option("--plots", type=click.Path(file_okay=False), help="Write confusion matrices (PNG) into this folder.")
def evaluate(data_path: str, model: str, split: str | None, grouping: str | None, tta: str, ferplus_mode: str,
             faces: str, detector: str, json_out: str | None, plots: str | None) -> None:
    """Accuracy, macro-F1, top-2, per-class P/R/F1 and confusion of a model on a labelled dataset."""
    from ferkit.evaluate import evaluate_dataset, format_report, save_confusion_plots

    report = evaluate_dataset(data_path, model, split, grouping, tta, ferplus_mode, faces, detector, progress=True)
    for problem in report["problems"]:
        click.echo(f"skipped {problem}", err=True)
    click.echo(format_report(report))
    if json_out:
        _write_json_atomic(json_out, report)
    if plots:
        for p in save_confusion_plots(report, plots, title=Path(report["model"]).name):
            click.echo(f"wrote {p}")


@main.command()
def models() -> None:
    """List the shipped model packages with their labels and scores."""
    from ferkit.models.package import WEIGHTS_DIR, read_card, shipped_models

    names = shipped_models()
    if not names:
        click.echo("no shipped models")
    for name in names:
        card = read_card(WEIGHTS_DIR / name)
        acc = card.metrics.get("accuracy")
        click.echo(f"{name}: {card.architecture}, {card.parameters:,} params, {card.input_size}x{card.input_size}x"
                   f"{card.channels}, labels {','.join(card.labels)}" + (f", accuracy {acc:.4f}" if acc else ""))


@main.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="Run folder (default: runs/<recipe name>).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last epoch checkpoint.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--epochs", type=click.IntRange(min=1),
              help="Override the recipe's epoch count; with phases, every phase gets this many (1 = smoke run).")
@click.option("--limit", type=click.IntRange(min=1),
              help="Train on the first N samples of each train source after a seeded shuffle (deterministic).")
@click.option("--val-limit", type=click.IntRange(min=1), help="The same for each validation and test source.")
def train(config: str, out: str | None, resume: bool, device: str, epochs: int | None, limit: int | None,
          val_limit: int | None) -> None:
    """Train a model from a YAML recipe; checkpoints every epoch, --resume continues exactly.

    Overrides (--epochs, --limit, --val-limit) are written into the run's recipe.yaml; --resume needs the same ones.
    """
    from ferkit.train.config import load_config
    from ferkit.train.loop import fit

    cfg = load_config(config)
    if epochs is not None:
        cfg.set_epochs(epochs)
    if limit is not None:
        cfg.data.limit = limit
    if val_limit is not None:
        cfg.data.val_limit = val_limit
    run_dir = Path(out) if out else Path("runs") / cfg.name
    summary = fit(cfg, run_dir, resume=resume, device=device, command="ferkit train " + " ".join(sys.argv[2:]))
    click.echo(f"run {summary['run']}: {summary['epochs_done']} epochs, best val {cfg.monitor} {summary['best_val']:.4f}")


@main.command("export")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
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
def export_cmd(run: str, out: str, which: str, name: str | None, crop_policy: str, crop_margin: float,
               no_evaluate: bool, quantize: str | None) -> None:
    """Export a training run to a model package (ONNX + card), checking ONNX/torch parity."""
    from ferkit.train.export_run import export_run

    command = "ferkit export " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else ""
    card = export_run(run, out, which, name, crop_policy, crop_margin, evaluate=not no_evaluate, command=command,
                      quantize=quantize)
    click.echo(f"wrote {out}: {card.parameters:,} parameters, ONNX parity max abs diff "
               f"{card.training['onnx_parity_max_abs_diff']:.2e}")
    if card.metrics:
        click.echo(f"test {card.metrics['split']}: accuracy {card.metrics['accuracy']:.4f}, "
                   f"flip-TTA {card.metrics['flip_tta_accuracy']:.4f}, macro-F1 {card.metrics['macro_f1']:.4f}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback: only this machine; see docs/SERVE.md before exposing it).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port.")
@click.option("--model", "models", multiple=True, default=("default",), show_default=True,
              help="Shipped model name or package folder; repeat to load several (the first is the default).")
@click.option("--detector", default="auto", show_default=True, help="auto, dlib, haar, mediapipe.")
@click.option("--api-key", envvar="FERKIT_API_KEY", show_envvar=True,
              help="Require this key on every endpoint but /health (prefer the environment variable: a command "
                   "line is visible to other users).")
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True,
              help="Largest image file accepted (a batch may hold --max-files of them).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=50_000_000, show_default=True,
              help="Largest image accepted, in pixels, checked from its header before decoding.")
@click.option("--max-files", type=click.IntRange(min=1), default=16, show_default=True,
              help="Most images in one batch request.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Seconds a request may take, reading its body included (slow clients get 408).")
@click.option("--workers", type=click.IntRange(min=1),
              help="Images decoded and detected at once, in threads (default: one per core).")
@click.option("--max-batch", type=click.IntRange(min=1), default=16, show_default=True,
              help="Most images of concurrent requests that go through the model together (1: no batching).")
def serve(host: str, port: int, models: tuple[str, ...], detector: str, api_key: str | None, max_upload_mb: float,
          max_pixels: int, max_files: int, timeout_s: float, workers: int | None, max_batch: int) -> None:
    """Serve the HTTP API (/v1/analyze, /docs) and the web page (/) until Ctrl-C."""
    try:
        from ferkit.serve.app import run
    except ImportError as exc:
        from ferkit.errors import missing_extra

        raise missing_extra("serve", "ferkit serve") from exc
    from ferkit.serve.config import ServeConfig

    config = ServeConfig(host=host, port=port, models=models, detector=detector, api_key=api_key,
                         max_upload_mb=max_upload_mb, max_pixels=max_pixels, max_files=max_files,
                         timeout_s=timeout_s, workers=workers, max_batch=max_batch)
    if not api_key and host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"ferkit serve: warning: listening on {host} without an API key: anyone who can reach this "
                   "machine can use it (set FERKIT_API_KEY; see docs/SERVE.md)", err=True)
    click.echo(f"ferkit serve: loading models, then http://{host}:{port}/ (API docs at /docs); Ctrl-C stops it",
               err=True)
    run(config)


if __name__ == "__main__":
    main()
