"""Training and evaluation of both stages in plain PyTorch (no Ray: drivers wrap these functions).

Stage ``"generation"`` trains the generator with the winner-takes-all generation loss. Stage ``"selection"``
freezes the generator (eval mode, no gradients) and trains the selector with the JRC loss on labels computed
from the generator's hypotheses. Models, loaders, optimizers and schedulers are passed in, so a driver may wrap
them first (DDP, ``prepare_model``/``prepare_data_loader``, ``torch.compile``).

Schedules are stepped once per optimizer step: generation multiplies the learning rate by ``optim.gamma`` at
every epoch in ``optim.milestones``, epochs counted from 1 as the dissertation and BlurHandNet's training script
count them (milestones [10, 13] over 13 epochs: epochs 1-9 at ``lr``, 10-12 at ``lr * gamma``, 13 at
``lr * gamma^2``); selection follows a cosine from ``optim.selection_lr`` to 0 over the
selection epochs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from hmh.config import DEVICE, DEVICES, Config
from hmh.errors import HmhError
from hmh.models.build import unwrap

__all__ = [
    "STAGES",
    "TrainingError",
    "amp_dtype",
    "autocast",
    "evaluate",
    "final_without_selector",
    "infer",
    "init_selector_from_generator",
    "make_optimizer",
    "make_scaler",
    "make_scheduler",
    "model_images",
    "objective_key",
    "objective_source",
    "resolve_device",
    "seed_everything",
    "to_device",
    "train_one_epoch",
]

log = logging.getLogger(__name__)

STAGES = ("generation", "selection")


def final_without_selector(cfg: Config) -> str:
    """Why the run's output needs no trained selector ("" when it does): top_n = K, which keeps every hypothesis,
    so a selector cannot change the output, or a ``selection.rule`` that ranks without a selector."""
    if cfg.selection.top_n == cfg.model.num_hypotheses:
        return (f"top_n = K = {cfg.model.num_hypotheses} keeps every hypothesis, so a selector cannot change the "
                "output (the final is the mean of K)")
    if cfg.selection.rule == "reprojection":
        return "selection.rule = reprojection ranks the hypotheses without a trained selector"
    return ""


def objective_source(stage: str, cfg: Config) -> str:
    """The reduction whose validation current-frame MPJPE is ``stage``'s objective (lower is better): the selected
    top-n (``final``) in the selection stage, and from the first epoch where the run's output needs no selector
    (:func:`final_without_selector`); before a selector exists, ``train.generation_objective``, which stands in for
    a final still to come."""
    _check_stage(stage)
    return "final" if stage == "selection" or final_without_selector(cfg) else cfg.train.generation_objective


def objective_key(stage: str, cfg: Config) -> str:
    """``<reduction>/mpjpe_current`` of :func:`objective_source`: the validation metric that is the objective."""
    return f"{objective_source(stage, cfg)}/mpjpe_current"


class TrainingError(HmhError):
    """Training cannot go on (e.g. a non-finite loss); the message names the stage, epoch and step (for a
    non-finite loss also its terms and the batch's samples)."""


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"stage: expected one of {STAGES}, got {stage!r}")


