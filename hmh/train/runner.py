"""A whole two-stage training run on one process (``hmh train``), built from reusable per-epoch pieces.

``run_training(cfg, out_dir)`` checks what it will read (:func:`check_inputs`), resolves the data (``data.root``
or the cached synthetic dataset), trains the generation stage (or takes the generator of ``train.generator``'s
checkpoint), reloads its kept checkpoint, trains the selection stage, reloads its kept checkpoint and evaluates on
the test split. Layout of ``out_dir``::

    config.yaml                         the resolved config
    checkpoints/{stage}_{last,best}.pt  per epoch; best = the kept one: by the stage's validation objective
                                        (train.generation_objective; the selected top-n), or the last with
                                        train.keep: last or no validation
    tensorboard/                        scalars (losses, lr, every metric) and hypothesis images per epoch
    metrics.json, metrics.md            the test split's metric table, with the constant mean-pose baseline
                                        (hmh.eval.baseline), + the best validation metrics

A folder that holds any of these already is refused unless ``overwrite`` (``hmh train --overwrite``); the old
files are then kept aside until the new run succeeds, and restored when it fails, is interrupted or gets SIGTERM
(:func:`hmh.files.outputs.replacing`). Old files that a killed run (SIGKILL) left aside are put back by the
next run into that folder, or named when the killed run's own files are there too. The folder is locked for the
whole run (:mod:`hmh.files.folder_lock`). Nothing is written before the folder and the run's inputs are checked
(:func:`check_inputs`: the data root, the MANO files, the ImageNet weights), nor is the data indexed before the
device, the models and ``train.generator`` are.

Each stage runs on :func:`hmh.train.engine.run_stage`, the engine the Ray Train workers run too; they also reuse
:func:`data_root`, :func:`build_datasets` and :func:`make_loader`.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.tensorboard import SummaryWriter

from hmh.config import Config, ConfigError, save_config
from hmh.eval.baseline import constant_errors, share_line
from hmh.eval.report import metric_table, write_metrics
from hmh.files import atomic, folder_lock
from hmh.files.outputs import check_folder, check_free, naming_os_errors, replacing, restore_set_aside
from hmh.models.build import build_models, unwrap
from hmh.models.checkpoint import check_same_generator, checkpoint_config, load_checkpoint, save_checkpoint
from hmh.results.tables import OBJECTIVE
from hmh.train.engine import EpochReport, StageParts, keeps_last, run_stage, selection_skipped
from hmh.train.loop import (
    evaluate,
    init_selector_from_generator,
    objective_key,
    resolve_device,
    seed_everything,
)

__all__ = [
    "RunPaths",
    "RunResult",
    "baseline_errors",
    "build_datasets",
    "check_inputs",
    "data_root",
    "epoch_line",
    "kept_line",
    "make_loader",
    "report_text",
    "run_training",
]

log = logging.getLogger(__name__)

SPLIT_SEED = 0  # fixed, so every run and trial validates on the same held-out captures
Echo = Callable[[str], None]


@dataclass(frozen=True)
class RunPaths:
    """Where one run writes (see the module docstring)."""

    ENTRIES = ("config.yaml", "checkpoints", "tensorboard", "metrics.json", "metrics.md")  # what a run writes

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    def checkpoint(self, stage: str, kind: str) -> Path:
        """``checkpoints/{stage}_{kind}.pt``, ``kind`` "last" or "best"."""
        return self.root / "checkpoints" / f"{stage}_{kind}.pt"


def _given_root(cfg: Config) -> str:
    """``data.root`` as given; empty is refused under ``data.require_root`` (a config meant for the real data)."""
    if cfg.data.require_root and not cfg.data.root:
        raise ConfigError("data.root is empty, and this config needs one (data.require_root=true): set it to your "
                          "BlurHand root, e.g. --set data.root=/data/BlurHand (--set data.require_root=false trains on "
                          "hmh's synthetic dataset instead)")
    return cfg.data.root


def check_inputs(cfg: Config, echo: Echo = log.info) -> None:
    """Check what a run reads besides its output folder, before any data is indexed or built (``hmh train``, and the
    Ray drivers before Ray starts): ``data.require_root``, that ``data.root`` is a folder, the MANO model the data
    needs (:func:`hmh.data.synthetic.check_hand_model`), ``model.mano_path``'s files
    (:func:`hmh.mano.model.check_mano_path`) and, with ``model.pretrained``, the ImageNet weights (read from torch
    hub's cache, or downloaded there now, which ``echo`` says: :func:`hmh.models.backbone.imagenet_weights`). Each
    failure is one :class:`hmh.errors.HmhError` line naming the key."""
    from hmh.data.synthetic import check_hand_model
    from hmh.mano.model import check_mano_path

    root = _given_root(cfg)
    if root and not Path(root).is_dir():
        raise ConfigError(f"data.root={root!r}: no such folder (expected a BlurHand root: blur_images/, annotations/)")
    check_hand_model(root, cfg.model.mano_path)
    check_mano_path(cfg.model.mano_path)
    if cfg.model.pretrained:
        from hmh.models.backbone import imagenet_weights

        imagenet_weights(cfg.model.backbone, echo)


def data_root(cfg: Config, progress: bool = True) -> Path:
    """``data.root``, or the synthetic dataset for ``cfg.data`` (built into the cache on first use; refused under
    ``data.require_root``)."""
    if _given_root(cfg):
        return Path(cfg.data.root)
    from hmh.data.synthetic import synthetic_dataset_dir

    return synthetic_dataset_dir(cfg.data, progress=progress)


def _dataset_args(cfg: Config) -> dict:
    """The :class:`hmh.data.blurhand.BlurHandDataset` arguments every split of a run shares."""
    d, m = cfg.data, cfg.model
    return dict(image_size=m.image_size, mano_path=m.mano_path, skip_bad_images=d.skip_bad_images,
                skip_bad_annotations=d.skip_bad_annotations, seed=SPLIT_SEED)


def eval_dataset(cfg: Config, root: str | Path, split: str, max_samples: int | None = None) -> Dataset:
    """The un-augmented BlurHandDataset of a whole ``split`` (``train`` or ``test``), as the run's test split is
    read; at most ``max_samples`` (default ``data.max_eval_samples``; 0 = all). A root that needs the real MANO
    model refuses the synthetic hand first (:func:`hmh.data.synthetic.check_hand_model`)."""
    from hmh.data.blurhand import BlurHandDataset
    from hmh.data.synthetic import check_hand_model

    check_hand_model(root, cfg.model.mano_path)

    limit = cfg.data.max_eval_samples if max_samples is None else max_samples
    return BlurHandDataset(root, split, augment=False, max_samples=limit, **_dataset_args(cfg))


def build_datasets(cfg: Config, root: str | Path, splits: tuple[str, ...] = ("train", "val", "test")) -> dict:
    """BlurHandDatasets: ``train`` (the training split minus the held-out captures, augmented), ``val`` (the
    held-out ``data.val_fraction``; omitted when 0) and ``test`` (:func:`eval_dataset`). Sizes capped by
    ``data.max_*_samples``. A root that needs the real MANO model refuses the synthetic hand first
    (:func:`hmh.data.synthetic.check_hand_model`)."""
    from hmh.data.blurhand import BlurHandDataset
    from hmh.data.synthetic import check_hand_model

    check_hand_model(root, cfg.model.mano_path)
    d, common = cfg.data, _dataset_args(cfg)
    held_out = d.val_fraction > 0
    datasets: dict[str, Dataset] = {}
    if "train" in splits:
        datasets["train"] = BlurHandDataset(
            root, "train", augment=d.augment, max_samples=d.max_train_samples, val_fraction=d.val_fraction,
            subset="train" if held_out else "all", **common,
        )
    if "val" in splits and held_out:
        datasets["val"] = BlurHandDataset(
            root, "train", augment=False, max_samples=d.max_eval_samples, val_fraction=d.val_fraction, subset="val",
            **common,
        )
    if "test" in splits:
        datasets["test"] = eval_dataset(cfg, root, "test")
    return datasets


def baseline_errors(cfg: Config, root: str | Path, test: Dataset, train: Dataset | None = None) -> dict[str, float]:
    """The constant mean-pose rows (:func:`hmh.eval.baseline.constant_errors`, ``{"constant/mpjpe_*": mm}``) on
    ``test``: the mean pose of the run's training split, ``train`` or read from ``root`` as ``hmh train`` reads it
    (the same held-out captures and ``data.max_train_samples``), so ``hmh evaluate`` gives ``hmh train``'s row."""
    return constant_errors(train if train is not None else build_datasets(cfg, root, ("train",))["train"], test)


def report_text(metrics: dict[str, float]) -> str:
    """The printed test table of ``hmh train`` and ``hmh evaluate``: the metric table (mm), then the current
    MPJPE as a share of the constant mean pose."""
    return metric_table(metrics) + "\n" + share_line(metrics)


def loader_workers(cfg: Config, device: torch.device, cpus: float | None = None) -> int:
    """``data.loader_workers``, or for -1 the count sized from the ``cpus`` the run holds (None: this process's
    CPU affinity): on CUDA all but one of them (at most 8), the main process driving the GPU while the others decode
    and augment; on the CPU one per four, as the models' own threads need the cores (0 on a 2-core machine)."""
    if cfg.data.loader_workers >= 0:
        return cfg.data.loader_workers
    held = int(cpus) if cpus is not None else len(os.sched_getaffinity(0))
    return min(8, max(1, held - 1)) if device.type == "cuda" else held // 4


def make_loader(dataset: Dataset, cfg: Config, *, train: bool, device: torch.device, seed: int = 0,
                cpus: float | None = None) -> DataLoader:
    """Shuffled, last-partial-batch-dropping loader for training (``train.batch_size``); ordered for evaluation
    (``train.eval_batch_size``). ``seed`` fixes the shuffling and the workers' augmentation RNG. Batches are pinned
    for CUDA; the worker processes come from :func:`loader_workers` (``cpus``: the CPUs the run holds)."""
    batch_size = cfg.train.batch_size if train else cfg.train.eval_batch_size
    workers = loader_workers(cfg, device, cpus)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=train, drop_last=train and len(dataset) > batch_size,
        num_workers=workers, persistent_workers=workers > 0, pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(seed) if train else None,
    )


