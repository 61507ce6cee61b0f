"""The training loop: one recipe -> one run folder, checkpointed every epoch, resumable exactly after a kill.

Exactness: all randomness of epoch k (shuffle, augmentation, dropout) is seeded from (seed, k), and the checkpoint
written at the end of each epoch holds everything else (weights, BN statistics, optimiser, scheduler, history). A
run killed mid-epoch restarts that epoch from the last checkpoint and follows the same path as an unkilled run.
Phased recipes (head first, then more of the net) add the phase, the epochs done in it and whether it has ended to
the checkpoint; a phase's optimiser and schedule are built when it starts, so resuming at a boundary starts the next
phase exactly as an uninterrupted run does. Metrics rows carry the (1-based) phase.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ferkit.io import atomic_write, atomic_write_csv
from ferkit.labels import space
from ferkit.models.registry import build_model
from ferkit.train.augment import augment_batch, mix_batch
from ferkit.train.config import TrainConfig
from ferkit.train.freeze import apply_phase, freeze_batchnorm
from ferkit.train.optim import build_optimizer, build_scheduler
from ferkit.train.report import finish_run, save_curves
from ferkit.train.tensors import TensorSet, load_tensors

NORM_MEAN = 0.5
NORM_STD = 0.5
"""Inputs in [0, 1] are normalised to [-1, 1]; export writes these into the model card."""

METRIC_FIELDS = ["epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1", "seconds",
                 "phase"]


@dataclass
class RunPaths:
    root: Path

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def last_weights(self) -> Path:
        return self.root / "last.safetensors"

    @property
    def best_weights(self) -> Path:
        return self.root / "best.safetensors"

    @property
    def state(self) -> Path:
        return self.root / "train_state.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"


def normalise(x_uint8: torch.Tensor) -> torch.Tensor:
    return (x_uint8.float() / 255.0 - NORM_MEAN) / NORM_STD


def _autocast(precision: str, device: str):
    if precision == "bf16":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    if precision == "fp32":
        return torch.autocast(device_type=device, enabled=False)
    raise ValueError(f"precision must be bf16 or fp32, not {precision!r}")


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 512, precision: str = "bf16",
                   device: str = "cpu") -> torch.Tensor:
    """Logits (fp32) for uint8 images (N, C, H, W), in eval mode."""
    model.eval()
    out = []
    for i in range(0, images.shape[0], batch_size):
        with _autocast(precision, device):
            out.append(model(normalise(images[i:i + batch_size]).to(device)).float().cpu())
    return torch.cat(out)


def build_from_config(cfg: TrainConfig) -> torch.nn.Module:
    labels = space(cfg.data.labels)
    return build_model(cfg.model.arch, num_classes=len(labels), in_chans=cfg.data.channels,
                       input_size=cfg.data.size, **cfg.model.args)


def load_split(cfg: TrainConfig, which: str) -> TensorSet:
    sources = [(s.path, s.split) for s in getattr(cfg.data, which)]
    limit = cfg.data.limit if which == "train" else cfg.data.val_limit
    return load_tensors(sources, space(cfg.data.labels), cfg.data.size, cfg.data.channels, cfg.data.ferplus_mode,
                        clahe=cfg.data.clahe, limit=limit, seed=cfg.seed)


def _class_weight_tensor(cfg: TrainConfig, train: TensorSet) -> torch.Tensor | None:
    if not cfg.loss.class_weights:
        return None
    from ferkit.data.weights import class_weights

    counts = torch.bincount(train.targets, minlength=len(train.labels)).tolist()
    w = class_weights(dict(zip(train.labels, counts)), cfg.loss.class_weights)
    return torch.tensor([w[lab] for lab in train.labels], dtype=torch.float32)


def _soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
                        smoothing: float) -> torch.Tensor:
    """Cross-entropy against soft targets (one-hot, mixed or FER+ votes), with class weights and label smoothing."""
    n_classes = logits.shape[1]
    if smoothing:
        target = target * (1 - smoothing) + smoothing / n_classes
    logp = F.log_softmax(logits.float(), dim=1)
    per_sample = -(target * logp).sum(1)
    if weight is None:
        return per_sample.mean()
    w = (target * weight).sum(1)
    return (per_sample * w).sum() / w.sum()


def _forward_train(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
    """Logits plus any auxiliary loss the model adds in training (e.g. the autoencoder's lambda * MSE).

    Models with a training-only objective define ``forward_with_aux(x) -> (logits, aux_loss)``; plain
    ``forward`` stays logits-only so export and inference never see the auxiliary branch.
    """
    if hasattr(model, "forward_with_aux"):
        return model.forward_with_aux(x)
    return model(x), 0.0


def _score(row: dict, monitor: str) -> float:
    """The monitored validation metric, signed so that larger is better (a loss is negated)."""
    return -row["val_loss"] if monitor == "loss" else row[f"val_{monitor}"]


def _same_recipe(stored_text: str, cfg: TrainConfig, where: str) -> bool:
    """Whether a run folder's recipe means ``cfg`` (compared after parsing, so keys added to ferkit later with
    their defaults do not make an older run unresumable)."""
    from ferkit.train.config import config_from_dict

    def norm(c: TrainConfig) -> dict:
        return json.loads(json.dumps(c.to_dict()))
    try:
        return norm(config_from_dict(yaml.safe_load(stored_text), where)) == norm(cfg)
    except ValueError:
        return False


def fit(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, device: str = "cpu",
        progress: bool = True, stop_after_epochs: int | None = None, command: str = "") -> dict:
    """Train ``cfg`` into ``run_dir``; returns the final summary. ``stop_after_epochs`` is for tests of resume.

    Every epoch rewrites ``metrics.csv`` and ``curves.png``; when the last phase ends, the best weights are scored
    on the validation and test data (:func:`ferkit.train.report.finish_run`: confusion matrices and ``card.json``,
    whose training command is ``command``).

    A recipe with ``phases`` trains them in order (e.g. the head alone, then the last blocks or everything): each
    phase sets which parameters learn (:mod:`ferkit.train.freeze`) and builds its own optimiser and schedule. The
    checkpoint records the phase, the epochs done in it and whether it has ended, so resume is exact on either
    side of a phase boundary.
    """
    paths = RunPaths(Path(run_dir))
    paths.root.mkdir(parents=True, exist_ok=True)
    if not resume and paths.state.exists():
        raise FileExistsError(f"{paths.root} already holds a run; pass --resume to continue it or choose --out")
    recipe_text = yaml.safe_dump(json.loads(json.dumps(cfg.to_dict())), sort_keys=False)
    if resume and paths.recipe.exists() and not _same_recipe(paths.recipe.read_text(), cfg, str(paths.recipe)):
        raise ValueError(f"{paths.recipe} differs from the recipe given; resume needs the same recipe")
    atomic_write(paths.recipe, lambda p: p.write_text(recipe_text))

    torch.manual_seed(cfg.seed)
    model = build_from_config(cfg).to(device)
    train = load_split(cfg, "train")
    val = load_split(cfg, "val")
    labels = train.labels
    for problem in train.problems + val.problems:
        tqdm.write(f"skipped {problem.reason}")
    phases = cfg.run_phases()
    total_epochs = cfg.total_epochs
    steps = math.ceil(len(train) / cfg.batch_size)
    weight = _class_weight_tensor(cfg, train)
    history: list[dict] = []
    epoch, best = 0, -math.inf  # epochs done over all phases; best monitored score (larger is better)
    phase_idx, phase_epoch, phase_best, since_best = 0, 0, -math.inf, 0
    state: dict | None = None

    resumed = resume and paths.state.exists()
    if resumed:
        state = torch.load(paths.state, weights_only=True)
        model.load_state_dict(load_file(paths.last_weights))
        epoch, best, since_best, history = state["epoch"], state["best"], state["since_best"], state["history"]
        # Checkpoints from before phases existed hold one phase that has run ``epoch`` epochs.
        phase_idx, phase_epoch = state.get("phase", 0), state.get("phase_epoch", epoch)
        phase_best = state.get("phase_best", best)
        if state.get("phase_done", False):
            phase_idx, phase_epoch, state = phase_idx + 1, 0, None
        tqdm.write(f"resuming {paths.root} after epoch {epoch}")

    if not resumed and cfg.init:
        model.load_state_dict(load_file(_init_weights(cfg.init)))
        tqdm.write(f"initialised from {cfg.init}")
    train_targets = _train_targets(cfg, train, paths)
    mode = "min" if cfg.monitor == "loss" else "max"

    def summary() -> dict:
        best_val = -best if cfg.monitor == "loss" and best != -math.inf else best
        return {"run": str(paths.root), "epochs_done": len(history), "best_val": best_val, "labels": list(labels)}

    while phase_idx < len(phases):
        phase = phases[phase_idx]
        params = apply_phase(model, phase)
        lr = phase.lr if phase.lr is not None else cfg.optim.lr
        opt = build_optimizer(params, dataclasses.replace(cfg.optim, lr=lr))
        sched, sched_when = build_scheduler(opt, cfg.schedule, phase.epochs, steps, lr, phase.schedule, mode)
        if state is not None:  # resuming inside this phase: its optimiser and schedule carry on
            opt.load_state_dict(state["optimizer"])
            if sched is not None:
                sched.load_state_dict(state["scheduler"])
            state = None
        else:
            phase_best, since_best = -math.inf, 0
        patience = phase.early_stopping_patience
        if patience is None:
            patience = cfg.early_stopping_patience
        use_sam = hasattr(opt, "base_optimizer")
        where = f" (phase {phase_idx + 1}/{len(phases)}: train {phase.train}" \
            + (f" {phase.last_n}" if phase.train == "last_n" else "") + ")" if len(phases) > 1 else ""
        if len(phases) > 1 and phase_epoch == 0:
            tqdm.write(f"phase {phase_idx + 1}/{len(phases)}: train {phase.train}"
                       + (f" (last {phase.last_n} blocks)" if phase.train == "last_n" else "")
                       + f", {sum(p.numel() for p in params):,} trainable parameters, lr {lr:g}, {phase.epochs} epochs")
        while phase_epoch < phase.epochs:
            if stop_after_epochs is not None and epoch >= stop_after_epochs:
                return summary()
            t0 = time.time()
            g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
            torch.manual_seed(cfg.seed * 100_003 + epoch)
            model.train()
            freeze_batchnorm(model)
            order = torch.randperm(len(train), generator=g)
            loss_sum, correct, seen = 0.0, 0, 0
            bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{total_epochs}{where}", disable=not progress,
                       leave=False, mininterval=0.5 if sys.stderr.isatty() else 60)
            for b in bar:
                idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                x = augment_batch(train.images[idx].float() / 255.0, cfg.augment, g)
                x = (x - NORM_MEAN) / NORM_STD
                y = train_targets[idx]
                x, y = mix_batch(x, y, cfg.augment, g)
                x, y = x.to(device), y.to(device)

                def closure() -> torch.Tensor:
                    with _autocast(cfg.precision, device):
                        out, aux = _forward_train(model, x)
                    loss = _soft_cross_entropy(out, y, weight, cfg.loss.label_smoothing) + aux
                    loss.backward()
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
                loss_sum += float(loss.detach()) * len(idx)
                correct += int((logits.argmax(1).cpu() == train.targets[idx]).sum())
                seen += len(idx)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
            bar.close()

            val_logits = predict_logits(model, val.images, cfg.eval_batch_size, cfg.precision, device)
            val_loss = float(F.cross_entropy(val_logits, val.targets))
            val_pred = val_logits.argmax(1)
            from sklearn.metrics import f1_score

            row = {
                "epoch": epoch + 1,
                "lr": opt.param_groups[0]["lr"],
                "train_loss": loss_sum / seen,
                "train_accuracy": correct / seen,
                "val_loss": val_loss,
                "val_accuracy": float((val_pred == val.targets).float().mean()),
                "val_macro_f1": float(f1_score(val.targets, val_pred, average="macro", labels=range(len(labels)))),
                "seconds": time.time() - t0,
                "phase": phase_idx + 1,
            }
            history.append(row)
            epoch += 1
            phase_epoch += 1
            if sched is not None and sched_when == "metric":
                sched.step(row[f"val_{cfg.monitor}"])
            score = _score(row, cfg.monitor)
            improved = score > best
            if improved:
                best = score
            if score > phase_best:
                phase_best, since_best = score, 0
            else:
                since_best += 1
            stop_early = bool(patience) and since_best >= patience
            phase_done = phase_epoch >= phase.epochs or stop_early
            weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            atomic_write(paths.last_weights, lambda p: save_file(weights, str(p), metadata={"epoch": str(epoch)}))
            if improved:
                atomic_write(paths.best_weights, lambda p: save_file(weights, str(p), metadata={"epoch": str(epoch)}))
            ckpt = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict() if sched is not None else {},
                    "epoch": epoch, "best": best, "since_best": since_best, "history": history,
                    "phase": phase_idx, "phase_epoch": phase_epoch, "phase_best": phase_best,
                    "phase_done": phase_done}
            atomic_write(paths.state, lambda p: torch.save(ckpt, p))
            atomic_write_csv(paths.metrics, METRIC_FIELDS, history)
            save_curves(history, paths.root / "curves.png")
            tqdm.write(f"epoch {epoch}/{total_epochs}{where} train_loss {row['train_loss']:.4f} "
                       f"train_acc {row['train_accuracy']:.4f} val_acc {row['val_accuracy']:.4f} "
                       f"val_f1 {row['val_macro_f1']:.4f} lr {row['lr']:.2e} {row['seconds']:.0f}s"
                       + (" *" if improved else ""))
            if stop_early:
                tqdm.write(f"early stopping: no {cfg.monitor} gain in {since_best} epochs"
                           + (f"; phase {phase_idx + 1} ends" if len(phases) > 1 else ""))
                break
        phase_idx, phase_epoch = phase_idx + 1, 0
    if history:
        scores = finish_run(paths.root, model, cfg, val, device, command)
        tqdm.write("best weights: " + ", ".join(f"{split} accuracy {m['accuracy']:.4f}" for split, m in scores.items())
                   + f"; confusion matrices, curves.png and card.json in {paths.root}")
    return summary()


def _train_targets(cfg: TrainConfig, train: TensorSet, paths: RunPaths) -> torch.Tensor:
    """Per-sample target distributions (N, classes): one-hot labels, or FER+ votes with ``soft_labels``, mixed
    with a teacher's probabilities when the recipe distils (:mod:`ferkit.train.distill`)."""
    targets = F.one_hot(train.targets, len(train.labels)).float()
    if cfg.data.soft_labels and train.soft is not None:
        targets = train.soft
    if cfg.distill is None:
        return targets
    from ferkit.train.distill import cached_teacher_probabilities

    d = cfg.distill
    teacher = cached_teacher_probabilities(paths.root / "teacher_targets.safetensors", d.teacher, train.images,
                                           train.labels, d.temperature, d.flip)
    agree = float((teacher.argmax(1) == train.targets).float().mean())
    tqdm.write(f"distilling from {d.teacher}: teacher agrees with {agree:.1%} of the training labels")
    return d.weight * teacher + (1 - d.weight) * targets


def _init_weights(init: str) -> Path:
    """The weights file ``init`` names: a run folder's best weights, or a .safetensors file."""
    p = Path(init)
    if p.is_dir():
        p = RunPaths(p).best_weights
    if not p.is_file():
        raise FileNotFoundError(f"init {init!r}: no run folder with best.safetensors and no weights file there")
    return p




def load_run_model(run_dir: str | Path, which: str = "best") -> tuple[torch.nn.Module, TrainConfig]:
    """Rebuild a run's model from its recipe and load its best (or last) weights."""
    from ferkit.train.config import config_from_dict

    paths = RunPaths(Path(run_dir))
    cfg = config_from_dict(yaml.safe_load(paths.recipe.read_text()), str(paths.recipe))
    # The run's own weights replace everything a pretrained backbone file would give, and that file may be gone.
    args = {k: v for k, v in cfg.model.args.items() if k != "pretrained_path"}
    model = build_from_config(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, args=args)))
    model.load_state_dict(load_file(paths.best_weights if which == "best" else paths.last_weights))
    model.eval()
    return model, cfg