def resolve_device(name: str, key: str = "train.device") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise ``torch.device(name)``, checked to be spelt as
    :data:`hmh.config.DEVICE` and to exist here; errors name ``key`` (the config key or the CLI argument)."""
    if not DEVICE.fullmatch(name):
        raise TrainingError(f"{key}={name!r} is invalid: expected {DEVICES}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:  # an index torch cannot parse (over int64)
        raise TrainingError(f"{key}={name!r} is invalid: the device index is out of range") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"{key}={name!r} but CUDA is not available here (use cpu or auto)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise TrainingError(f"{key}={name!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Every tensor of a sample-dict batch on ``device`` (non-blocking from pinned memory)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # train.precision


def amp_dtype(cfg: Config) -> torch.dtype | None:
    """The autocast dtype of ``train.precision`` (None: fp32, no autocast)."""
    return AUTOCAST_DTYPES[cfg.train.precision]


def make_scaler(cfg: Config, device: torch.device) -> torch.amp.GradScaler | None:
    """The GradScaler of an fp16 stage (None otherwise): one per stage, passed to every epoch's
    :func:`train_one_epoch` and saved in its checkpoints, so the scale it found carries across epochs and resumes."""
    return torch.amp.GradScaler(device.type) if amp_dtype(cfg) == torch.float16 else None


def autocast(cfg: Config, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward-pass precision context of ``train.precision`` on ``device`` (CPU and CUDA alike); a no-op for
    fp32. MANO (:class:`hmh.mano.model.Mano`) turns it off for itself; losses and metrics run outside it, in fp32."""
    dtype = amp_dtype(cfg)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def model_images(batch: Mapping[str, torch.Tensor], cfg: Config) -> torch.Tensor:
    """The batch's ``image (B, 3, S, S)``, in channels_last memory format with ``train.channels_last``."""
    images = batch["image"]
    return images.contiguous(memory_format=torch.channels_last) if cfg.train.channels_last else images


@torch.no_grad()
def infer(generator: torch.nn.Module, selector: torch.nn.Module | None, batch: Mapping[str, torch.Tensor],
          cfg: Config, device: torch.device) -> tuple[Any, torch.Tensor | None]:
    """The generator's output and the rewards ``(B, K)`` that rank its hypotheses for a batch on ``device``, in
    ``train.precision``, the models in whatever mode the caller set. ``selection.rule: learned``: the selector's
    rewards (None without a selector); ``reprojection``: :func:`hmh.models.selector.reprojection_reward` of the
    generator's output, with or without a selector (the selector is not run); ``combined``: the selector's rewards
    times the reprojection ones (None without a selector)."""
    from hmh.models.selector import reprojection_reward

    images = model_images(batch, cfg)
    rule, align = cfg.selection.rule, cfg.selection.reprojection_align
    with autocast(cfg, device):
        out = generator(images)
        if rule == "reprojection":
            return out, reprojection_reward(out, images.shape[-1], align)
        if selector is None:
            return out, None
        reward = selector(images, out).reward  # (B, K)
        return out, reward * reprojection_reward(out, images.shape[-1], align) if rule == "combined" else reward


def init_selector_from_generator(selector: torch.nn.Module, generator: torch.nn.Module) -> int:
    """Copy the generator's trained backbone and Unfolder weights into the selector's own ones (stage-2 default,
    ``selection.init_from_generator``). Returns the number of tensors copied."""
    sel, gen = unwrap(selector), unwrap(generator)
    return sel.init_from_generator(gen)


def make_optimizer(stage: str, model: torch.nn.Module, cfg: Config) -> torch.optim.AdamW:
    """AdamW over ``model``'s trainable parameters: ``optim.lr`` (generation) or ``optim.selection_lr``.

    Build it after moving the model to its device: the fused kernel is used on CPU and CUDA (on a CPU it is
    ~40x faster than the per-parameter loop for a ResNet-18)."""
    _check_stage(stage)
    lr = cfg.optim.lr if stage == "generation" else cfg.optim.selection_lr
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError(f"{stage} stage: the model has no trainable parameters")
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.optim.weight_decay, fused=fused)


