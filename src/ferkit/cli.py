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
@click.option("--faces", type=click.Choice(["none"]), default="none", show_default=True,
              help="none: DATA holds face crops.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the full report as JSON.")
@click.option("--plots", type=click.Path(file_okay=False), help="Write confusion matrices (PNG) into this folder.")
def evaluate(data_path: str, model: str, split: str | None, grouping: str | None, tta: str, ferplus_mode: str,
             faces: str, json_out: str | None, plots: str | None) -> None:
    """Accuracy, macro-F1, top-2, per-class P/R/F1 and confusion of a model on a labelled dataset."""
    from ferkit.evaluate import evaluate_dataset, format_report, save_confusion_plots

    report = evaluate_dataset(data_path, model, split, grouping, tta, ferplus_mode, faces, progress=True)
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


if __name__ == "__main__":
    main()
