"""Does the data loader keep up with training? Loader delivery against the training's consumption, in one run.

    .venv/bin/python benchmarks/bench_loader.py [--preset cpu] [--set KEY=VALUE ...] [--batches 24] [--rounds 3]
                                                [--workers 0 1 2] [--out results/benchmarks/loader.md]

- **Consumption**: samples/s of generation-stage training steps (``hmh.train.loop.train_one_epoch``: forward, losses,
  backward, optimizer) on batches already in memory, so no loading is in it: what the model eats.
- **Delivery**: samples/s at which the training loader (``hmh.train.runner.make_loader``: reading the JPEG, the crop
  and augmentation, collation) yields ``--batches`` batches of the same dataset, for each ``data.loader_workers``
  of ``--workers`` and for ``-1`` (sized from this machine's CPUs, ``hmh.train.runner.loader_workers``). Worker start-up
  is excluded (persistent workers deliver one batch before the clock starts), as in a training epoch after the
  first.

The measurements run round-robin (every side once per round) so that background load falls on all of them alike;
medians over ``--rounds`` are reported with the ratio delivery / consumption (>= 2x keeps training from waiting
for data). The loader alone has the CPUs to itself here; in training it shares them with the model, which the 2x
margin is for.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from itertools import islice
from pathlib import Path

import torch

from hmh.config import Config, load_config
from hmh.models.build import build_models
from hmh.train.loop import make_optimizer, make_scaler, seed_everything, train_one_epoch
from hmh.train.runner import build_datasets, data_root, loader_workers, make_loader

CPU = torch.device("cpu")


def consumption(cfg: Config, batches: list[dict]) -> float:
    """Training samples/s of the generation stage on ``batches`` (in memory), after one warm-up step."""
    seed_everything(cfg.train.seed)
    generator, _ = build_models(cfg)
    optimizer = make_optimizer("generation", generator, cfg)
    scaler = make_scaler(cfg, CPU)
    train_one_epoch("generation", generator, None, batches[:1], optimizer, None, cfg, CPU, 0, scaler=scaler)
    return train_one_epoch("generation", generator, None, batches, optimizer, None, cfg, CPU, 0,
                           scaler=scaler)["samples_per_s"]


def delivery(loader, batches: int) -> float:
    """Samples/s of ``batches`` batches of ``loader`` after its first (worker start-up)."""
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    samples = sum(len(batch["image"]) for batch in islice(iterator, batches))
    return samples / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--batches", type=int, default=24, help="batches per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="data.loader_workers to measure")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/loader.md"))
    args = parser.parse_args(argv)
    cfg = load_config(args.preset, args.set)
    datasets = build_datasets(cfg, data_root(cfg, progress=True), ("train",))
    auto = loader_workers(cfg, CPU) if cfg.data.loader_workers < 0 else cfg.data.loader_workers
    counts = sorted(set(args.workers) | {auto})
    loaders = {n: make_loader(datasets["train"], dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, loader_workers=n)), train=True, device=CPU, seed=cfg.train.seed) for n in counts}
    in_memory = list(islice(iter(loaders[0]), args.batches))
    rates: dict[str, list[float]] = {"consumption": [], **{f"delivery {n}": [] for n in counts}}
    for round_ in range(args.rounds):
        rates["consumption"].append(consumption(cfg, in_memory))
        for n in counts:
            rates[f"delivery {n}"].append(delivery(loaders[n], args.batches))
        print(f"round {round_ + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items()),
              file=sys.stderr, flush=True)
    eaten = statistics.median(rates["consumption"])
    lines = [
        f"`python benchmarks/bench_loader.py --preset {args.preset} --batches {args.batches} --rounds "
        f"{args.rounds}` ({os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, batch "
        f"{cfg.train.batch_size}, {cfg.model.image_size} px crops of {cfg.data.synthetic_size} px images, "
        f"augment {cfg.data.augment})",
        "",
        "| side | samples/s (median) | / consumption |",
        "|---|---:|---:|",
        f"| training consumption (generation steps, K={cfg.model.num_hypotheses}) | {eaten:.1f} | 1.00 |",
    ]
    for n in counts:
        rate = statistics.median(rates[f"delivery {n}"])
        label = f"loader, {n} worker process(es)" + (" (the -1 default here)" if n == auto else "")
        lines.append(f"| {label} | {rate:.1f} | {rate / eaten:.2f}x |")
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n")
    print(f"written: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
