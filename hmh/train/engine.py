"""One training stage, the engine shared by ``hmh train`` (:mod:`hmh.train.runner`) and the Ray Train workers
(:mod:`tune.worker`): neither loops over epochs itself.

:func:`run_stage` builds the stage's optimizer, scheduler and GradScaler (:mod:`hmh.train.loop`), restores them and the
trained model from a checkpoint when resuming, and for each epoch trains (:func:`hmh.train.loop.train_one_epoch`),
validates with the unwrapped models (:func:`hmh.train.loop.evaluate`), writes TensorBoard under one tag scheme and hands
an :class:`EpochReport` with the stage's :class:`StageParts` to its caller's ``on_epoch`` callback. The callback
persists the epoch: ``hmh train`` writes checkpoint files, a Ray Train worker calls ``ray.train.report``.

The rules both callers share live here too: which epoch a stage keeps (:func:`keeps_last`) and when the selection
stage cannot change the output (:func:`selection_skipped`).

TensorBoard, per epoch at step ``run_epoch`` (the epoch counted across both stages, ASHA's time axis):
``{stage}/train/<key>``, ``{stage}/val/<reduction>/<metric>``, ``{stage}/val/objective_mpjpe_current`` and the
image ``{stage}/hypotheses``; per step (``train_one_epoch``) ``train/{stage}/loss/<term>``, ``lr``, ``grad_norm``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DistributedSampler
from torch.utils.tensorboard import SummaryWriter

from hmh.config import Config
from hmh.models.build import unwrap
from hmh.predict.pictures import hypothesis_grid
from hmh.results.tables import OBJECTIVE, OBJECTIVE_SOURCE
from hmh.train.loop import (
    evaluate,
    final_without_selector,
    infer,
    make_optimizer,
    make_scaler,
    make_scheduler,
    objective_source,
    to_device,
    train_one_epoch,
)

__all__ = ["EpochReport", "StageParts", "epoch_offset", "keeps_last", "log_hypothesis_images", "run_epochs",
           "run_stage", "selection_skipped", "stage_epochs"]


def stage_epochs(stage: str, cfg: Config) -> int:
    """The epochs ``cfg`` gives ``stage``: ``train.generation_epochs`` or ``train.selection_epochs``."""
    return cfg.train.generation_epochs if stage == "generation" else cfg.train.selection_epochs


def run_epochs(cfg: Config) -> int:
    """The epochs a run of ``cfg`` trains over both stages (the selection stage's only where it is not skipped)."""
    return cfg.train.generation_epochs + (0 if selection_skipped(cfg) else cfg.train.selection_epochs)


def epoch_offset(stage: str, cfg: Config) -> int:
    """Epochs of the stages before ``stage`` in a run of ``cfg``: the selection stage counts on from the generation
    stage's epochs (Tune's ``trial_epoch``, ASHA's time axis), also where it starts from a given generator."""
    return cfg.train.generation_epochs if stage == "selection" else 0


def keeps_last(cfg: Config, has_val: bool) -> bool:
    """Whether a stage keeps its last epoch (``train.keep: last``, or no validation split to rank epochs by)
    rather than the epoch with the lowest validation objective (:func:`hmh.train.loop.objective_source`)."""
    return cfg.train.keep == "last" or not has_val


def selection_skipped(cfg: Config) -> str:
    """Why the selection stage is not trained ("" when it is): no selection epochs, or an output that needs no
    selector (:func:`hmh.train.loop.final_without_selector`)."""
    if cfg.train.selection_epochs <= 0:
        return "train.selection_epochs = 0"
    return final_without_selector(cfg)


@dataclass
class EpochReport:
    """One epoch of one stage: training means (``train_one_epoch``), validation metrics (mm; empty on a Ray
    worker that does not validate or without a validation split), wall seconds."""

    stage: str
    epoch: int  # 1-based, within the stage
    epochs: int  # the stage's epochs
    epoch_offset: int  # epochs of the stages before this one in the run
    restored_epoch: int  # the epoch this stage resumed after (0: started fresh)
    train: dict[str, float]
    val: dict[str, float]
    seconds: float
    objective_source: str  # the reduction whose val current-frame MPJPE is the objective (loop.objective_source)

    @property
    def run_epoch(self) -> int:
        """1-based across the run's stages (Tune's ``trial_epoch``)."""
        return self.epoch_offset + self.epoch

    @property
    def objective(self) -> float:
        """The stage's validation objective (mm; NaN without validation)."""
        return self.val.get(f"{self.objective_source}/mpjpe_current", math.nan)

    def metrics(self) -> dict[str, Any]:
        """The flat report: ``stage``, ``epoch``, ``trial_epoch``, ``restored_epoch``, ``train/<key>``,
        ``val/<reduction>/<metric>`` and, with validation, the objective :data:`hmh.results.tables.OBJECTIVE` and its
        source :data:`hmh.results.tables.OBJECTIVE_SOURCE`."""
        out: dict[str, Any] = {"stage": self.stage, "epoch": self.epoch, "trial_epoch": self.run_epoch,
                               "restored_epoch": self.restored_epoch}
        out.update({f"train/{k}": v for k, v in self.train.items()})
        out.update({f"val/{k}": v for k, v in self.val.items()})
        if self.val:
            out[OBJECTIVE] = self.objective
            out[OBJECTIVE_SOURCE] = self.objective_source
        return out

    def checkpoint_metrics(self) -> dict[str, int | float]:
        """:meth:`metrics` without its strings: what a checkpoint stores."""
        return {k: v for k, v in self.metrics().items() if isinstance(v, (int, float))}


@dataclass
class StageParts:
    """What a stage trains with, for its ``on_epoch`` callback to checkpoint: the models (``generator`` and, in
    the selection stage, ``selector``; possibly DDP-wrapped), the optimizer, the scheduler and the GradScaler."""

    stage: str
    generator: torch.nn.Module
    selector: torch.nn.Module | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None

    def checkpoint_state(self) -> dict[str, Any]:
        """The keyword arguments of :func:`hmh.models.checkpoint.save_checkpoint` that these parts fill."""
        return dict(generator=self.generator, selector=self.selector, optimizer=self.optimizer,
                    scheduler=self.scheduler, scaler=self.scaler, stage=self.stage)


OnEpoch = Callable[[EpochReport, StageParts], None]


@torch.no_grad()
def log_hypothesis_images(writer: SummaryWriter, tag: str, generator, selector, batch: dict, cfg: Config,
                          device: torch.device, step: int) -> None:
    """TensorBoard image of a fixed batch: inputs with every hypothesis' 2D joints, the selected top-n
    highlighted (:mod:`hmh.predict.pictures`)."""
    generator.eval()
    if selector is not None:
        selector.eval()
    out, scores = infer(generator, selector, to_device(batch, device), cfg, device)
    grid = hypothesis_grid(batch, out.joints_2d.float().cpu(), None if scores is None else scores.float().cpu(),
                           cfg.selection.top_n)
    writer.add_image(tag, grid, step)


def _write_epoch(writer: SummaryWriter, report: EpochReport, image: Callable[[int], None] | None) -> None:
    for key, value in report.metrics().items():
        if isinstance(value, float):
            writer.add_scalar(f"{report.stage}/{key}", value, report.run_epoch)
    if image is not None:
        image(report.run_epoch)
    writer.flush()


def run_stage(
    stage: str, cfg: Config, generator: torch.nn.Module, selector: torch.nn.Module | None, train_loader,
    val_loader, device: torch.device, on_epoch: OnEpoch, *, resume: dict | None = None,
    writer: SummaryWriter | None = None, image_batch: dict | None = None, progress: bool = False,
) -> list[EpochReport]:
    """Train ``stage`` of ``cfg`` for its epochs (module docstring) and return every epoch's report.

    ``generator``/``selector``: the models on ``device``; the trained one (the generator in the generation stage,
    the selector in the selection stage, where the generator must be frozen) may be DDP-wrapped. ``val_loader``
    None: no validation. ``resume``: an :mod:`hmh.models.checkpoint` dict of this stage; its trained model, optimizer,
    scheduler and scaler states are restored and the epochs after its ``epoch`` run. ``on_epoch(report, parts)``
    is called after every epoch. ``writer``/``image_batch``: TensorBoard scalars, and a hypothesis image of that
    batch."""
    trained = generator if stage == "generation" else selector
    if trained is None:
        raise ValueError(f"{stage} stage: its model is None")
    optimizer = make_optimizer(stage, trained, cfg)
    scheduler = make_scheduler(stage, optimizer, cfg, len(train_loader))
    scaler = make_scaler(cfg, device)
    start = 0
    if resume is not None:
        unwrap(trained).load_state_dict(resume["model"]["generator" if stage == "generation" else "selector"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        start = int(resume["epoch"])
    parts = StageParts(stage, generator, selector if stage == "selection" else None, optimizer, scheduler, scaler)
    scorer = None if parts.selector is None else unwrap(parts.selector)
    image = None
    if writer is not None and image_batch is not None:
        def image(step: int) -> None:
            log_hypothesis_images(writer, f"{stage}/hypotheses", unwrap(generator), scorer, image_batch, cfg, device,
                                  step)
    epochs, offset, reports = stage_epochs(stage, cfg), epoch_offset(stage, cfg), []
    for epoch in range(start, epochs):
        begin = time.perf_counter()
        if isinstance(getattr(train_loader, "sampler", None), DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        train = train_one_epoch(stage, generator, parts.selector, train_loader, optimizer, scheduler, cfg, device,
                                epoch, writer, progress=progress, scaler=scaler)
        val = {} if val_loader is None else evaluate(unwrap(generator), scorer, val_loader, cfg, device,
                                                     progress=progress)
        report = EpochReport(stage, epoch + 1, epochs, offset, start, train, val, time.perf_counter() - begin,
                             objective_source(stage, cfg))
        if writer is not None:
            _write_epoch(writer, report, image)
        reports.append(report)
        on_epoch(report, parts)
    return reports