def epoch_line(result: EpochReport) -> str:
    """One console line: losses, lr, throughput and the main validation metrics (mm)."""
    t = result.train
    terms = ", ".join(f"{k[5:]} {v:.4g}" for k, v in t.items() if k.startswith("loss/") and k != "loss/total")
    line = (f"{result.stage} {result.epoch}/{result.epochs} | loss {t['loss/total']:.4g} ({terms}) | "
            f"lr {t['lr']:.2e} | {t['samples_per_s']:.1f} samples/s")
    shown = [("final", "final"), ("best_of_k", "best-of-K"), ("label_oracle", "label-oracle"),
             ("mean_of_k", "mean-of-K"), ("random_n", "random-n"), ("hyp0", "hyp0")]
    vals = [f"{name} {result.val[f'{key}/mpjpe_current']:.2f}" for key, name in shown
            if f"{key}/mpjpe_current" in result.val]
    if vals:
        line += " | val MPJPE current: " + ", ".join(vals)
    if "selection/precision" in result.val:
        v = result.val
        line += (f", precision {v['selection/precision']:.3f}, gain {v['selection/gain']:.2f}, "
                 f"most common set {100 * v['selection/common_set_share']:.0f}%")
    return line + f" | {result.seconds:.0f} s"


def _is_better(value: float, best: float) -> bool:
    return math.isnan(best) or (not math.isnan(value) and value < best)


