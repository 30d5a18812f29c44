"""The inference cost of a configuration: milliseconds per image of its generator + selector, the second objective
of a two-objective search (:data:`hmh.results.tables.COST_OBJECTIVE`).

What is timed is what ``hmh predict`` runs per batch: the generator's forward, the selector's rewards and the top-n
aggregation (:func:`hmh.models.selector.final_prediction`), in eval mode without gradients, in ``train.precision``
and memory format, on the models' device, at each batch of :data:`hmh.results.tables.COST_BATCHES` (1 and 8). Each batch
size gets ``warmup`` untimed passes, then ``repeats`` timed ones (CUDA synchronised before and after each); the
median pass over its batch size is the cost. The images are fixed pseudo-random pixels (the cost does not depend on
them), drawn from a private generator so the caller's random state is untouched.
"""

from __future__ import annotations

import statistics
import time

import torch

from hmh.config import Config
from hmh.models.selector import final_prediction
from hmh.results.tables import COST_BATCHES, COST_KEYS
from hmh.train.loop import infer

__all__ = ["cost_metrics", "measure_ms_per_image"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_ms_per_image(generator: torch.nn.Module, selector: torch.nn.Module, cfg: Config, device: torch.device,
                         batch: int, *, warmup: int = 2, repeats: int = 5) -> float:
    """Median milliseconds per image of one ``batch``-image pass (module docstring) of the plain (unwrapped)
    models, moved to ``device`` (in place, as ``Module.to``). The models' train/eval modes are restored afterwards."""
    if batch < 1 or warmup < 0 or repeats < 1:
        raise ValueError(f"measure_ms_per_image: batch={batch}, warmup={warmup}, repeats={repeats}: expected batch "
                         ">= 1, warmup >= 0, repeats >= 1")
    modes = [(m, m.training) for m in (*generator.modules(), *selector.modules())]
    generator.to(device).eval()
    selector.to(device).eval()
    size = cfg.model.image_size
    pixels = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))  # (B, 3, S, S)
    images = {"image": pixels.to(device)}
    seconds = []
    try:
        with torch.no_grad():
            for i in range(warmup + repeats):
                _sync(device)
                start = time.perf_counter()
                out, reward = infer(generator, selector, images, cfg, device)  # reward (B, K)
                final_prediction(out, reward, cfg.selection.top_n)
                _sync(device)
                if i >= warmup:
                    seconds.append(time.perf_counter() - start)
    finally:
        for module, training in modes:
            module.train(training)
    return statistics.median(seconds) * 1000.0 / batch


def cost_metrics(generator: torch.nn.Module, selector: torch.nn.Module, cfg: Config,
                 device: torch.device) -> dict[str, float]:
    """``{"cost/ms_per_image_b1": ms, "cost/ms_per_image_b8": ms}`` (:data:`hmh.results.tables.COST_KEYS`) of the
    models, as a two-objective search reports them."""
    return {key: measure_ms_per_image(generator, selector, cfg, device, batch)
            for key, batch in zip(COST_KEYS, COST_BATCHES, strict=True)}
