"""Where the generator's cost in K comes from: floating-point operations per part for K in {1, 4, 16, 32}.

    python benchmarks/k_flops.py [--presets cpu paper] [--ks 1 4 16 32] [--batch 8]
                                 [--out results/benchmarks/k_flops.md]

Counts the FLOPs of one eval-mode generator forward (random images, ``torch.utils.flop_counter.FlopCounterMode``,
which counts matrix products, attention and convolutions: the parts that scale; PyTorch's fused encoder-layer fast
path is turned off while counting, as the counter cannot see into it) per top-level part: backbone, Unfolder,
Multi-Hypothesis Transformer, Regressor and MANO. Machine-independent, unlike latency: the ratio of total FLOPs
at K to K=1 is what a compute-bound device pays at the least, and the parts' shares say which K-dependent part a
speed-up would have to remove. Prints the table and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from hmh.config import load_config
from hmh.files import atomic
from hmh.models.build import build_models

PARTS = ("backbone", "unfolder", "mht", "regressor", "mano")


def part_flops(preset: str, k: int, batch: int) -> dict[str, int]:
    """FLOPs of one generator forward at ``k`` hypotheses by part, plus ``total``."""
    base = load_config(preset)
    cfg = load_config(preset, [f"model.num_hypotheses={k}", f"selection.top_n={min(base.selection.top_n, k)}"])
    torch.manual_seed(0)
    generator, _ = build_models(cfg, pretrained=False)
    image = torch.rand(batch, 3, cfg.model.image_size, cfg.model.image_size)
    counter = FlopCounterMode(display=False)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused encoder-layer kernel is invisible to the counter
    try:
        with torch.no_grad(), counter:
            generator.eval()(image)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    counts = counter.get_flop_counts()
    flops = {part: sum(counts.get(f"Generator.{part}", {}).values()) for part in PARTS}
    flops["total"] = sum(counts["Global"].values())
    return flops


def table(preset: str, ks: list[int], batch: int) -> str:
    rows = {k: part_flops(preset, k, batch) for k in ks}
    base = rows[ks[0]]["total"]
    lines = [f"### preset `{preset}`, batch {batch} (GFLOPs; share of the total)", "",
             "| K | " + " | ".join(PARTS) + " | total | total vs K=1 |",
             "|---:|" + "---:|" * (len(PARTS) + 2)]
    for k, flops in rows.items():
        cells = [f"{flops[p] / 1e9:.1f} ({100 * flops[p] / flops['total']:.0f}%)" for p in PARTS]
        lines.append(f"| {k} | " + " | ".join(cells) + f" | {flops['total'] / 1e9:.1f} | "
                     f"{flops['total'] / base:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["cpu", "paper"])
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 4, 16, 32])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/k_flops.md"))
    args = parser.parse_args(argv)
    if args.ks[0] != 1:
        parser.error("--ks must start with 1 (ratios are to K=1)")
    command = " ".join(["python benchmarks/k_flops.py", *(argv if argv is not None else sys.argv[1:])])
    text = (f"# Generator FLOPs by part and K\n\nCommand: `{command}` (torch.utils.flop_counter: matrix products "
            "and convolutions)\n\n" + "\n\n".join(table(p, args.ks, args.batch) for p in args.presets) + "\n")
    atomic.write_text(args.out, text)
    print(text)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