def kept_line(stage: str, cfg: Config, has_val: bool, kept: int, history: list[dict[str, float]]) -> str:
    """Which epoch (``kept``, from 1) of the stage's ``history`` its ``best`` checkpoint holds, and by which rule:
    ``generation: kept epoch 1 of 3 (lowest validation mean_of_k/mpjpe_current: 41.20 mm; last epoch 44.02 mm;
    train.keep=best)``."""
    head = f"{stage}: kept epoch {kept} of {len(history)}"
    if cfg.train.keep == "last":
        return f"{head}, the last (train.keep=last)"
    if not has_val:
        return f"{head}, the last (train.keep=best, but there is no validation split: data.val_fraction=0)"
    key = objective_key(stage, cfg)
    value, last = (history[i].get(OBJECTIVE, math.nan) for i in (kept - 1, -1))
    if math.isnan(value):
        return f"{head}, the last (train.keep=best, but validation {key} was NaN in every epoch)"
    later = "" if kept == len(history) else f"; last epoch {last:.2f} mm"
    return f"{head} (lowest validation {key}: {value:.2f} mm{later}; train.keep=best) in checkpoints/{stage}_best.pt"


@dataclass
class StageResult:
    """A stage of ``hmh train``: its kept checkpoint, that epoch's metrics and every epoch's."""

    best: Path
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


