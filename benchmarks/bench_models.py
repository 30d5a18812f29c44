"""K-scaling benchmark of the models: forward latency and parameter count for K in {1, 4, 16, 32}, as ratios to
K = 1 measured in the same run, at the ``cpu`` and ``paper`` presets; plus training samples/s (cpu preset).

    python benchmarks/bench_models.py [--out results/benchmarks/models.md] [--presets cpu paper] [--ks 1 4 16 32]

Latency: eval mode, ``torch.no_grad``, random images, batch 1 and 8, ``torch.set_num_threads`` = the machine's
cores. The K values are measured round-robin (one pass of every K per round, after ``--warmup`` rounds), so
load from other processes falls on every K alike; the table gives the median over ``--repeats`` rounds
(``--paper-repeats`` for the slow paper preset) and the ratio to K = 1. Generator = backbone + Unfolder + MHT +
Regressor + MANO; selector = its forward on the generator's output. Training: one optimizer step of
``hmh.train.loop.train_one_epoch`` (generation stage, preset batch size) on a fixed random batch with synthetic
targets, round-robin over K like the latency, so the data loader is not part of the number.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from hmh.config import Config, load_config
from hmh.files import atomic
from hmh.models.build import build_models
from hmh.train.loop import make_optimizer, train_one_epoch

CPU = torch.device("cpu")


def config_for(preset: str, k: int) -> Config:
    base = load_config(preset)
    return load_config(preset, [f"model.num_hypotheses={k}", f"selection.top_n={min(base.selection.top_n, k)}"])


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def load() -> str:
    return open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "?"


def fake_batch(cfg: Config, batch: int) -> dict[str, torch.Tensor]:
    """A sample-dict batch with plausible random targets (shapes as hmh.data.blurhand produces)."""
    s, t = cfg.model.image_size, cfg.model.num_frames
    g = torch.Generator().manual_seed(0)
    joints = 0.02 * torch.randn(batch, t, 21, 3, generator=g)
    joints[:, :, 0] = 0.0
    return {
        "image": torch.rand(batch, 3, s, s, generator=g),
        "joints_3d": joints,
        "joints_2d": s * torch.rand(batch, t, 21, 2, generator=g),
        "joint_valid": torch.ones(batch, t, 21),
        "mano_pose": 0.2 * torch.randn(batch, t, 48, generator=g),
        "mano_shape": 0.5 * torch.randn(batch, t, 10, generator=g),
        "mano_valid": torch.ones(batch, t),
        "mesh": 0.03 * torch.randn(batch, 778, 3, generator=g),
        "mesh_valid": torch.ones(batch),
        "cam_focal": torch.full((batch, 2), 5.0 * s),
        "cam_princpt": torch.full((batch, 2), s / 2),
        "is_left": torch.zeros(batch),
        "index": torch.arange(batch),
    }


@torch.no_grad()
def bench_forward(preset: str, ks: list[int], batches: list[int], warmup: int, repeats: int) -> list[dict]:
    """Round-robin over K: each round times one generator and one selector pass per K and batch size."""
    models, rows = {}, {}
    for k in ks:
        cfg = config_for(preset, k)
        torch.manual_seed(0)
        generator, selector = build_models(cfg, pretrained=False)
        models[k] = (generator.eval(), selector.eval(), cfg.model.image_size)
        rows[k] = {"K": k, "gen_params": count(generator), "sel_params": count(selector)}
    times: dict[tuple, list[float]] = {}
    for round_ in range(warmup + repeats):
        for b in batches:
            for k in ks:
                generator, selector, size = models[k]
                image = torch.rand(b, 3, size, size)
                gen_s = timed(lambda g=generator, x=image: g(x))
                out = generator(image)
                sel_s = timed(lambda s=selector, x=image, o=out: s(x, o))
                if round_ >= warmup:
                    times.setdefault((k, f"gen_ms_b{b}"), []).append(gen_s)
                    times.setdefault((k, f"sel_ms_b{b}"), []).append(sel_s)
        print(f"  {preset}: round {round_ + 1}/{warmup + repeats} done (load {load()})", flush=True)
    for (k, key), values in times.items():
        rows[k][key] = 1000 * statistics.median(values)
    return [rows[k] for k in ks]


def bench_training(preset: str, ks: list[int], warmup: int, steps: int) -> list[dict]:
    """Round-robin over K: each round times one generation-stage training step per K."""
    state = {}
    for k in ks:
        cfg = config_for(preset, k)
        torch.manual_seed(0)
        generator, _ = build_models(cfg, pretrained=False)
        state[k] = (cfg, generator, make_optimizer("generation", generator, cfg), fake_batch(cfg, cfg.train.batch_size))
    rates: dict[int, list[float]] = {k: [] for k in ks}
    for round_ in range(warmup + steps):
        for k in ks:
            cfg, generator, optimizer, batch = state[k]
            stats = train_one_epoch("generation", generator, None, [batch], optimizer, None, cfg, CPU, 0)
            if round_ >= warmup:
                rates[k].append(stats["samples_per_s"])
        print(f"  train {preset}: round {round_ + 1}/{warmup + steps} done (load {load()})", flush=True)
    return [{"K": k, "samples_per_s": statistics.median(rates[k]), "batch": state[k][0].train.batch_size}
            for k in ks]


def ratio(row: dict, base: dict, key: str, fmt: str = ".4g") -> str:
    return f"{row[key]:{fmt}} ({row[key] / base[key]:.2f}x)"


def forward_table(preset: str, rows: list[dict], batches: list[int]) -> str:
    cols = ["K", "generator params", "selector params"]
    for b in batches:
        cols += [f"generator ms, batch {b}", f"selector ms, batch {b}"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---:|" * len(cols)]
    base = rows[0]
    for row in rows:
        cells = [str(row["K"]), ratio(row, base, "gen_params", ","), ratio(row, base, "sel_params", ",")]
        for b in batches:
            cells += [ratio(row, base, f"gen_ms_b{b}", ".1f"), ratio(row, base, f"sel_ms_b{b}", ".1f")]
        lines.append("| " + " | ".join(cells) + " |")
    return f"### preset `{preset}`\n\n" + "\n".join(lines)


def training_table(preset: str, rows: list[dict]) -> str:
    lines = ["| K | training samples/s | vs K=1 |", "|---:|---:|---:|"]
    base = rows[0]["samples_per_s"]
    for row in rows:
        lines.append(f"| {row['K']} | {row['samples_per_s']:.2f} | {row['samples_per_s'] / base:.2f}x |")
    title = f"### training throughput, preset `{preset}` (generation stage, batch {rows[0]['batch']})"
    return title + "\n\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["cpu", "paper"])
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 4, 16, 32])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds")
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds (cpu preset)")
    parser.add_argument("--paper-repeats", type=int, default=3, help="timed rounds (paper preset)")
    parser.add_argument("--train-steps", type=int, default=5, help="timed training rounds (cpu preset)")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/models.md"))
    args = parser.parse_args(argv)
    if args.ks[0] != 1:
        parser.error("--ks must start with 1 (ratios are to K=1)")
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    start_load, start = load(), time.perf_counter()
    sections = []
    for preset in args.presets:
        repeats = args.paper_repeats if preset == "paper" else args.repeats
        print(f"forward latency, preset {preset}: {args.warmup} warm-up + {repeats} timed rounds", flush=True)
        rows = bench_forward(preset, args.ks, args.batches, args.warmup, repeats)
        sections.append(forward_table(preset, rows, args.batches)
                        + f"\n\nmedian of {repeats} timed rounds after {args.warmup} warm-up round(s).")
    train_rows = bench_training("cpu", args.ks, args.warmup, args.train_steps)
    sections.append(training_table("cpu", train_rows) + f"\n\nmedian of {args.train_steps} timed steps per K after "
                    f"{args.warmup} warm-up round(s), fixed random batch (no data loading).")
    minutes = (time.perf_counter() - start) / 60
    header = (
        "# Model K-scaling benchmark\n\n"
        f"Command: `{' '.join(['python benchmarks/bench_models.py', *(argv if argv is not None else sys.argv[1:])])}`"
        f" ({minutes:.0f} min)\n\n"
        f"Machine: {platform.machine()}, {threads} CPU threads (torch.set_num_threads({threads})), "
        f"torch {torch.__version__}, CPU only. 1-minute load average {start_load} at the start, {load()} at the "
        "end (other processes share this machine; K values are interleaved so they share that load).\n"
        "Each value is followed by its ratio to K=1 measured in the same run.\n"
    )
    text = header + "\n" + "\n\n".join(sections) + "\n"
    atomic.write_text(args.out, text)
    print(text)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
