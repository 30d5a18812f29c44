"""Self-describing training checkpoints: a checkpoint alone rebuilds the models.

A checkpoint is a plain dict of tensors and Python built-ins, so ``torch.load(path, weights_only=True)`` reads it
without running any pickled code::

    {"format": "hmh-checkpoint", "format_version": 1,
     "model": {"generator": state_dict, "selector": state_dict | None},
     "optimizer": state_dict | None, "scheduler": state_dict | None,
     "epoch": int (epochs completed in this stage), "stage": "generation" | "selection",
     "config": hmh.config.to_dict(cfg), "metrics": {name: float}, "versions": {"hmh": str, "torch": str}}

Files are written atomically (:mod:`hmh.atomic`): a killed run never leaves half a checkpoint. A folder holding
``checkpoint.pt`` (a Ray Train checkpoint of the ``tune`` drivers) is read as that file.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

import hmh
from hmh import atomic
from hmh.config import Config, ConfigError, from_dict, to_dict
from hmh.errors import HmhError
from hmh.models.build import build_models, unwrap

__all__ = [
    "CHECKPOINT_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointError",
    "LoadedModels",
    "checkpoint_config",
    "load_checkpoint",
    "models_from_checkpoint",
    "save_checkpoint",
]

FORMAT = "hmh-checkpoint"
CHECKPOINT_FILE = "checkpoint.pt"  # the hmh checkpoint inside a folder checkpoint (Ray Train's)
FORMAT_VERSION = 1
STAGES = ("generation", "selection")
log = logging.getLogger(__name__)

REQUIRED_KEYS = ("format", "format_version", "model", "epoch", "stage", "config", "metrics", "versions")
ACCEPTED = ("hmh reads only its own checkpoints (written by hmh train or the tune drivers: tensors and plain Python "
            "values) and never unpickles anything else")
# What torch's weights-only unpickler names in its refusal (the rest of its message is advice hmh does not give).
_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")
_OPCODE = re.compile(r"Unsupported operand (\d+)")


class CheckpointError(HmhError):
    """A checkpoint file that is missing, unreadable, corrupt, or not an hmh checkpoint (the message names it)."""


def _plain_metrics(metrics: dict[str, Any] | None) -> dict[str, float]:
    """Metrics as ``{str: float}`` (numpy/tensor scalars converted), so ``weights_only`` loading accepts them."""
    return {str(k): float(v) for k, v in (metrics or {}).items()}


def save_checkpoint(
    path: str | os.PathLike,
    *,
    generator: torch.nn.Module,
    config: Config,
    stage: str,
    epoch: int,
    selector: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint to ``path`` atomically and return the path.

    ``generator``/``selector`` may be wrapped (DDP, ``torch.compile``); their plain state dicts are stored.
    ``epoch``: epochs completed in ``stage``. ``metrics``: scalar values (converted to float).
    """
    if stage not in STAGES:
        raise ValueError(f"stage: expected one of {STAGES}, got {stage!r}")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": {
            "generator": unwrap(generator).state_dict(),
            "selector": None if selector is None else unwrap(selector).state_dict(),
        },
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "scaler": None if scaler is None else scaler.state_dict(),
        "epoch": int(epoch),
        "stage": stage,
        "config": to_dict(config),
        "metrics": _plain_metrics(metrics),
        "versions": {"hmh": str(hmh.__version__), "torch": str(torch.__version__)},
    }
    path = Path(path)
    with atomic.atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint (a file, or a folder holding :data:`CHECKPOINT_FILE`) with
    ``torch.load(weights_only=True)``.

    Raises :class:`CheckpointError` naming ``path`` when it is missing, not a readable torch file, or lacks a
    key of the format above.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / CHECKPOINT_FILE).is_file():
            raise CheckpointError(f"{path}: a folder without {CHECKPOINT_FILE}, not a checkpoint")
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses
            warnings.simplefilter("ignore", UserWarning)
            data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path}: refused, not an hmh checkpoint: {_refusal(str(err))}; {ACCEPTED}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a readable hmh checkpoint (corrupt or truncated?): {first}") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an hmh checkpoint (no 'format': {FORMAT!r} entry)")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format_version {data.get('format_version')!r} is not supported "
            f"(this hmh {hmh.__version__} reads version {FORMAT_VERSION})"
        )
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks key(s) {', '.join(missing)}")
    if not isinstance(data["model"], dict) or not isinstance(data["model"].get("generator"), dict):
        raise CheckpointError(f"{path}: checkpoint key 'model.generator' is missing or not a state dict")
    if data["stage"] not in STAGES:
        raise CheckpointError(f"{path}: checkpoint key 'stage' is {data['stage']!r}, expected one of {STAGES}")
    return data


def _refusal(message: str) -> str:
    """What torch's weights-only load refused in a file, without its advice to load the file unsafely."""
    if found := _GLOBAL.search(message):
        return f"it asks to import the Python object {found.group(1)} (loading it could run code)"
    if found := _OPCODE.search(message):
        return f"it is not a torch file of tensors and plain values (unsupported pickle opcode {found.group(1)})"
    return "it holds pickled data other than tensors and plain Python values"


def checkpoint_config(data: dict[str, Any], path: str | os.PathLike = "checkpoint") -> Config:
    """The :class:`Config` stored in a loaded checkpoint (validated; errors name ``path``)."""
    try:
        return from_dict(data["config"], f"{path} (key 'config')")
    except ConfigError as err:
        raise CheckpointError(str(err)) from err


@dataclass
class LoadedModels:
    """Models rebuilt from a checkpoint, in eval mode on the requested device.

    ``selector`` is None for a generation-stage checkpoint. ``metrics`` are the ones stored with it."""

    generator: torch.nn.Module
    selector: torch.nn.Module | None
    config: Config
    stage: str
    epoch: int
    metrics: dict[str, float]


def _load_state(module: torch.nn.Module, state: dict, path: Path, key: str) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: '{key}' does not match the model its config builds: {err}") from err


def models_from_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModels:
    """Rebuild the generator (and the selector, when the checkpoint has one) from ``path`` alone.

    The generator's state dict includes the MANO layer's buffers, so when ``model.mano_path`` of the stored
    config is not present here, the models are built with the synthetic hand and the stored MANO replaces it."""
    from hmh.mano import MANOFileError

    path = Path(path)
    data = load_checkpoint(path, map_location="cpu")
    config = checkpoint_config(data, path)
    try:
        generator, selector = build_models(config, pretrained=False)
    except MANOFileError as err:
        # The generator's state dict holds every MANO buffer, so any MANO-shaped model is overwritten exactly.
        log.warning("%s; rebuilding with the synthetic hand and restoring the MANO model stored in %s", err, path)
        generator, selector = build_models(replace(config, model=replace(config.model, mano_path="")),
                                           pretrained=False)
    _load_state(unwrap(generator), data["model"]["generator"], path, "model.generator")
    if data["model"].get("selector") is None:
        selector = None
    else:
        _load_state(unwrap(selector), data["model"]["selector"], path, "model.selector")
        selector = selector.to(device).eval()
    metrics = dict(data["metrics"])
    return LoadedModels(generator.to(device).eval(), selector, config, data["stage"], int(data["epoch"]), metrics)