def _run_stage(stage: str, cfg: Config, generator, selector, loaders: dict, device, paths: RunPaths, writer,
               echo: Echo, progress: bool) -> StageResult:
    """Train one stage with :func:`hmh.train.engine.run_stage`; after each epoch write ``{stage}_last.pt`` and copy
    it to ``{stage}_best.pt`` when the stage keeps that epoch (:func:`hmh.train.engine.keeps_last`, else the lowest
    validation objective so far)."""
    has_val = loaders.get("val") is not None
    keep_last = keeps_last(cfg, has_val)
    best_path, last_path = paths.checkpoint(stage, "best"), paths.checkpoint(stage, "last")
    kept: list[EpochReport] = []

    def on_epoch(report: EpochReport, parts: StageParts) -> None:
        echo(epoch_line(report))
        save_checkpoint(last_path, **parts.checkpoint_state(), epoch=report.epoch, config=cfg,
                        metrics=report.checkpoint_metrics())
        if keep_last or not kept or _is_better(report.objective, kept[-1].objective):
            kept.append(report)
            with atomic.atomic_path(best_path) as tmp:
                shutil.copyfile(last_path, tmp)

    reports = run_stage(stage, cfg, generator, selector, loaders["train"], loaders.get("val"), device, on_epoch,
                        writer=writer,
                        image_batch=next(iter(loaders["val"] if has_val else loaders["test"])), progress=progress)
    history = [report.metrics() for report in reports]
    echo(kept_line(stage, cfg, has_val, kept[-1].epoch, history))
    return StageResult(best_path, kept[-1].metrics(), history)


def _load_given_generator(cfg: Config, generator: torch.nn.Module) -> dict:
    """``train.generator``'s checkpoint (of either stage), its model checked against ``cfg.model``, its generator
    weights loaded into ``generator``."""
    source = Path(cfg.train.generator)
    data = load_checkpoint(source)
    check_same_generator(checkpoint_config(data, source), cfg, f"train.generator={str(source)!r}")
    unwrap(generator).load_state_dict(data["model"]["generator"])
    return data


def _given_generator(cfg: Config, generator: torch.nn.Module, data: dict, paths: RunPaths, echo: Echo
                     ) -> StageResult:
    """``train.generator`` in place of the generation stage: ``generator`` (holding its weights) saved as this
    run's ``generation_best.pt``, so the run's files are those of a run that trained it."""
    source = Path(cfg.train.generator)
    metrics = dict(data["metrics"])
    best = save_checkpoint(paths.checkpoint("generation", "best"), generator=generator, config=cfg,
                           stage="generation", epoch=int(data["epoch"]), metrics=metrics)
    echo(f"generation stage skipped: the generator of {source} ({data['stage']} stage, epoch {data['epoch']})")
    return StageResult(best, metrics)


