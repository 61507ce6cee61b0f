"""``ferkit train --engine ray``: the training loop in N Ray Train workers (TorchTrainer), data-parallel.

Why Ray Train and not a home-made launcher: it places the workers on the cluster (one GPU each with a CUDA
device), sets up torch's process group among them (gloo, or nccl on GPUs), and reports a failed worker as one
error. Each worker runs :func:`ferkit.train.loop.fit` exactly as under torchrun (:mod:`ferkit.train.distributed`);
rank 0 writes the run folder, so the folder and the recipe's data must be at the same paths on every node (one
machine, or a shared filesystem such as NFS). Checkpoints are the run folder's own, not Ray's, so ``--resume``
continues a run on any launcher and any number of workers.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ferkit.errors import FerkitError, UserInputError
from ferkit.scale.cluster import ray_session
from ferkit.train.checkpoint import load_checkpoint
from ferkit.train.config import TrainConfig, config_from_dict
from ferkit.train.loop import prepare_folder
from ferkit.train.run import RunPaths

WHAT = "ferkit train --engine ray"


def _worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: the driver's working directory (relative data paths), then the common loop."""
    import ray.train.torch

    from ferkit.train.distributed import from_environment
    from ferkit.train.loop import fit

    os.chdir(config["cwd"])
    workers, device = from_environment(config["device"])
    if config["device"] == "cuda":
        device = str(ray.train.torch.get_device())
    logger = logging.getLogger("ferkit")
    if workers.is_main and not logger.handlers:
        logger.setLevel(logging.INFO)
        logger.addHandler(logging.StreamHandler())
    cfg = config_from_dict(config["recipe"], "recipe")
    fit(cfg, config["run"], resume=config["resume"], device=device, progress=False, command=config["command"],
        workers=workers)


def fit_on_ray(cfg: TrainConfig, run_dir: str | Path, workers: int, resume: bool = False, device: str = "cpu",
               address: str | None = None, command: str = "") -> dict:
    """Train ``cfg`` into ``run_dir`` on ``workers`` Ray Train workers (a local cluster unless ``address``);
    returns the summary :func:`ferkit.train.loop.fit` returns. A user error in a worker (a FerkitError) comes back
    as itself."""
    paths = RunPaths(Path(run_dir).resolve())
    prepare_folder(paths, cfg, resume)  # refuse a bad --out or --resume here, before any worker starts
    with ray_session(address, WHAT) as ray:
        from ray.train import RunConfig, ScalingConfig, TrainingFailedError
        from ray.train.torch import TorchConfig, TorchTrainer

        use_gpu = device == "cuda"
        unit = "GPU" if use_gpu else "CPU"
        have = ray.cluster_resources().get(unit, 0)
        if have < workers:
            raise UserInputError(f"{WHAT}: the cluster has {have:g} {unit}s, fewer than --workers {workers}; lower "
                                 "--workers or add nodes")
        storage = tempfile.mkdtemp(prefix="ferkit-ray-train-")
        trainer = TorchTrainer(
            _worker,
            train_loop_config={"recipe": cfg.to_dict(), "run": str(paths.root), "resume": resume, "device": device,
                               "command": command, "cwd": os.getcwd()},
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                         resources_per_worker={"GPU": 1} if use_gpu else {"CPU": 1}),
            run_config=RunConfig(name=paths.root.name, storage_path=storage))
        try:
            trainer.fit()
        except TrainingFailedError as exc:
            user_error = _ferkit_error(exc)
            if user_error is not None:
                raise user_error from None
            raise
        finally:
            shutil.rmtree(storage, ignore_errors=True)
    run, _, _ = load_checkpoint(paths)
    best_val = -run.best if cfg.monitor == "loss" else run.best
    from ferkit.labels import space

    return {"run": str(paths.root), "epochs_done": len(run.history), "best_val": best_val,
            "labels": list(space(cfg.data.labels))}


def _ferkit_error(exc: BaseException) -> FerkitError | None:
    """The FerkitError a worker raised, found in Ray's wrapping (worker failures, causes), if any."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, FerkitError):
            return e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
        failures = getattr(e, "worker_failures", None)
        if isinstance(failures, dict):
            todo += list(failures.values())
    return None
