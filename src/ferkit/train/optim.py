"""Optimisers (SGD, Adam, AdamW, RMSprop, SAM) and learning-rate schedules named in recipes."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from ferkit.train.config import OptimConfig, ScheduleConfig


class SAM(torch.optim.Optimizer):
    """Sharpness-Aware Minimisation (Foret et al. 2021), used by seed 004 (HSEmotion).

    Each step climbs to the worst point within an L2 ball of radius rho, takes the gradient there, and applies it
    at the original weights with the base optimiser. ``step`` needs a closure that recomputes loss and gradients.
    """

    def __init__(self, params: Iterable[nn.Parameter], base: type[torch.optim.Optimizer], rho: float = 0.05,
                 **kwargs: float) -> None:
        super().__init__(params, dict(rho=rho, **kwargs))
        self.base_optimizer = base(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:  # type: ignore[override]
        if closure is None:
            raise ValueError("SAM needs a closure that recomputes the loss and its gradients")
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        norm = torch.norm(torch.stack([gr.norm(2) for gr in grads]), 2) if grads else torch.tensor(0.0)
        for group in self.param_groups:
            scale = group["rho"] / (norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                e_w = p.grad * scale.to(p)
                p.add_(e_w)
                self.state[p]["e_w"] = e_w
        with torch.enable_grad():
            self.zero_grad()
            loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if "e_w" in self.state[p]:
                    p.sub_(self.state[p].pop("e_w"))
        self.base_optimizer.step()
        return loss

    def state_dict(self) -> dict:  # type: ignore[override]
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:  # type: ignore[override]
        self.base_optimizer.load_state_dict(state_dict)


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    name = cfg.name.lower()
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if name.startswith("sam"):
        base_name = name.partition("-")[2] or "sgd"
        if base_name == "sgd":
            return SAM(params, torch.optim.SGD, rho=cfg.sam_rho, lr=cfg.lr, momentum=cfg.momentum,
                       weight_decay=cfg.weight_decay)
        bases = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
        if base_name in bases:
            return SAM(params, bases[base_name], rho=cfg.sam_rho, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimiser {cfg.name!r}; use sgd, adam, adamw, rmsprop, sam, sam-adam or sam-adamw")


def build_scheduler(opt: torch.optim.Optimizer, cfg: ScheduleConfig, epochs: int, steps_per_epoch: int,
                    max_lr: float, name: str | None = None, mode: str = "max") -> tuple[object | None, str]:
    """A scheduler and when it steps: 'step' (every batch), 'epoch', or 'metric' (ReduceLROnPlateau on val).

    ``name`` overrides ``cfg.name`` (a training phase's own schedule); ``mode`` is ReduceLROnPlateau's: 'max' for
    accuracy-like metrics, 'min' for a loss.
    """
    name = (name or cfg.name).lower()
    base = getattr(opt, "base_optimizer", opt)
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(base, max_lr=max_lr, epochs=epochs, steps_per_epoch=steps_per_epoch,
                                                   pct_start=cfg.pct_start), "step"
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(base, T_max=epochs * steps_per_epoch,
                                                          eta_min=cfg.min_lr), "step"
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(base, mode=mode, factor=cfg.plateau_factor,
                                                          patience=cfg.plateau_patience, min_lr=cfg.min_lr), "metric"
    if name in ("none", "constant"):
        return None, "epoch"
    raise ValueError(f"unknown schedule {cfg.name!r}; use onecycle, cosine, plateau or none")
