"""How fast ``hmh data synth`` writes blurred images, and where a worker's time goes (goal: >= 150 images/s).

    .venv/bin/python benchmarks/bench_synth.py [--train 2000 --test 400 --size 128 --subframes 9]
                                               [--phase-images 320] [--rounds 1] [--reference REV]
                                               [--out results/benchmarks/synth.md]

- **End to end**: ``python -m hmh data synth --out TMP --train N --test M --size S --subframes F`` in a fresh
  process (the real path: worker pool, start-up, annotation files), images/s as the command prints it, with its
  CPU ms per image (this process and its workers), which other load on the machine inflates far less than time.
- **Per worker**: one process renders ``--phase-images`` images through ``hmh.data.synth_worker.render_chunk``
  (the function each pool worker runs, one torch thread and ``LP_NUM_THREADS=1`` as in the pool) after a
  warm-up chunk: images/s, and with a :class:`hmh.data.timing.PhaseTimer` the wall and CPU ms per image of each
  phase (posing: motion, sub-frame interpolation, placement, views, labels; skinning: MANO; rendering: normals,
  uploads, the draw; averaging: the sub-frame mean pass and the read back; background; encoding: compositing,
  noise, sRGB, JPEG; writing) and its share. Fixed costs: a worker's start-up (imports, MANO, GL context) and the
  annotation files per image.
- ``--reference REV``: the same end-to-end and per-worker runs with the code of git revision ``REV`` (its ``hmh/``
  exported to a temporary folder and put first on ``PYTHONPATH``), alternating with the working tree's round by
  round so that background load falls on both alike; medians over ``--rounds``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from hmh.files import atomic

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("posing", "skinning", "rendering", "averaging", "background", "encoding", "writing")


def export(rev: str, into: Path) -> Path:
    """``hmh/`` as of git revision ``rev``, extracted under ``into``; returns the folder to put on PYTHONPATH."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "hmh"], check=True, capture_output=True).stdout
    into.mkdir(parents=True, exist_ok=True)
    tar = into / "hmh.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as handle:
        handle.extractall(into, filter="data")
    return into


def end_to_end(code: Path, args: argparse.Namespace, scratch: Path) -> dict:
    """One ``hmh data synth`` run with the package under ``code``: images/s and CPU ms per image as it prints."""
    out = scratch / "dataset"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "hmh", "data", "synth", "--out", str(out), "--train", str(args.train),
               "--test", str(args.test), "--size", str(args.size), "--subframes", str(args.subframes),
               "--seed", str(args.seed), "--no-progress"]
    done = subprocess.run(command, cwd=scratch, env={**os.environ, "PYTHONPATH": str(code)}, check=True,
                          capture_output=True, text=True)
    shutil.rmtree(out, ignore_errors=True)
    found = re.search(r"\(([\d.]+) images/s; ([\d.]+) ms CPU per image\)", done.stdout)
    if found is None:
        raise RuntimeError(f"unexpected output of {' '.join(command)}: {done.stdout!r}")
    return {"images_per_s": float(found[1]), "cpu_ms": float(found[2])}


