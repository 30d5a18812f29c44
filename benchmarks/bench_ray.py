"""Ray Train's steady-state training throughput against the plain hmh loop, on the same config, in one run.

    .venv/bin/python benchmarks/bench_ray.py [--config tune/configs/demo.yaml] [--set KEY=VALUE ...] [--epochs 4]

Both sides train the generation stage with ``hmh.train.loop.train_one_epoch`` on the same data, batch and model: the
plain loop in this process with as many torch threads as the Ray workers hold CPUs in total, Ray Train with
``search.num_workers`` workers (:func:`tune.worker.train_fn_per_worker`: ``prepare_model``,
``prepare_data_loader``, DDP when there is more than one worker). Throughput is the training loop's samples per
second as ``train_one_epoch`` measures it (Ray: rank 0's rate times the number of workers, whose shards run in
lockstep); the first epoch of each run is warm-up, the median of the others counts. The plain loop runs before
and after Ray (both runs count), so a change in the machine's background load does not favour either side.
Prints both and the ratio (goal: >= 0.9). Defaults to one worker with all of this machine's CPUs less the
driver's share.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile

import torch

from hmh.config import Config, load_config
from hmh.models.build import build_models
from hmh.train.loop import make_optimizer, make_scheduler, resolve_device, seed_everything, train_one_epoch
from hmh.train.runner import build_datasets, make_loader
from tune.resources import DRIVER_CPUS, init_ray, scaling_config, worker_runtime_env
from tune.train import prepare_config
from tune.worker import StageSpec, train_fn_per_worker


def plain_rates(cfg: Config, epochs: int, threads: int) -> list[float]:
    """Samples/s of each generation epoch of the plain loop on this process."""
    torch.set_num_threads(threads)
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    loader = make_loader(build_datasets(cfg, cfg.data.root, ("train",))["train"], cfg, train=True,
                         device=device, seed=cfg.train.seed)
    generator, _ = build_models(cfg)
    generator = generator.to(device)
    optimizer = make_optimizer("generation", generator, cfg)
    scheduler = make_scheduler("generation", optimizer, cfg, len(loader))
    return [train_one_epoch("generation", generator, None, loader, optimizer, scheduler, cfg, device, epoch)
            ["samples_per_s"] for epoch in range(epochs)]


def ray_rates(cfg: Config, epochs: int) -> list[float]:
    """Samples/s (all workers) of each generation epoch of a Ray Train run of the same config."""
    import ray.train
    from ray.train.torch import TorchTrainer

    spec = StageSpec(config=dataclasses.asdict(cfg), stage="generation")
    with tempfile.TemporaryDirectory(prefix="hmh-bench-ray-") as storage:
        trainer = TorchTrainer(
            train_fn_per_worker, train_loop_config=spec.to_dict(), scaling_config=scaling_config(cfg.search),
            run_config=ray.train.RunConfig(name="bench", storage_path=storage,
                                           worker_runtime_env=worker_runtime_env(cfg.search),
                                           failure_config=ray.train.FailureConfig(controller_failure_limit=1)),
        )
        result = trainer.fit()
        reports = sorted((metrics for _, metrics in result.best_checkpoints), key=lambda m: m["epoch"])
    if len(reports) != epochs:
        raise RuntimeError(f"expected {epochs} reports from the Ray Train run, got {len(reports)}")
    return [m["train/samples_per_s"] * cfg.search.num_workers for m in reports]


def steady(*runs: list[float]) -> float:
    """Median samples/s over the runs' epochs after each run's first."""
    return statistics.median(rate for rates in runs for rate in rates[1:])


def _rates(rates: list[float]) -> str:
    return f"{steady(rates):.2f} samples/s (per epoch: {', '.join(f'{r:.2f}' for r in rates)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_ray.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="tune/configs/demo.yaml", help="experiment YAML or preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per side; the first is warm-up (>= 2)")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is warm-up)")
    cpus = os.cpu_count() or 1
    defaults = ["search.num_workers=1", f"search.cpus_per_worker={cpus - DRIVER_CPUS:.2f}",
                "data.max_train_samples=0", "data.augment=false"]
    cfg = load_config(args.config, defaults + args.overrides)
    cfg = prepare_config(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, generation_epochs=args.epochs)),
                         progress=False)
    threads = max(1, round(cfg.search.num_workers * cfg.search.cpus_per_worker))
    print(f"config {args.config} {' '.join(args.overrides)}: generation stage, batch {cfg.train.batch_size}, "
          f"{args.epochs} epochs (first = warm-up); Ray: {cfg.search.num_workers} worker(s) x "
          f"{cfg.search.cpus_per_worker:g} CPU; plain loop: {threads} thread(s)", flush=True)
    before = plain_rates(cfg, args.epochs, threads)
    print(f"plain hmh loop (before): {_rates(before)}", flush=True)
    init_ray(None)
    distributed = ray_rates(cfg, args.epochs)
    print(f"Ray Train:               {_rates(distributed)}", flush=True)
    after = plain_rates(cfg, args.epochs, threads)
    print(f"plain hmh loop (after):  {_rates(after)}")
    print(f"steady state: plain loop {steady(before, after):.2f} samples/s, Ray Train {steady(distributed):.2f} "
          "samples/s")
    ratio = steady(distributed) / steady(before, after)
    print(f"ratio Ray Train / plain loop: {ratio:.3f} (goal >= 0.9)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
