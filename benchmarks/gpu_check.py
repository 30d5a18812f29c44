"""The GPU check behind ``scripts/gpu_check.sh``: one table of what hmh does on this machine's GPU.

    python benchmarks/gpu_check.py [--smoke]

Rows (each PASS with its figures, FAIL with the error, or SKIPPED with the reason; exit status 1 if any FAILED):

1. ``train <stage> <precision>``: generation and selection training steps (forward + backward + optimizer) of the
   ``paper`` preset at batch 48 on ``cuda``, fp32 and bf16: images/s and peak GPU memory;
2. ``K-scaling``: the generator's eval forward at K = 32 vs K = 1, ``paper`` preset, batch 8 (goal <= 1.25x);
3. ``Ray Train use_gpu``: ``python -m tune.train`` of a tiny demo config with one worker holding one GPU (NCCL);
4. ``EGL rendering``: ``hmh data synth`` of 64 images at 128 px, images/s, and the GL renderer it ran on.

Without CUDA every GPU row is SKIPPED (saying so) and the exit status is 3, unless ``--smoke``: then the same code
runs on the CPU at a tiny size (the ``cpu`` preset, batch 2, K = 1 vs 4, the Ray row skipped) to test the script.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from bench_models import config_for, fake_batch  # benchmarks/ is this script's folder

from hmh.models.build import build_models
from hmh.train.loop import make_optimizer, seed_everything, train_one_epoch

REPO = Path(__file__).resolve().parents[1]
NO_GPU = 3  # exit status: nothing could be checked


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_rate(preset: str, stage: str, precision: str, batch: int, device: torch.device, steps: int) -> str:
    """Images/s of ``steps`` training steps (after one warm-up) and the peak GPU memory."""
    cfg = config_for(preset, 8 if preset == "paper" else 2)
    cfg = replace(cfg, train=replace(cfg.train, precision=precision))
    seed_everything(0)
    generator, selector = (m.to(device) for m in build_models(cfg, pretrained=False))
    model = generator if stage == "generation" else selector
    optimizer = make_optimizer(stage, model, cfg)
    data = {k: v.to(device) for k, v in fake_batch(cfg, batch).items()}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    use = selector if stage == "selection" else None
    train_one_epoch(stage, generator, use, [data], optimizer, None, cfg, device, 0)
    _sync(device)
    start = time.perf_counter()
    train_one_epoch(stage, generator, use, [data] * steps, optimizer, None, cfg, device, 0)
    _sync(device)
    rate = steps * batch / (time.perf_counter() - start)
    memory = f", peak {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if device.type == "cuda" else ""
    return f"{rate:.1f} images/s{memory}"


@torch.no_grad()
def k_ratio(preset: str, ks: tuple[int, int], batch: int, device: torch.device, repeats: int) -> str:
    """Median eval-forward time of the generator at ``ks[1]`` over ``ks[0]``, measured round-robin."""
    models = {}
    for k in ks:
        seed_everything(0)
        models[k] = build_models(config_for(preset, k), pretrained=False)[0].to(device).eval()
    size = config_for(preset, ks[0]).model.image_size
    image = torch.rand(batch, 3, size, size, device=device)
    times: dict[int, list[float]] = {k: [] for k in ks}
    for round_ in range(repeats + 1):
        for k in ks:
            _sync(device)
            start = time.perf_counter()
            models[k](image)
            _sync(device)
            if round_:
                times[k].append(time.perf_counter() - start)
    low, high = (1000 * statistics.median(times[k]) for k in ks)
    return f"K={ks[1]} {high:.1f} ms vs K={ks[0]} {low:.1f} ms: {high / low:.2f}x (goal <= 1.25x)"


def ray_train_gpu() -> str:
    """A tiny demo-config Train run with one worker on one GPU, as a user would start it."""
    with tempfile.TemporaryDirectory(prefix="hmh-gpu-check-") as tmp:
        command = [sys.executable, "-m", "tune.train", "--config", "tune/configs/demo.yaml",
                   "--set", f"search.storage_path={tmp}", "--set", "search.num_workers=1",
                   "--set", "search.gpus_per_worker=1", "--set", "search.cpus_per_worker=2",
                   "--set", "train.generation_epochs=1", "--set", "train.selection_epochs=1",
                   "--set", "data.max_train_samples=64", "--set", "data.max_eval_samples=32"]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise RuntimeError(f"exit {done.returncode}: {(done.stderr or done.stdout).strip()[-600:]}")
    return f"both stages on 1 GPU worker in {time.perf_counter() - start:.0f} s"


def egl_render(smoke: bool) -> str:
    """``hmh data synth`` of a few images, and the OpenGL renderer it used."""
    from hmh.data.render import create_context

    context = create_context()
    renderer = context.info.get("GL_RENDERER", "?")
    context.release()
    with tempfile.TemporaryDirectory(prefix="hmh-gpu-check-") as tmp:
        count = 8 if smoke else 64
        command = [sys.executable, "-m", "hmh", "data", "synth", "--out", f"{tmp}/data", "--train", str(count),
                   "--test", "2", "--size", "128", "--no-progress"]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise RuntimeError(f"exit {done.returncode}: {done.stderr.strip()[-600:]}")
    return f"{(count + 2) / (time.perf_counter() - start):.1f} images/s (with start-up) on {renderer}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="without CUDA: run the checks on the CPU, tiny")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda and not args.smoke:
        print("gpu_check: SKIPPED everything: no CUDA device here (torch.cuda.is_available() is False); "
              "run with --smoke to test this script on the CPU", flush=True)
        return NO_GPU
    preset, batch, steps, ks = ("paper", 48, 5, (1, 32)) if cuda else ("cpu", 2, 1, (1, 4))
    rows: list[tuple[str, Callable[[], str] | str]] = [
        (f"train {stage} {precision}", lambda s=stage, p=precision: train_rate(preset, s, p, batch, device, steps))
        for stage in ("generation", "selection") for precision in ("fp32", "bf16")
    ]
    rows.append(("K-scaling", lambda: k_ratio(preset, ks, 8 if cuda else 1, device, 5 if cuda else 1)))
    rows.append(("Ray Train use_gpu", ray_train_gpu if cuda else "SKIPPED: no CUDA device (--smoke on the CPU)"))
    rows.append(("EGL rendering", lambda: egl_render(not cuda)))
    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({os.cpu_count()} cores), smoke sizes"
    print(f"| check ({name}, preset {preset}, batch {batch}) | result |\n|---|---|", flush=True)
    failed = 0
    for label, check in rows:
        if isinstance(check, str):
            result = check
        else:
            try:
                result = "PASS: " + check()
            except Exception as err:  # every failure is reported in the table, then in the exit status
                failed += 1
                result = f"FAILED: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        print(f"| {label} | {result} |", flush=True)
    if failed:
        print(f"gpu_check: {failed} check(s) FAILED (see the table)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