@dataclass
class RunResult:
    """Where a run wrote, and its test metrics."""

    paths: RunPaths
    test_metrics: dict[str, float]
    best_val: dict[str, dict[str, float]]
    history: dict[str, list[dict[str, float]]]
    metrics_json: Path
    metrics_md: Path


def run_training(cfg: Config, out_dir: str | Path | None = None, *, echo: Echo = log.info,
                 progress: bool = True, overwrite: bool = False) -> RunResult:
    """Train generation then selection on this process and evaluate on the test split (module docstring), holding
    the output folder's lock throughout. ``out_dir``: ``hmh train --out``, default ``train.out_dir``."""
    out_name = "--out" if out_dir else "train.out_dir"
    root = check_folder(Path(out_dir or cfg.train.out_dir), out_name)
    check_inputs(cfg, echo)
    with folder_lock.exclusive(root):
        restore_set_aside(root, out_name, echo)
        paths = RunPaths(check_free(root, RunPaths.ENTRIES, out_name, "a run", overwrite))
        return _train(cfg, paths, echo, progress)


def _train(cfg: Config, paths: RunPaths, echo: Echo, progress: bool) -> RunResult:
    """:func:`run_training` once its output folder is locked and checked."""
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    generator, selector = build_models(cfg)  # before the data, which draws nothing from torch's global generator
    generator, selector = generator.to(device), selector.to(device)
    given = _load_given_generator(cfg, generator) if cfg.train.generator else None
    root = data_root(cfg, progress=progress)
    datasets = build_datasets(cfg, root)
    echo(f"data: {root} ({', '.join(f'{k} {len(v)}' for k, v in datasets.items())} samples); device: {device}")
    loaders = {name: make_loader(ds, cfg, train=name == "train", device=device, seed=cfg.train.seed)
               for name, ds in datasets.items()}
    best_val: dict[str, dict[str, float]] = {}
    history: dict[str, list[dict[str, float]]] = {}
    with (naming_os_errors(paths.root), replacing(paths.root, RunPaths.ENTRIES),
          SummaryWriter(str(paths.tensorboard)) as writer):
        save_config(cfg, paths.config)
        if given is not None:
            gen = _given_generator(cfg, generator, given, paths, echo)
        else:
            gen = _run_stage("generation", cfg, generator, None, loaders, device, paths, writer, echo, progress)
        best_val["generation"], history["generation"] = gen.best_metrics, gen.history
        unwrap(generator).load_state_dict(load_checkpoint(gen.best, device)["model"]["generator"])
        generator.requires_grad_(False)
        scorer = None
        skipped = selection_skipped(cfg)
        if skipped:
            echo(f"selection stage skipped: {skipped}")
        else:
            if cfg.selection.init_from_generator:
                init_selector_from_generator(selector, generator)
            sel = _run_stage("selection", cfg, generator, selector, loaders, device, paths, writer, echo, progress)
            best_val["selection"], history["selection"] = sel.best_metrics, sel.history
            unwrap(selector).load_state_dict(load_checkpoint(sel.best, device)["model"]["selector"])
            scorer = selector
        test = evaluate(generator, scorer, loaders["test"], cfg, device, progress=progress)
        test.update(baseline_errors(cfg, root, datasets["test"], datasets["train"]))
        for key, value in test.items():
            writer.add_scalar(f"test/{key}", value, 0)
        final_ckpt = paths.checkpoint("selection" if scorer is not None else "generation", "best")
        json_path, md_path = write_metrics(
            paths.root, test, f"test split ({len(datasets['test'])} samples) of {root}",
            extra={"best_val": best_val, "history": history, "checkpoint": str(final_ckpt),
                   "config": str(paths.config), "data_root": str(root)},
        )
    echo("test metrics (mm):\n" + report_text(test))
    return RunResult(paths, test, best_val, history, json_path, md_path)
