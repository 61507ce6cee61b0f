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


def _write_json_atomic(path: str, payload: dict) -> None:
    import json
    import os

    tmp = f"{path}.tmp"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


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
@click.option("--tta", type=click.Choice(["none", "flip"]), default="none", show_default=True)
def analyze(paths: tuple[str, ...], out: str | None, json_out: str | None, csv_out: str | None, no_annotate: bool,
            model: str, detector: str, min_face: int, max_faces: int | None, tta: str) -> None:
    """Find every face in images and folders and classify its emotion."""
    from ferkit.analyze import analyze_paths, write_csv, write_json
    from ferkit.recognizer import Recognizer

    recognizer = Recognizer(model, detector, min_face=min_face, max_faces=max_faces, tta=tta)
    summary = analyze_paths(list(paths), recognizer, out, annotated=not no_annotate,
                            on_error=lambda msg: click.echo(f"skipped {msg}", err=True))
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
@click.option("--epochs", type=int, help="Override the recipe's epoch count (e.g. 1 for a smoke run).")
def train(config: str, out: str | None, resume: bool, device: str, epochs: int | None) -> None:
    """Train a model from a YAML recipe; checkpoints every epoch, --resume continues exactly."""
    from ferkit.train.config import load_config
    from ferkit.train.loop import fit

    cfg = load_config(config)
    if epochs is not None:
        cfg.epochs = epochs
    run_dir = Path(out) if out else Path("runs") / cfg.name
    summary = fit(cfg, run_dir, resume=resume, device=device)
    click.echo(f"run {summary['run']}: {summary['epochs_done']} epochs, best val {cfg.monitor} {summary['best_val']:.4f}")


@main.command("export")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Package folder to write.")
@click.option("--which", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Checkpoint: best by the validation metric, or the last epoch.")
@click.option("--name", help="Model name in the card (default: the --out folder name).")
@click.option("--crop-policy", type=click.Choice(["box", "margin", "eyes"]), default="margin", show_default=True,
              help="How faces must be cropped for this model at run time (as in its training data).")
@click.option("--no-evaluate", is_flag=True, help="Skip measuring the recipe's test split into the card.")
def export_cmd(run: str, out: str, which: str, name: str | None, crop_policy: str, no_evaluate: bool) -> None:
    """Export a training run to a model package (ONNX + card), checking ONNX/torch parity."""
    from ferkit.train.export_run import export_run

    command = "ferkit export " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else ""
    card = export_run(run, out, which, name, crop_policy, evaluate=not no_evaluate, command=command)
    click.echo(f"wrote {out}: {card.parameters:,} parameters, ONNX parity max abs diff "
               f"{card.training['onnx_parity_max_abs_diff']:.2e}")
    if card.metrics:
        click.echo(f"test {card.metrics['split']}: accuracy {card.metrics['accuracy']:.4f}, "
                   f"flip-TTA {card.metrics['flip_tta_accuracy']:.4f}, macro-F1 {card.metrics['macro_f1']:.4f}")


if __name__ == "__main__":
    main()
