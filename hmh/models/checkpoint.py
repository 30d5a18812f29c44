"""Self-describing training checkpoints: a checkpoint alone rebuilds the models.

A checkpoint is a plain dict of tensors and Python built-ins, so ``torch.load(path, weights_only=True)`` reads it
without running any pickled code::

    {"format": "hmh-checkpoint", "format_version": 1,
     "model": {"generator": state_dict, "selector": state_dict | None},
     "optimizer": state_dict | None, "scheduler": state_dict | None,
     "epoch": int (epochs completed in this stage), "stage": "generation" | "selection",
     "config": hmh.config.to_dict(cfg), "metrics": {name: float}, "versions": {"hmh": str, "torch": str},
     "checksum": "sha256:<hex>"}

``checksum`` is the SHA-256 of everything else in the dict (:func:`state_checksum`), checked on every load: torch
does not check its zip's CRCs, so without it a file with overwritten bytes would load silently with wrong weights.
A mismatch is refused naming the file. A checkpoint written before checksums existed loads with a warning.

Files are written atomically (:mod:`hmh.files.atomic`): a killed run never leaves half a checkpoint. A folder holding
``checkpoint.pt`` (a Ray Train checkpoint of the ``tune`` drivers) is read as that file. :func:`export_checkpoint`
writes the slim copy for inference (``hmh export``): weights, config and metrics, no optimizer state.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

import hmh
from hmh.config import Config, ConfigError, from_dict, to_dict
from hmh.errors import HmhError
from hmh.files import atomic
from hmh.models.build import build_models, unwrap

__all__ = [
    "CHECKPOINT_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointError",
    "LoadedModels",
    "checkpoint_config",
    "export_checkpoint",
    "load_checkpoint",
    "models_from_checkpoint",
    "save_checkpoint",
    "state_checksum",
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


def _digest(node: Any, sha: Any) -> None:
    """Feed ``node`` (nested dicts, lists, tensors, plain values) into ``sha`` in a canonical order."""
    if isinstance(node, torch.Tensor):
        flat = node.detach().reshape(-1).contiguous().cpu()
        sha.update(f"T{flat.dtype}{tuple(node.shape)}".encode())
        sha.update(flat.view(torch.uint8).numpy() if flat.numel() else b"")
    elif isinstance(node, dict):
        sha.update(f"D{len(node)}".encode())
        for key in sorted(node, key=repr):
            sha.update(repr(key).encode())
            _digest(node[key], sha)
    elif isinstance(node, (list, tuple)):
        sha.update(f"L{len(node)}".encode())
        for item in node:
            _digest(item, sha)
    else:
        sha.update(f"V{node!r};".encode())


def state_checksum(data: dict[str, Any]) -> str:
    """``"sha256:<hex>"`` of a checkpoint dict without its ``checksum`` entry: every tensor's dtype, shape and
    bytes, and every other value, in key order (the same on any device and after a save/load round trip)."""
    sha = hashlib.sha256()
    _digest({k: v for k, v in data.items() if k != "checksum"}, sha)
    return f"sha256:{sha.hexdigest()}"


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
    payload["checksum"] = state_checksum(payload)
    return _write(Path(path), payload)


def _write(path: Path, payload: dict[str, Any]) -> Path:
    """``torch.save`` atomically through a Python file, so a full disk is an OSError naming ``path``."""
    try:
        with atomic.atomic_path(path) as tmp, open(tmp, "wb") as handle:
            torch.save(payload, handle)
    except (OSError, RuntimeError) as err:  # torch's zip writer turns a failed write into a RuntimeError
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise OSError(cause.errno, cause.strerror or str(cause), str(path)) from None
    return path


def export_checkpoint(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Write ``source``'s weights, config, stage, epoch and metrics to ``target`` without its optimizer,
    scheduler and scaler state (a third of the size with AdamW): for ``hmh predict`` and ``hmh evaluate``, not
    for resuming training. Refuses ``target`` = ``source``."""
    data = load_checkpoint(source)
    if Path(target).resolve() == Path(source).resolve():
        raise CheckpointError(f"{target}: the slim copy cannot replace the checkpoint it is made from")
    slim = {k: v for k, v in data.items() if k != "checksum"} | {"optimizer": None, "scheduler": None, "scaler": None}
    slim["checksum"] = state_checksum(slim)
    return _write(Path(target), slim)


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
    except Exception as err:  # noqa: BLE001  arbitrary bytes fail inside torch's unpickler in any way (KeyError...)
        first = f"{type(err).__name__}: {str(err).strip().splitlines()[0]}" if str(err).strip() else type(err).__name__
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
    _verify(data, path)
    return data


def _verify(data: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint whose state differs from its stored checksum; warn for one without a checksum."""
    stored = data.get("checksum")
    if stored is None:
        log.warning("%s: no checksum (written by an hmh without them): loaded without an integrity check; "
                    "hmh export writes a copy with one", path)
    elif stored != state_checksum(data):
        raise CheckpointError(f"{path}: corrupt: its contents do not match the checksum stored when it was written "
                              "(bytes changed on disk or in transfer); use another copy or retrain")


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


def check_same_generator(theirs: Config, ours: Config, key: str) -> None:
    """Refuse a checkpoint's generator trained under a config (``theirs``) whose ``model.*`` or
    ``loss.mode_hypothesis`` (what its hypothesis 0 is) differs from this config's (``ours``), save
    ``model.pretrained`` (only the initialisation): :class:`ConfigError`, one line that starts with ``key`` (the
    config key and the file, e.g. ``train.generator='run/generation_best.pt'``) and lists each differing key."""
    differ = [f"model.{k}: {v!r} there, {getattr(ours.model, k)!r} here" for k, v in vars(theirs.model).items()
              if k != "pretrained" and getattr(ours.model, k) != v]
    if theirs.loss.mode_hypothesis != ours.loss.mode_hypothesis:
        differ.append(f"loss.mode_hypothesis: {theirs.loss.mode_hypothesis!r} there, "
                      f"{ours.loss.mode_hypothesis!r} here")
    if differ:
        raise ConfigError(f"{key}: its generator differs from this config's: " + "; ".join(differ))


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
    """Load ``state`` into ``module``, or raise one line saying how many entries are missing, unexpected or of
    another shape, with the first of each."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(getattr(state[k], "shape", ())) != tuple(own[k].shape)]
    problems = [f"{len(names)} {what} (first: {names[0]})" for names, what in
                ((missing, "missing"), (unexpected, "unexpected"), (shapes, "of another shape")) if names]
    if problems:
        raise CheckpointError(f"{path}: '{key}' does not match the model its config builds: {'; '.join(problems)}")
    module.load_state_dict(state)


def models_from_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModels:
    """Rebuild the generator (and the selector, when the checkpoint has one) from ``path`` alone.

    The generator's state dict includes the MANO layer's buffers, so when ``model.mano_path`` of the stored
    config is not present here, the models are built with the synthetic hand and the stored MANO replaces it."""
    from hmh.mano.model import MANOFileError

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
