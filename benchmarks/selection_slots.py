"""Does the selector look at the image, or has it learned which hypothesis *slots* are usually good?

    python benchmarks/selection_slots.py CHECKPOINT [--splits train val test] [--out results/benchmarks/selection.md]

Winner-takes-all training gives each of the K hypothesis slots its own habits, so some slots are in the true
top-n more often than others. A selector can beat a random top-n just by always picking those slots, without
looking at the image. For a selection-stage checkpoint (``hmh train``'s ``selection_*.pt``, or a Train
checkpoint's ``checkpoint.pt``), this prints per split:

- how often each slot is in the true top-n (labels as in the JRC loss: the n lowest order-invariant sequence
  MPJPEs) and how often the selector picks it;
- the selection precision of the selector, of a random top-n (n / K), and of the **slot prior**: always the n
  slots most often in the true top-n on the training split.

A selector whose precision does not rise above the slot prior's has not learned an image-conditioned ranking.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from hmh.eval.metrics import sequence_errors
from hmh.files import atomic
from hmh.models.checkpoint import LoadedModels, models_from_checkpoint
from hmh.models.selector import select_top_n
from hmh.train.losses import topn_labels
from hmh.train.runner import build_datasets, data_root, make_loader


@torch.no_grad()
def slot_labels_and_picks(models: LoadedModels, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(labels, picks)``, each ``(N, K)`` in {0, 1}: the true top-n and the selector's top-n of every valid
    sample of ``split`` (no augmentation)."""
    cfg = models.config
    dataset = build_datasets(cfg, data_root(cfg, progress=False), splits=(split,))[split]
    dataset.augment = False
    top_n = cfg.selection.top_n
    labels, picks = [], []
    for batch in make_loader(dataset, cfg, train=False, device=torch.device("cpu")):
        gen_out = models.generator(batch["image"])
        errors = sequence_errors(gen_out.joints.float(), batch["joints_3d"].float(), batch["joint_valid"])  # (B, K)
        valid = torch.isfinite(errors).all(dim=1)
        reward = models.selector(batch["image"], gen_out).reward  # (B, K)
        chosen = torch.zeros_like(reward).scatter_(1, select_top_n(reward, top_n), 1.0)
        labels.append(topn_labels(errors, top_n)[valid])
        picks.append(chosen[valid])
    return torch.cat(labels), torch.cat(picks)


def precision(labels: torch.Tensor, picks: torch.Tensor) -> float:
    """Share of the picked hypotheses that are in the true top-n; ``labels``, ``picks`` ``(N, K)`` in {0, 1}."""
    return float((labels * picks).sum() / picks.sum())


def report(checkpoint: Path, splits: list[str]) -> str:
    models = models_from_checkpoint(checkpoint)
    if models.selector is None:
        raise SystemExit(f"{checkpoint}: a generation-stage checkpoint has no selector; pass a selection checkpoint")
    k, top_n = models.config.model.num_hypotheses, models.config.selection.top_n
    results = {split: slot_labels_and_picks(models, split) for split in dict.fromkeys(["train", *splits])}
    prior_slots = torch.sort(results["train"][0].mean(dim=0), descending=True, stable=True).indices[:top_n]
    slots = " | ".join(f"slot {i}" for i in range(k))
    lines = [f"Checkpoint `{checkpoint}` (stage {models.stage}, epoch {models.epoch}), K={k}, top_n={top_n}; "
             f"slot prior = slots {sorted(prior_slots.tolist())} (most often in the training split's true top-n).",
             "", f"| split | images | rate | {slots} | precision | slot-prior precision | random precision |",
             "|---|---:|---|" + "---:|" * (k + 3)]
    for split in splits:
        labels, picks = results[split]
        prior = torch.zeros_like(labels)
        prior[:, prior_slots] = 1.0
        for name, rates in (("in true top-n", labels.mean(0)), ("selected", picks.mean(0))):
            cells = " | ".join(f"{r:.2f}" for r in rates.tolist())
            tail = (f"{precision(labels, picks):.3f} | {precision(labels, prior):.3f} | {top_n / k:.3f}"
                    if name == "selected" else " | | ")
            lines.append(f"| {split} | {len(labels)} | {name} | {cells} | {tail} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a selection-stage hmh checkpoint")
    parser.add_argument("--splits", nargs="+", default=["train", "val", "test"], choices=["train", "val", "test"])
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    table = report(args.checkpoint, args.splits)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(args.out, table + "\n")
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
