"""What runs on Ray's workers: ``train_fn_per_worker`` (one stage of hmh training on every Train worker) and
``evaluate_checkpoint`` (a checkpoint's metric table on one split, run as a Ray task).

Each stage runs on :func:`hmh.train.engine.run_stage`, the engine of ``hmh train``. Every epoch each rank trains on
its shard (``prepare_data_loader`` adds a ``DistributedSampler``; ``prepare_model`` wraps the trained model in DDP:
gloo on CPU, NCCL on GPU), rank 0 evaluates on the validation split with the unwrapped models (no collective runs
while the other ranks wait), then **every** rank calls ``ray.train.report`` (a barrier): rank 0 with an hmh
checkpoint (``checkpoint.pt``, :mod:`hmh.models.checkpoint`) and its metrics, the others with ``checkpoint=None``. A
restarted worker group resumes from ``ray.train.get_checkpoint()``.

Reported metrics (:meth:`hmh.train.engine.EpochReport.metrics`; rank 0's reach Train and Tune): ``stage``, ``epoch``
(1-based, within the stage), ``trial_epoch`` (1-based across both stages: ASHA's time axis), ``restored_epoch``
(the epoch this worker group resumed from, 0 when it started fresh), ``train/<key>``
(``hmh.train.loop.train_one_epoch``'s means), ``val/<reduction>/<metric>`` (mm) and the objective
``val/objective_mpjpe_current`` with ``val/objective_source`` (:data:`hmh.results.tables.OBJECTIVE`); in a two-objective
search (``search.objectives=mpjpe_ms``) also the inference cost ``cost/ms_per_image_b1`` and ``_b8``
(:mod:`hmh.eval.cost`), measured by rank 0 once per stage.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hmh.config import Config, from_dict
from hmh.models.checkpoint import CHECKPOINT_FILE
from tune.console import quiet_worker_logs
from tune.resources import gpus_on_cpu

__all__ = ["StageSpec", "evaluate_checkpoint", "train_fn_per_worker"]

log = logging.getLogger(__name__)


@dataclass
class StageSpec:
    """One stage of one run, as ``train_loop_config`` (a plain dict on the wire: :meth:`to_dict`).

    ``config``: the nested hmh config (``data.root`` absolute; this stage's epochs in ``train.*_epochs``).
    ``generator_checkpoint``: the selection stage's frozen generator, a Train checkpoint path (folder or URI), or
    an hmh checkpoint file (``search.generator``).
    ``tensorboard_dir``: where rank 0 writes TensorBoard events ("" = none).
    """

    config: dict
    stage: str
    generator_checkpoint: str = ""
    tensorboard_dir: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _load_checkpoint_file(path: str, device: torch.device) -> dict:
    """An hmh checkpoint from a Train checkpoint folder or URI, or from a checkpoint file (``search.generator``)."""
    import ray.train

    from hmh.models.checkpoint import load_checkpoint

    if Path(path).is_file():
        return load_checkpoint(path, map_location=device)
    with ray.train.Checkpoint(path).as_directory() as folder:
        return load_checkpoint(Path(folder) / CHECKPOINT_FILE, map_location=device)


def _per_worker(cfg: Config, world: int) -> Config:
    """``cfg`` with ``train.batch_size`` split across ``world`` workers (the global batch stays the config's)."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=max(1, cfg.train.batch_size
                                                                                          // world)))


def train_fn_per_worker(config: dict) -> None:
    """Train ``config`` (a :class:`StageSpec` dict) for its stage's epochs on this Ray Train worker, on
    :func:`hmh.train.engine.run_stage` (the engine of ``hmh train``)."""
    import ray.train
    import ray.train.torch
    from torch.utils.tensorboard import SummaryWriter

    from hmh.eval.cost import cost_metrics
    from hmh.models.build import build_models, unwrap
    from hmh.models.checkpoint import save_checkpoint
    from hmh.train.engine import EpochReport, StageParts, run_stage
    from hmh.train.loop import init_selector_from_generator, seed_everything
    from hmh.train.runner import build_datasets, make_loader

    quiet_worker_logs()
    spec = StageSpec(**config)
    stage = spec.stage
    cfg = from_dict(spec.config)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    # Tests only (tune.resources.gpus_on_cpu): workers holding the logical GPUs of fake nodes train on the CPU.
    device = torch.device("cpu") if gpus_on_cpu() else ray.train.torch.get_device()
    seed_everything(cfg.train.seed)
    generator, selector = build_models(cfg)
    datasets = build_datasets(cfg, cfg.data.root, splits=("train", "val") if rank == 0 else ("train",))
    cpus = cfg.search.cpus_per_worker
    train_loader = ray.train.torch.prepare_data_loader(make_loader(
        datasets["train"], _per_worker(cfg, world), train=True, device=device, seed=cfg.train.seed, cpus=cpus),
        move_to_device=not gpus_on_cpu())
    val_loader = make_loader(datasets["val"], cfg, train=False, device=device, cpus=cpus) if "val" in datasets else None

    checkpoint = ray.train.get_checkpoint()
    state = _load_checkpoint_file(checkpoint.path, device) if checkpoint else None
    if stage == "selection":
        source = state or _load_checkpoint_file(spec.generator_checkpoint, device)
        generator.load_state_dict(source["model"]["generator"])
        generator.requires_grad_(False)
        generator.to(device)
        if state is None and cfg.selection.init_from_generator:
            init_selector_from_generator(selector, generator)
        selector = ray.train.torch.prepare_model(selector, move_to_device=device)
    else:
        generator = ray.train.torch.prepare_model(generator, move_to_device=device)
    if state is not None:
        log.info("%s: resuming after epoch %d from %s", stage, int(state["epoch"]), checkpoint.path)

    cost: dict[str, float] = {}  # search.objectives=mpjpe_ms: the models' inference cost, measured once per stage

    def on_epoch(report: EpochReport, parts: StageParts) -> None:
        """Every rank reports (a barrier); rank 0 with its metrics and a checkpoint."""
        metrics = report.metrics()
        if rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        if cfg.search.objectives == "mpjpe_ms":  # every report carries it: Tune checks a searcher's metrics
            if not cost:
                cost.update(cost_metrics(unwrap(parts.generator), unwrap(selector), cfg, device))
            metrics.update(cost)
        with tempfile.TemporaryDirectory() as folder:
            save_checkpoint(Path(folder) / CHECKPOINT_FILE, **parts.checkpoint_state(), epoch=report.epoch,
                            config=cfg, metrics=report.checkpoint_metrics())
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder),
                             checkpoint_dir_name=f"{stage}-epoch{report.epoch:03d}")

    writer = SummaryWriter(spec.tensorboard_dir) if rank == 0 and spec.tensorboard_dir else None
    try:
        run_stage(stage, cfg, generator, selector if stage == "selection" else None, train_loader, val_loader,
                  device, on_epoch, resume=state, writer=writer,
                  image_batch=next(iter(val_loader)) if writer is not None and val_loader is not None else None)
    finally:
        if writer is not None:
            writer.close()


def evaluate_checkpoint(checkpoint_path: str, split: str, max_samples: int) -> dict[str, Any]:
    """The full metric table of a Train checkpoint's models on ``split`` of its config's ``data.root``
    (``max_samples`` 0 = all). Returns ``{"metrics": {...}, "samples": n, "root": str}``."""
    import ray.train

    from hmh.models.checkpoint import models_from_checkpoint
    from hmh.train.loop import evaluate, resolve_device
    from hmh.train.runner import eval_dataset, make_loader

    device = resolve_device("auto")
    with ray.train.Checkpoint(checkpoint_path).as_directory() as folder:
        loaded = models_from_checkpoint(Path(folder) / CHECKPOINT_FILE, device)
    cfg = loaded.config
    dataset = eval_dataset(cfg, cfg.data.root, split, max_samples)
    loader = make_loader(dataset, cfg, train=False, device=device)
    metrics = evaluate(loaded.generator, loaded.selector, loader, cfg, device)
    return {"metrics": metrics, "samples": len(dataset), "root": str(cfg.data.root)}
