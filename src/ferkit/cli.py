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
