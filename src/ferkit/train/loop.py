"""The training loop: one recipe -> one run folder, checkpointed every epoch, resumable exactly after a kill.

Exactness: all randomness of epoch k (shuffle, augmentation, dropout) is seeded from (seed, k), and the checkpoint
written at the end of each epoch holds everything else (weights, BN statistics, optimiser, scheduler, history). A
run killed mid-epoch restarts that epoch from the last checkpoint and follows the same path as an unkilled run.
Phased recipes (head first, then more of the net) add the phase, the epochs done in it and whether it has ended to
the checkpoint; a phase's optimiser and schedule are built when it starts, so resuming at a boundary starts the next
phase exactly as an uninterrupted run does. Metrics rows carry the (1-based) phase.

The shape follows timm's ``train.py`` and torchvision's reference trainer: :func:`fit` orchestrates;
:func:`train_one_epoch` and :func:`validate` do one pass each; targets and the loss live in
:mod:`ferkit.train.targets`, checkpoints in :mod:`ferkit.train.checkpoint`, the run's files in
:mod:`ferkit.train.run` and :mod:`ferkit.train.report`. Messages go to the ``ferkit.train`` logger (the CLI shows
them); the per-batch progress bar is tqdm's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from ferkit.io import atomic_write
from ferkit.train.augment import augment_batch, mix_batch
from ferkit.train.card import record_hardware
from ferkit.train.checkpoint import Progress, load_checkpoint, save_checkpoint
from ferkit.train.config import ConfigError, PhaseConfig, TrainConfig, config_from_dict
from ferkit.train.distributed import SINGLE, Workers, seed_worker
from ferkit.train.freeze import apply_phase, freeze_batchnorm
from ferkit.train.optim import build_optimizer, build_scheduler
from ferkit.train.report import finish_run, save_curves, write_metrics, write_steps
from ferkit.train.run import (
    NORM_MEAN,
    NORM_STD,
    RunError,
    RunExistsError,
    RunPaths,
    autocast,
    build_from_config,
    load_split,
    load_weights,
    predict_logits,
)
from ferkit.train.targets import class_weight_tensor, forward_train, sample_shares, soft_cross_entropy, train_targets
from ferkit.train.tensors import TensorSet

log = logging.getLogger(__name__)


def train_one_epoch(model: torch.nn.Module, train: TensorSet, targets: torch.Tensor, opt: torch.optim.Optimizer,
                    sched, sched_when: str, cfg: TrainConfig, epoch: int, weight: torch.Tensor | None,
                    device: str = "cpu", desc: str = "", progress: bool = True, workers: Workers = SINGLE,
                    net: torch.nn.Module | None = None) -> tuple[float, float, list[float]]:
    """One pass over ``train`` in the order and with the augmentation seeded by (seed, epoch); returns the mean
    training loss and accuracy (on the augmented, mixed batches) and each step's loss.

    With several ``workers``, ``net`` is ``model`` wrapped in DDP; each worker draws and augments every global batch
    and trains on its share of it (:mod:`ferkit.train.distributed`), and the returned figures are the global ones.
    """
    g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    seed_worker(cfg.seed, epoch, workers)
    net = net or model
    net.train()
    freeze_batchnorm(model)
    steps = math.ceil(len(train) / cfg.batch_size)
    order = torch.randperm(len(train), generator=g)
    use_sam = hasattr(opt, "base_optimizer")
    loss_sum, correct, seen = 0.0, 0, 0
    step_losses = torch.full((steps,), math.nan, dtype=torch.float64)
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False,
               mininterval=0.5 if sys.stderr.isatty() else 60)
    for b in bar:
        idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
        if workers.skips(len(idx)):  # too few samples for every worker: the schedule still moves on
            if sched is not None and sched_when == "step":
                sched.step()
            continue
        x = augment_batch(train.images[idx].float() / 255.0, cfg.augment, g)
        x = (x - NORM_MEAN) / NORM_STD
        x, y = mix_batch(x, targets[idx], cfg.augment, g)
        part, n_batch = 1.0, len(idx)
        if workers.distributed:  # this worker's samples, and their share of the global batch's loss
            mine = workers.shard(idx)
            shares = sample_shares(y, weight, cfg.loss.label_smoothing)
            part = float(shares[mine].sum() / shares.sum())
            idx, x, y = idx[mine], x[mine], y[mine]
        x, y = x.to(device), y.to(device)

        def closure() -> torch.Tensor:
            with autocast(cfg.precision, device):
                out, aux = net(x) if workers.distributed else forward_train(model, x)
            loss = soft_cross_entropy(out, y, weight, cfg.loss.label_smoothing) + aux
            # DDP averages gradients over workers: scaled so, the average is the global batch's loss gradient
            (loss * (part * workers.world) if workers.distributed else loss).backward()
            closure.logits = out  # type: ignore[attr-defined]
            return loss

        opt.zero_grad(set_to_none=True)
        loss = closure()
        logits = closure.logits  # type: ignore[attr-defined]
        if use_sam:
            opt.step(closure)
        else:
            opt.step()
        if sched is not None and sched_when == "step":
            sched.step()
        step_losses[b] = float(loss.detach()) * part
        loss_sum += float(loss.detach()) * part * n_batch
        correct += int((logits.argmax(1).cpu() == train.targets[idx]).sum())
        seen += len(idx)
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
    bar.close()
    if workers.distributed:
        totals = workers.sum(torch.tensor([loss_sum, correct, seen], dtype=torch.float64))
        loss_sum, correct, seen = float(totals[0]), int(totals[1]), int(totals[2])
        step_losses = workers.sum(step_losses)
    return loss_sum / seen, correct / seen, step_losses.tolist()


def validate(model: torch.nn.Module, val: TensorSet, cfg: TrainConfig, device: str = "cpu",
             workers: Workers = SINGLE) -> dict[str, float]:
    """Validation loss, accuracy and macro-F1 of ``model`` (eval mode, the recipe's precision); several workers
    each score a part of ``val`` and all get every logit, so all take the same decisions (plateau, early stop)."""
    from sklearn.metrics import f1_score

    logits = workers.gather(lambda images: predict_logits(model, images, cfg.eval_batch_size, cfg.precision, device),
                            val.images)
    pred = logits.argmax(1)
    return {
        "val_loss": float(F.cross_entropy(logits, val.targets)),
        "val_accuracy": float((pred == val.targets).float().mean()),
        "val_macro_f1": float(f1_score(val.targets, pred, average="macro", labels=range(len(val.labels)),
                                       zero_division=0)),
    }


def _score(row: dict, monitor: str) -> float:
    """The monitored validation metric, signed so that larger is better (a loss is negated)."""
    return -row["val_loss"] if monitor == "loss" else row[f"val_{monitor}"]


def _same_recipe(stored_text: str, cfg: TrainConfig, where: str) -> bool:
    """Whether a run folder's recipe means ``cfg`` (compared after parsing, so keys added to ferkit later with
    their defaults do not make an older run unresumable)."""
    def norm(c: TrainConfig) -> dict:
        return json.loads(json.dumps(c.to_dict()))
    try:
        return norm(config_from_dict(yaml.safe_load(stored_text), where)) == norm(cfg)
    except (ValueError, yaml.YAMLError):
        return False


def prepare_folder(paths: RunPaths, cfg: TrainConfig, resume: bool, write: bool = True) -> None:
    """Refuse what would lose or mix work (a second run into a run folder, a resume with nothing or something else
    to resume), then write the recipe (unless ``write`` is False: a worker other than rank 0 only checks)."""
    if not resume and paths.state.exists():
        raise RunExistsError(f"{paths.root} already holds a run; pass --resume to continue it or choose --out")
    if resume and not paths.state.exists():
        if not paths.recipe.exists():
            raise RunError(f"{paths.root}: no run to resume (no {paths.state.name}); drop --resume to start one")
        if write:
            log.info(f"{paths.root}: stopped before its first checkpoint; starting again from epoch 1")
    if resume and paths.recipe.exists() and not _same_recipe(paths.recipe.read_text(), cfg, str(paths.recipe)):
        raise ConfigError(f"{paths.recipe} differs from the recipe given; resume needs the same recipe")
    if not write:
        return
    recipe_text = yaml.safe_dump(json.loads(json.dumps(cfg.to_dict())), sort_keys=False)
    paths.root.mkdir(parents=True, exist_ok=True)
    atomic_write(paths.recipe, lambda p: p.write_text(recipe_text))


def _phase_label(phases: list[PhaseConfig], i: int) -> str:
    phase = phases[i]
    return f"phase {i + 1}/{len(phases)}: train {phase.train}" + (f" {phase.last_n}" if phase.train == "last_n" else "")


def fit(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, device: str = "cpu",
        progress: bool = True, stop_after_epochs: int | None = None, command: str = "",
        workers: Workers = SINGLE) -> dict:
    """Train ``cfg`` into ``run_dir``; returns the final summary. ``stop_after_epochs`` is for tests of resume.

    Every epoch rewrites ``metrics.csv`` and ``curves.png``; when the last phase ends, the best weights are scored
    on the validation and test data (:func:`ferkit.train.report.finish_run`: confusion matrices and ``card.json``,
    whose training command is ``command``).

    A recipe with ``phases`` trains them in order (e.g. the head alone, then the last blocks or everything): each
    phase sets which parameters learn (:mod:`ferkit.train.freeze`) and builds its own optimiser and schedule. The
    checkpoint records the phase, the epochs done in it and whether it has ended, so resume is exact on either
    side of a phase boundary.

    With several ``workers`` (torchrun, Ray Train: :mod:`ferkit.train.distributed`) every worker runs this
    function; ``cfg.batch_size`` is the global batch, rank 0 alone writes the run folder and logs, and the
    checkpoint (the unwrapped model's weights, optimiser, schedule, progress) resumes on any number of workers.

    Raises RunExistsError for a run folder that holds a run without ``resume``; RunError for ``resume`` with no
    run there or a torn or unreadable checkpoint; ConfigError for a recipe that differs from the run's.
    """
    paths = RunPaths(Path(run_dir))
    main = workers.is_main
    info = log.info if main else (lambda msg: None)
    prepare_folder(paths, cfg, resume, write=main)
    workers.barrier()

    torch.manual_seed(cfg.seed)
    model = build_from_config(cfg).to(device)
    train = load_split(cfg, "train")
    val = load_split(cfg, "val")
    for problem in (train.problems + val.problems) if main else []:
        log.warning(f"skipped {problem.reason}")
    phases = cfg.run_phases()
    steps = math.ceil(len(train) / cfg.batch_size)
    weight = class_weight_tensor(cfg, train)
    state: dict | None = None  # the checkpoint's optimiser and scheduler, while resuming inside a phase
    if resume and paths.state.exists():
        run, state, weights = load_checkpoint(paths)
        model.load_state_dict(weights)
        if run.phase_done:
            run.phase, run.phase_epoch, state = run.phase + 1, 0, None
        was = state.get("workers", 1) if state is not None else None
        info(f"resuming {paths.root} after epoch {run.epoch}"
             + (f" (trained on {was} workers, now {workers.world})" if was and was != workers.world else ""))
    else:
        run = Progress()
        if cfg.init:
            load_weights(model, _init_weights(cfg.init))
            info(f"initialised from {cfg.init}")
    if main:  # a distilling recipe's teacher targets are cached in the run folder by rank 0, read by the others
        targets = train_targets(cfg, train, paths.root)
        record_hardware(paths.root, device, cfg.precision, run.epoch, workers.world)
    workers.barrier()
    if not main:
        targets = train_targets(cfg, train, paths.root)
    mode = "min" if cfg.monitor == "loss" else "max"

    def summary() -> dict:
        best_val = -run.best if cfg.monitor == "loss" and run.best != -math.inf else run.best
        return {"run": str(paths.root), "epochs_done": len(run.history), "best_val": best_val,
                "labels": list(train.labels)}

    while run.phase < len(phases):
        phase = phases[run.phase]
        params = apply_phase(model, phase)
        net = workers.wrap(model, device)  # per phase: DDP syncs the gradients of the parameters that learn now
        lr = phase.lr if phase.lr is not None else cfg.optim.lr
        opt = build_optimizer(params, dataclasses.replace(cfg.optim, lr=lr))
        sched, sched_when = build_scheduler(opt, cfg.schedule, phase.epochs, steps, lr, phase.schedule, mode)
        if state is not None:  # resuming inside this phase: its optimiser and schedule carry on
            opt.load_state_dict(state["optimizer"])
            if sched is not None:
                sched.load_state_dict(state["scheduler"])
            state = None
        else:
            run.phase_best, run.since_best = -math.inf, 0
        patience = phase.early_stopping_patience
        if patience is None:
            patience = cfg.early_stopping_patience
        where = f" ({_phase_label(phases, run.phase)})" if len(phases) > 1 else ""
        if len(phases) > 1 and run.phase_epoch == 0:
            info(f"{_phase_label(phases, run.phase)}, {sum(p.numel() for p in params):,} trainable parameters, "
                 f"lr {lr:g}, {phase.epochs} epochs")
        while run.phase_epoch < phase.epochs:
            if stop_after_epochs is not None and run.epoch >= stop_after_epochs:
                return summary()
            t0 = time.time()
            train_loss, train_acc, step_losses = train_one_epoch(
                model, train, targets, opt, sched, sched_when, cfg, run.epoch, weight, device,
                f"epoch {run.epoch + 1}/{cfg.total_epochs}{where}", progress and main, workers, net)
            workers.sync_buffers(model)
            row = {"epoch": run.epoch + 1, "lr": opt.param_groups[0]["lr"], "train_loss": train_loss,
                   "train_accuracy": train_acc, **validate(model, val, cfg, device, workers),
                   "seconds": time.time() - t0, "phase": run.phase + 1, "step_losses": step_losses}
            if sched is not None and sched_when == "metric":
                sched.step(row[f"val_{cfg.monitor}"])
            improved, stop_early = _record(run, row, cfg.monitor, patience, phase.epochs)
            if main:
                save_checkpoint(paths, model, run, improved, opt.state_dict(),
                                sched.state_dict() if sched is not None else {},
                                {"workers": workers.world, "global_batch": cfg.batch_size})
                write_metrics(paths.metrics, run.history)
                write_steps(paths.steps, run.history)
                save_curves(run.history, paths.root / "curves.png")
            info(f"epoch {run.epoch}/{cfg.total_epochs}{where} train_loss {row['train_loss']:.4f} "
                 f"train_acc {row['train_accuracy']:.4f} val_acc {row['val_accuracy']:.4f} "
                 f"val_f1 {row['val_macro_f1']:.4f} lr {row['lr']:.2e} {row['seconds']:.0f}s"
                 + (" *" if improved else ""))
            if stop_early:
                info(f"early stopping: no {cfg.monitor} gain in {run.since_best} epochs"
                     + (f"; phase {run.phase + 1} ends" if len(phases) > 1 else ""))
                break
        run.phase, run.phase_epoch, run.phase_done = run.phase + 1, 0, False
    if run.history and main:
        scores = finish_run(paths.root, model, cfg, val, device, command)
        log.info("best weights: " + ", ".join(f"{split} accuracy {m['accuracy']:.4f}" for split, m in scores.items())
                 + f"; confusion matrices, curves.png and card.json in {paths.root}")
    return summary()


def _record(run: Progress, row: dict, monitor: str, patience: int | None, phase_epochs: int) -> tuple[bool, bool]:
    """Add an epoch's row to ``run``; returns (the run's best improved, the phase stops early)."""
    run.history.append(row)
    run.epoch += 1
    run.phase_epoch += 1
    score = _score(row, monitor)
    improved = score > run.best
    if improved:
        run.best = score
    if score > run.phase_best:
        run.phase_best, run.since_best = score, 0
    else:
        run.since_best += 1
    stop_early = bool(patience) and run.since_best >= patience
    run.phase_done = run.phase_epoch >= phase_epochs or stop_early
    return improved, stop_early


def _init_weights(init: str) -> Path:
    """The weights file ``init`` names: a run folder's best weights, or a .safetensors file."""
    p = Path(init)
    if p.is_dir():
        p = RunPaths(p).best_weights
    if not p.is_file():
        raise RunError(f"init {init!r}: no run folder with best.safetensors and no weights file there")
    return p