def make_scheduler(
    stage: str, optimizer: torch.optim.Optimizer, cfg: Config, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule: generation ``x gamma`` from each milestone epoch on (counted from 1: the epoch numbered
    ``m`` is the first at the decayed rate); selection cosine to 0 over
    ``train.selection_epochs``. Step it after every optimizer step (``train_one_epoch`` does)."""
    _check_stage(stage)
    steps_per_epoch = max(1, int(steps_per_epoch))
    if stage == "generation":
        milestones = sorted(cfg.optim.milestones)
        gamma = cfg.optim.gamma

        def factor(step: int) -> float:
            epoch = step // steps_per_epoch + 1  # counted from 1
            return gamma ** sum(epoch >= m for m in milestones)

    else:
        total = max(1, cfg.train.selection_epochs * steps_per_epoch)

        def factor(step: int) -> float:
            return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _batch_size(batch: Mapping[str, torch.Tensor]) -> int:
    return int(batch["image"].shape[0])


def _non_finite_report(losses: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> str:
    """One line for a non-finite loss: the non-finite terms, every term's value, the batch's samples (dataset
    ``index`` and ``annot_id`` where the dataset gives them) and any input key holding NaN/inf, with its samples."""
    values = {k: float(v.detach()) for k, v in losses.items()}
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    parts = [f"non-finite loss in {', '.join(bad)} ({', '.join(f'{k}={v:.4g}' for k, v in values.items())})"]
    ids = {k: batch[k].tolist() for k in ("index", "annot_id") if isinstance(batch.get(k), torch.Tensor)}
    parts.append("batch samples: " + ("; ".join(f"{k} {v}" for k, v in ids.items()) or "not given by the dataset"))
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() > 0:
            rows = (~torch.isfinite(value)).reshape(len(value), -1).any(dim=1).nonzero().flatten()
            if len(rows) and "index" in ids:
                parts.append(f"non-finite input {key!r} in samples index {[ids['index'][r] for r in rows.tolist()]}")
            elif len(rows):
                parts.append(f"non-finite input {key!r} at batch positions {rows.tolist()}")
    return "; ".join(parts)


def _forward_losses(
    stage: str, generator: torch.nn.Module, selector: torch.nn.Module | None, batch: dict, cfg: Config,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """One training forward pass -> the stage's loss dict (``"total"`` + each term), losses in fp32."""
    from hmh.train.losses import generation_loss, selection_loss

    images = model_images(batch, cfg)
    if stage == "generation":
        with autocast(cfg, device):
            out = generator(images)
        return generation_loss(out, batch, cfg.loss)
    with torch.no_grad(), autocast(cfg, device):
        gen_out = generator(images)
    with autocast(cfg, device):
        sel_out = selector(images, gen_out)
    return selection_loss(sel_out, gen_out, batch, cfg.loss, cfg.selection.top_n)


def _progress(loader: Iterable, stage: str, epoch: int, enabled: bool) -> Iterator:
    total = len(loader) if hasattr(loader, "__len__") else None
    return iter(tqdm(loader, total=total, desc=f"{stage} epoch {epoch + 1}", unit="batch", leave=False,
                     disable=not enabled, dynamic_ncols=True))


def train_one_epoch(
    stage: str,
    generator: torch.nn.Module,
    selector: torch.nn.Module | None,
    loader: Iterable[dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    cfg: Config,
    device: torch.device,
    epoch: int,
    writer: SummaryWriter | None = None,
    *,
    progress: bool = False,
    max_steps: int = 0,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """Train one epoch of ``stage`` (``epoch`` counts from 0) and return its means.

    Generation trains ``generator``; selection trains ``selector`` with ``generator`` frozen (eval mode, no
    gradients). Gradients are clipped to ``optim.grad_clip`` (0 = off); ``scheduler`` is stepped per step.
    Every ``train.log_every`` steps the losses and learning rate go to ``writer`` as ``train/{stage}/...`` at
    global step ``epoch * len(loader) + step``. ``max_steps`` > 0 stops early (tests, benchmarks). fp16 needs the
    stage's ``scaler`` (:func:`make_scaler`).

    Returns ``{"loss/<term>": mean over samples, "lr": the last step's rate, "grad_norm": mean pre-clip norm,
    "samples": n, "steps": n, "seconds": s, "samples_per_s": n/s}``.
    """
    _check_stage(stage)
    if stage == "selection" and selector is None:
        raise ValueError("selection stage: selector is None")
    generator.train(stage == "generation")
    if selector is not None:
        selector.train(stage == "selection")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if (scaler is None) != (amp_dtype(cfg) != torch.float16):
        raise ValueError(f"train.precision={cfg.train.precision!r}: a GradScaler is needed for fp16 and only there "
                         f"(hmh.train.loop.make_scaler), got {scaler!r}")
    steps_per_epoch = len(loader) if hasattr(loader, "__len__") else 0
    sums: dict[str, torch.Tensor] = {}
    grad_norm_sum = torch.zeros((), device=device)
    samples = steps = 0
    start = time.perf_counter()
    for step, cpu_batch in enumerate(_progress(loader, stage, epoch, progress)):
        if max_steps and step >= max_steps:
            break
        batch = to_device(cpu_batch, device)
        size = _batch_size(batch)
        losses = _forward_losses(stage, generator, selector, batch, cfg, device)
        total = losses["total"]
        if not bool(torch.isfinite(total)):
            raise TrainingError(f"{stage} epoch {epoch + 1} step {step}: {_non_finite_report(losses, cpu_batch)}")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(total).backward()
            scaler.unscale_(optimizer)
        else:
            total.backward()
        max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        lr = optimizer.param_groups[0]["lr"]  # the rate this step used
        if scheduler is not None:
            scheduler.step()
        for name, value in losses.items():
            sums[name] = sums.get(name, torch.zeros((), device=device)) + value.detach().float() * size
        grad_norm_sum += grad_norm.detach().float()
        samples += size
        steps += 1
        if writer is not None and step % cfg.train.log_every == 0:
            global_step = epoch * steps_per_epoch + step
            for name, value in losses.items():
                writer.add_scalar(f"train/{stage}/loss/{name}", float(value.detach()), global_step)
            writer.add_scalar(f"train/{stage}/lr", lr, global_step)
            writer.add_scalar(f"train/{stage}/grad_norm", float(grad_norm), global_step)
    if steps == 0:
        raise TrainingError(f"{stage} epoch {epoch + 1}: the training loader yielded no batch")
    seconds = time.perf_counter() - start
    result = {f"loss/{name}": float(value) / samples for name, value in sums.items()}
    result.update(
        lr=float(lr), grad_norm=float(grad_norm_sum) / steps, samples=float(samples),
        steps=float(steps), seconds=seconds, samples_per_s=samples / seconds,
    )
    return result


@torch.no_grad()
def evaluate(
    generator: torch.nn.Module,
    selector: torch.nn.Module | None,
    loader: Iterable[dict[str, torch.Tensor]],
    cfg: Config,
    device: torch.device,
    *,
    progress: bool = False,
) -> dict[str, float]:
    """BlurHand protocol over ``loader`` with hmh.eval.metrics' streaming evaluator (predictions are never kept).

    Returns ``{"{reduction}/{metric}": mm}`` for reductions best_of_k, mean_of_k, random_n, hyp0 (and ``final``
    plus ``selection/precision`` when :func:`infer` gives rewards: a ``selector``, or ``selection.rule:
    reprojection``) and metrics mpjpe_past, mpjpe_current,
    mpjpe_future, mpvpe. ``random_n`` draws with ``train.seed``, so it is reproducible.
    """
    from hmh.eval.protocol import MultiHypothesisEvaluator

    generator.eval()
    if selector is not None:
        selector.eval()
    evaluator = MultiHypothesisEvaluator(cfg.selection.top_n, seed=cfg.train.seed)
    batches = 0
    for cpu_batch in _progress(loader, "evaluate", -1, progress):
        batch = to_device(cpu_batch, device)
        out, scores = infer(generator, selector, batch, cfg, device)
        joints = out.joints.float()  # (B, K, T, J, 3)
        verts = out.vertices[:, :, 1].float() - joints[:, :, 1, :1]  # (B, K, V, 3) current frame minus its wrist
        evaluator.update(
            joints, batch["joints_3d"], batch["joint_valid"], verts, batch["mesh"], batch["mesh_valid"],
            None if scores is None else scores.float(),
        )
        batches += 1
    if batches == 0:
        raise TrainingError("evaluate: the loader yielded no batch")
    return evaluator.compute()
