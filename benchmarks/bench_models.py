"""K-scaling benchmark of the models: forward latency and parameter count for K in {1, 4, 16, 32}, as ratios to
K = 1 measured in the same run, at the ``cpu`` and ``paper`` presets; plus training samples/s (cpu preset).

    python benchmarks/bench_models.py [--out results/benchmarks/models.md] [--presets cpu paper] [--ks 1 4 16 32]

Latency: median of ``--repeats`` forward passes (``--paper-repeats`` for the paper preset, which is slow on a
CPU) after ``--warmup`` passes, eval mode, ``torch.no_grad``, random images, batch 1 and 8, with
``torch.set_num_threads`` = the machine's cores. Generator = backbone + Unfolder + MHT + Regressor + MANO;
selector = its forward on the generator's output. Training: ``hmh.loop.train_one_epoch`` (generation stage) on
a fixed random batch with synthetic targets, so the data loader is not part of the number.
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

from hmh import atomic
from hmh.config import Config, load_config
from hmh.loop import build_models, make_optimizer, train_one_epoch


def config_for(preset: str, k: int) -> Config:
    base = load_config(preset)
    return load_config(preset, [f"model.num_hypotheses={k}", f"selection.top_n={min(base.selection.top_n, k)}"])


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def median_ms(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


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


def bench_forward(preset: str, ks: list[int], batches: list[int], warmup: int, repeats: int) -> list[dict]:
    rows = []
    for k in ks:
        cfg = config_for(preset, k)
        torch.manual_seed(0)
        generator, selector = build_models(cfg)
        generator.eval()
        selector.eval()
        row = {"K": k, "gen_params": count(generator), "sel_params": count(selector)}
        for b in batches:
            image = torch.rand(b, 3, cfg.model.image_size, cfg.model.image_size)
            with torch.no_grad():
                row[f"gen_ms_b{b}"] = median_ms(lambda g=generator, x=image: g(x), warmup, repeats)
                out = generator(image)
                row[f"sel_ms_b{b}"] = median_ms(lambda s=selector, x=image, o=out: s(x, o), warmup, repeats)
        rows.append(row)
        print(f"  {preset} K={k}: " + ", ".join(f"{key} {value:.4g}" for key, value in row.items() if key != "K"),
              flush=True)
    return rows


def bench_training(preset: str, ks: list[int], steps: int) -> list[dict]:
    rows = []
    for k in ks:
        cfg = config_for(preset, k)
        torch.manual_seed(0)
        generator, _ = build_models(cfg)
        optimizer = make_optimizer("generation", generator, cfg)
        batch = fake_batch(cfg, cfg.train.batch_size)
        device = torch.device("cpu")
        train_one_epoch("generation", generator, None, [batch] * 2, optimizer, None, cfg, device, 0)  # warm-up
        stats = train_one_epoch("generation", generator, None, [batch] * steps, optimizer, None, cfg, device, 0)
        rows.append({"K": k, "samples_per_s": stats["samples_per_s"], "batch": cfg.train.batch_size})
        print(f"  train {preset} K={k}: {stats['samples_per_s']:.2f} samples/s (batch {cfg.train.batch_size})",
              flush=True)
    return rows


def ratio(row: dict, base: dict, key: str) -> str:
    return f"{row[key]:.4g} ({row[key] / base[key]:.2f}x)"


def forward_table(preset: str, rows: list[dict], batches: list[int]) -> str:
    cols = ["K", "generator params", "selector params"]
    for b in batches:
        cols += [f"generator ms, batch {b}", f"selector ms, batch {b}"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---:|" * len(cols)]
    base = rows[0]
    for row in rows:
        cells = [str(row["K"]), ratio(row, base, "gen_params"), ratio(row, base, "sel_params")]
        for b in batches:
            cells += [ratio(row, base, f"gen_ms_b{b}"), ratio(row, base, f"sel_ms_b{b}")]
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
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--paper-repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=8, help="timed training steps per K (cpu preset)")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/models.md"))
    args = parser.parse_args(argv)
    if args.ks[0] != 1:
        parser.error("--ks must start with 1 (ratios are to K=1)")
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    sections = []
    for preset in args.presets:
        repeats, warmup = (args.paper_repeats, 1) if preset == "paper" else (args.repeats, args.warmup)
        print(f"forward latency, preset {preset} (median of {repeats} after {warmup} warm-up)", flush=True)
        rows = bench_forward(preset, args.ks, args.batches, warmup, repeats)
        sections.append(forward_table(preset, rows, args.batches)
                        + f"\n\nmedian of {repeats} forward passes after {warmup} warm-up, eval mode, no_grad.")
    train_rows = bench_training("cpu", args.ks, args.train_steps)
    sections.append(training_table("cpu", train_rows) + f"\n\n{args.train_steps} timed steps after 2 warm-up steps "
                    "on a fixed random batch (no data loading).")
    header = (
        "# Model K-scaling benchmark\n\n"
        f"Command: `python benchmarks/bench_models.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n\n"
        f"Machine: {platform.processor() or platform.machine()}, {threads} CPU threads "
        f"(torch.set_num_threads({threads})), torch {torch.__version__}, CPU only.\n"
        "Values with their ratio to K=1 measured in the same run.\n"
    )
    text = header + "\n" + "\n\n".join(sections) + "\n"
    atomic.write_text(args.out, text)
    print(text)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