def per_worker(code: Path, args: argparse.Namespace, scratch: Path) -> dict:
    """:func:`worker_run` in a fresh process with the package under ``code``."""
    command = [sys.executable, __file__, "--worker-run", "--phase-images", str(args.phase_images),
               "--size", str(args.size), "--subframes", str(args.subframes), "--seed", str(args.seed),
               "--scratch", str(scratch / "worker")]
    env = {**os.environ, "PYTHONPATH": str(code), "LP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=scratch, env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def worker_run(args: argparse.Namespace) -> dict:
    """What one pool worker does, in this process: start-up, then ``--phase-images`` images after a warm-up."""
    start = time.perf_counter()
    import torch

    from hmh.data import synth_worker
    from hmh.data.synthetic import SynthArgs, _tasks, _write_annotations

    synth_worker.worker_init()
    synth_worker._models(args.size, args.subframes)
    startup = time.perf_counter() - start
    try:
        from hmh.data.timing import PhaseTimer

        timer = PhaseTimer()
    except ImportError:  # a reference revision without phase timers
        timer = None
    out = Path(args.scratch)
    shutil.rmtree(out, ignore_errors=True)
    tasks = _tasks(out, SynthArgs(train=args.phase_images + 16, test=0, size=args.size, subframes=args.subframes,
                                  seed=args.seed))
    synth_worker.render_chunk(tasks[0])  # warm-up: 16 images
    records = []
    wall, cpu = time.perf_counter(), time.process_time()
    for task in tasks[1:]:
        records += synth_worker.render_chunk(task, timer) if timer else synth_worker.render_chunk(task)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    images = sum(len(record.cameras) for record in records)
    annotations = time.perf_counter()
    _write_annotations(out, "train", records, SynthArgs(images, 0, args.size, args.subframes, args.seed))
    annotations = time.perf_counter() - annotations
    shutil.rmtree(out, ignore_errors=True)
    return {
        "images": images, "images_per_s": images / wall, "cpu_ms": 1000 * cpu / images, "startup_s": startup,
        "annotations_ms": 1000 * annotations / images, "torch_threads": torch.get_num_threads(),
        "phases": {name: {"wall_ms": 1000 * timer.wall[name] / images, "cpu_ms": 1000 * timer.cpu[name] / images}
                   for name in PHASES if name in timer.wall} if timer else None,
    }


def report(args: argparse.Namespace, results: dict[str, dict[str, list[dict]]]) -> str:
    median = lambda runs, key: statistics.median(run[key] for run in runs)  # noqa: E731
    command = (f"`python benchmarks/bench_synth.py --train {args.train} --test {args.test} --size {args.size} "
               f"--subframes {args.subframes} --phase-images {args.phase_images} --rounds {args.rounds}"
               + (f" --reference {args.reference}`" if args.reference else "`"))
    lines = [
        f"{command} ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end)",
        "",
        "| code | end to end images/s | end to end CPU ms/image | per worker images/s | per worker CPU ms/image "
        "| worker start-up s | annotations ms/image |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, runs in results.items():
        e2e, worker = runs["end_to_end"], runs["worker"]
        lines.append(f"| {label} | {median(e2e, 'images_per_s'):.1f} | {median(e2e, 'cpu_ms'):.2f} "
                     f"| {median(worker, 'images_per_s'):.1f} | {median(worker, 'cpu_ms'):.2f} "
                     f"| {median(worker, 'startup_s'):.2f} | {median(worker, 'annotations_ms'):.2f} |")
    phases = [run["phases"] for run in results["working tree"]["worker"]]
    cpu = {name: statistics.median(p[name]["cpu_ms"] for p in phases) for name in phases[0]}
    wall = {name: statistics.median(p[name]["wall_ms"] for p in phases) for name in phases[0]}
    total = sum(cpu.values())
    lines += ["", f"Per worker, working tree ({args.size} px, {args.subframes} sub-frames):", "",
              "| phase | wall ms/image | CPU ms/image | share of CPU |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {wall[name]:.3f} | {cpu[name]:.3f} | {100 * cpu[name] / total:.1f}% |" for name in cpu]
    lines.append(f"| total | {sum(wall.values()):.3f} | {total:.3f} | 100% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--subframes", type=int, default=9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phase-images", type=int, default=320, help="images of the per-worker measurement")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--reference", metavar="REV", help="also measure the code of this git revision")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/synth.md"))
    parser.add_argument("--worker-run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker_run:
        print(json.dumps(worker_run(args)))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench_synth.") as tmp:
        scratch = Path(tmp)
        codes = {"working tree": ROOT}
        if args.reference:
            codes = {f"{args.reference} (reference)": export(args.reference, scratch / "reference"), **codes}
        results = {label: {"end_to_end": [], "worker": []} for label in codes}
        for round_ in range(args.rounds):
            for label, code in codes.items():
                results[label]["end_to_end"].append(end_to_end(code, args, scratch))
                results[label]["worker"].append(per_worker(code, args, scratch))
                e2e, worker = results[label]["end_to_end"][-1], results[label]["worker"][-1]
                print(f"round {round_ + 1}/{args.rounds} {label}: end to end {e2e['images_per_s']:.1f} images/s "
                      f"({e2e['cpu_ms']:.2f} ms CPU/image), per worker {worker['images_per_s']:.1f} images/s",
                      file=sys.stderr, flush=True)
    table = report(args, results)
    print(table)
    atomic.write_text(args.out, table + "\n")
    print(f"written: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
