"""How much of the label oracle can a selector reach by reading the image? Oracles that see one part of the truth.

    python benchmarks/selection_ceiling.py CHECKPOINT [--split test] [--max-samples 0] [--unfolders CKPT ...]
        [--selectors CKPT ...] [--out FILE]

A single image shows where each joint lies across the camera's view far better than how far it is from the
camera. For a selection-stage checkpoint this ranks the generator's K hypotheses of every image of ``--split``
(no augmentation) four ways and aggregates each ranking's top-n as the method does:

- **the selector**: its reward; with ``--selectors`` (other selection checkpoints on the same generator), each of
  theirs and the mean of them all (whether selectors trained apart make different mistakes, which averaging cancels);
- **2D evidence**: each hypothesis' projected 2D joints against the selector's own Unfolder joints, and against the
  ground truth's 2D joints (a perfect Unfolder), each compared as they are and by 2D shape alone
  (``selection.reprojection_align`` ``none`` and ``similarity``; ranked as ``selection.rule: reprojection`` ranks);
  and by shape against the ground truth's 2D joints plus random error as large as the Unfolder's (an Unfolder as
  far off, whose error does not favour any hypothesis), and against the Unfolder joints of the generators of
  ``--unfolders`` (other checkpoints trained on the same data: independently trained 2D evidence);
- **camera-plane oracle**: each hypothesis' sequence MPJPE in the camera's x and y alone (ground truth): what a
  selector that read the image perfectly could know, up to perspective;
- **depth oracle**: the same error along the camera axis z alone;
- **label oracle**: the 3D sequence MPJPE, the JRC labels.

Per ranking: the final (current-frame MPJPE of its top-n, mm), the selection gain ``(random - final) / (random -
label oracle)``, the precision against the labels' top-n, and its top-1 hypothesis' mean error split into the
camera plane (x, y) and depth (z). A selector close to the camera-plane oracle is limited by what the image shows,
not by how it was trained.

It also prints the selector's Unfolder error (its 2D joints against the ground truth's) by the size of the hand's
crop box in the image, in crop and in image pixels: whether the crop's resolution or the image's own detail limits
the 2D evidence; and, for each 2D evidence, how much of its error lies along the directions in which the K
hypotheses differ, the only part of it that can change their ranking (:func:`error_along_hypotheses`); and the
same by how far the hand moved during the exposure (:func:`by_motion`): whether the blur is what leaves the
hypotheses' differences unread.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from hmh.config import Config
from hmh.eval.metrics import sequence_errors, top_n_by_reward
from hmh.eval.protocol import MultiHypothesisEvaluator
from hmh.files import atomic
from hmh.models.checkpoint import CheckpointError, LoadedModels, models_from_checkpoint
from hmh.models.selector import reprojection_errors
from hmh.train.runner import build_datasets, data_root, make_loader

CAMERA_PLANE = (1.0, 1.0, 0.0)  # x, y
DEPTH = (0.0, 0.0, 1.0)  # z, the camera axis
RANDOM_ERROR_SEED = 0


@torch.no_grad()
def hypotheses_and_rewards(models: LoadedModels, split: str, max_samples: int = 0) -> dict[str, torch.Tensor]:
    """The generator's hypotheses and the selector's rewards on ``split`` (no augmentation, CPU): ``joints (N, K,
    T, J, 3)`` metres, ``gt (N, T, J, 3)``, ``valid (N, T, J)``, ``reward (N, K)``, and in crop pixels the
    hypotheses' projected ``joints_2d (N, K, T, J, 2)``, the ground truth's ``gt_2d (N, T, J, 2)`` and the
    selector's Unfolder joints ``evidence_2d (N, T, J, 2)``, and ``box_side (N,)`` the side of each image's crop box
    in image pixels; the first ``max_samples`` (0 = all)."""
    cfg = models.config
    dataset = build_datasets(cfg, data_root(cfg, progress=False), splits=(split,))[split]
    dataset.augment = False
    out: dict[str, list[torch.Tensor]] = {key: [] for key in ("joints", "gt", "valid", "reward", "joints_2d", "gt_2d",
                                                              "evidence_2d", "box_side")}
    seen = 0
    for batch in make_loader(dataset, cfg, train=False, device=torch.device("cpu")):
        gen_out = models.generator(batch["image"])
        out["joints"].append(gen_out.joints.float())
        out["gt"].append(batch["joints_3d"].float())
        out["valid"].append(batch["joint_valid"].bool())
        selected = models.selector(batch["image"], gen_out)
        out["reward"].append(selected.reward.float())
        out["joints_2d"].append(gen_out.joints_2d.float())
        out["gt_2d"].append(batch["joints_2d"].float())
        out["evidence_2d"].append(selected.unfolder_joints_2d.float())
        rows = dataset.rows[batch["index"].numpy()]
        out["box_side"].append(torch.from_numpy(dataset.index.bbox[rows, 2]).float())
        seen += len(batch["image"])
        print(f"  {seen}/{len(dataset)} images", file=sys.stderr, flush=True)
        if max_samples and seen >= max_samples:
            break
    return {key: torch.cat(parts)[:max_samples or None] for key, parts in out.items()}


def axis_errors(joints: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, axes: tuple[float, ...]) -> torch.Tensor:
    """Sequence MPJPE (mm) ``(N, K)`` counting only the coordinates ``axes`` keeps (1) of ``joints (N, K, T, J, 3)``
    against ``gt (N, T, J, 3)``, past/future matched on that error as the protocol does."""
    mask = torch.tensor(axes, dtype=joints.dtype)
    return sequence_errors(joints * mask, gt * mask, valid)


def two_d(data: dict[str, torch.Tensor], evidence: torch.Tensor, image_size: int, align: str) -> torch.Tensor:
    """Scores ``(N, K)``, higher = closer: each hypothesis' projected joints against 2D ``evidence (N, T, J, 2)``, as
    ``selection.rule: reprojection`` ranks them (``align``: ``none`` or ``similarity``)."""
    return -reprojection_errors(data["joints_2d"], evidence, image_size, align)


def ranked(data: dict[str, torch.Tensor], scores: torch.Tensor, top_n: int) -> dict[str, float]:
    """The protocol's metrics of the top-n of ``scores (N, K)`` (a sample without valid joints ranks nothing)."""
    evaluator = MultiHypothesisEvaluator(top_n, seed=0)
    evaluator.update(data["joints"], data["gt"], data["valid"], scores=torch.nan_to_num(scores, nan=0.0))
    return evaluator.compute()


def ceiling_rows(data: dict[str, torch.Tensor], top_n: int, image_size: int,
                 others: dict[str, torch.Tensor] | None = None,
                 rewards: dict[str, torch.Tensor] | None = None) -> list[dict[str, float | str]]:
    """One row per ranking (see the module docstring) from :func:`hypotheses_and_rewards`' tensors; ``image_size``
    the crop side in pixels. The ground truth's 2D joints stand in for the Unfolder's where they are valid.
    ``others``: more 2D evidence ``(N, T, J, 2)`` by name (:func:`generator_unfolder_joints`), ranked by shape;
    ``rewards``: other selectors' rewards ``(N, K)`` by name (:func:`selector_rewards`), each ranking, and the mean of
    them all with the selector's."""
    joints, gt, valid = data["joints"], data["gt"], data["valid"]
    plane, depth = axis_errors(joints, gt, valid, CAMERA_PLANE), axis_errors(joints, gt, valid, DEPTH)  # (N, K)
    perfect = perfect_2d(data)
    rankings = {
        "the selector (its reward)": data["reward"],
        **{f"{name} (its reward)": reward for name, reward in (rewards or {}).items()},
        **({f"the mean reward of the {len(rewards) + 1} selectors": torch.stack([data["reward"], *rewards.values()])
            .mean(dim=0)} if rewards else {}),
        "2D: the selector's Unfolder joints, as they are": two_d(data, data["evidence_2d"], image_size, "none"),
        "2D: the selector's Unfolder joints, shape alone (similarity)":
            two_d(data, data["evidence_2d"], image_size, "similarity"),
        "2D: the ground truth's 2D joints, as they are": two_d(data, perfect, image_size, "none"),
        "2D: the ground truth's 2D joints, shape alone (similarity)": two_d(data, perfect, image_size, "similarity"),
        "2D: the ground truth's 2D joints plus random error of the Unfolder's size, shape alone (similarity)":
            two_d(data, random_error_2d(data), image_size, "similarity"),
        **{f"2D: {name}, shape alone (similarity)": two_d(data, evidence, image_size, "similarity")
           for name, evidence in (others or {}).items()},
        "camera-plane oracle (x, y error alone)": -plane,
        "depth oracle (z error alone)": -depth,
        "label oracle (3D error, the JRC labels)": -sequence_errors(joints, gt, valid),
    }
    rows: list[dict[str, float | str]] = []
    for name, ranking in rankings.items():
        m = ranked(data, ranking, top_n)
        top1 = top_n_by_reward(torch.nan_to_num(ranking, nan=0.0), 1)  # (N, 1)
        rows.append({
            "ranking": name, "final": m["final/mpjpe_current"], "gain": m["selection/gain"],
            "precision": m["selection/precision"], "random": m["random_n/mpjpe_current"],
            "top1_plane": float(torch.nanmean(plane.gather(1, top1))),
            "top1_depth": float(torch.nanmean(depth.gather(1, top1))),
        })
    rows.append({"ranking": "every hypothesis (mean)", "top1_plane": float(torch.nanmean(plane)),
                 "top1_depth": float(torch.nanmean(depth))})
    return rows


def perfect_2d(data: dict[str, torch.Tensor]) -> torch.Tensor:
    """A perfect Unfolder's joints ``(N, T, J, 2)``: the ground truth's 2D joints where they are valid, the
    Unfolder's elsewhere."""
    return torch.where(data["valid"][..., None], data["gt_2d"], data["evidence_2d"])


def random_error_2d(data: dict[str, torch.Tensor]) -> torch.Tensor:
    """:func:`perfect_2d` plus independent Gaussian offsets (seed :data:`RANDOM_ERROR_SEED`) scaled so that their mean
    length over the valid joints is :func:`unfolder_error_px`: 2D evidence as far off as the Unfolder's, in no
    direction in particular. ``(N, T, J, 2)`` crop pixels."""
    noise = torch.randn(data["gt_2d"].shape, generator=torch.Generator().manual_seed(RANDOM_ERROR_SEED))
    noise = noise * unfolder_error_px(data) / noise.norm(dim=-1)[data["valid"]].mean()
    return perfect_2d(data) + noise


def error_along_hypotheses(data: dict[str, torch.Tensor], evidence_2d: torch.Tensor) -> float:
    """The share of 2D evidence's error that lies along the directions in which the hypotheses differ, the only
    part of it that can change their ranking. Per image whose joints are all valid, as vectors of ``T * J * 2`` with
    every frame centred on its joints' mean: the length of the error's (``evidence_2d - gt_2d``) projection onto the
    span of the hypotheses' projected joints' deviations from their mean (at most K - 1 directions) over the error's
    length; the mean over those images. Random error keeps about ``sqrt((K - 1) / (T * J * 2))`` of its length there
    (0.24 at K = 8, T = 3, J = 21). ``evidence_2d (N, T, J, 2)`` crop pixels."""
    def centred(points: torch.Tensor) -> torch.Tensor:  # (..., T, J, 2) -> (..., T * J * 2)
        return (points - points.mean(dim=-2, keepdim=True)).flatten(-3)

    whole = data["valid"].flatten(1).all(dim=1)  # (N,)
    hypotheses = centred(data["joints_2d"][whole].float())  # (M, K, D)
    _, spread, basis = torch.linalg.svd(hypotheses - hypotheses.mean(dim=1, keepdim=True), full_matrices=False)
    # (M, K): the directions the deviations span (at most K - 1); a spread under 1/1000 of the widest is rounding
    spanned = spread > 1e-3 * spread[:, :1]
    error = centred(evidence_2d[whole].float()) - centred(data["gt_2d"][whole].float())  # (M, D)
    along = (torch.einsum("mkd,md->mk", basis, error) * spanned).norm(dim=-1)
    return float((along / error.norm(dim=-1).clamp(min=1e-12)).mean())


def other_models(path: Path, reference: Config) -> LoadedModels:
    """Another hmh checkpoint (``--unfolders``, ``--selectors``); refused, naming the file and the settings, unless
    it reads the same data into the same crops as ``reference``."""
    models = models_from_checkpoint(path)
    cfg = models.config
    mine, theirs = dataclasses.asdict(reference.data), dataclasses.asdict(cfg.data)
    differ = [f"data.{key}" for key in mine if key != "root" and mine[key] != theirs[key]]
    if data_root(cfg, progress=False) != data_root(reference, progress=False):
        differ.append("data.root")
    if cfg.model.image_size != reference.model.image_size:
        differ.append("model.image_size")
    if differ:
        raise SystemExit(f"{path}: reads other images than the checkpoint ranked ({', '.join(differ)} differ)")
    return models


def same_generator(path: Path, models: LoadedModels, reference: LoadedModels) -> None:
    """Refuse, naming the file, a selection checkpoint whose generator is not ``reference``'s (their rewards would
    rank other hypotheses)."""
    if models.selector is None:
        raise SystemExit(f"{path}: a generation-stage checkpoint has no selector; pass a selection one")
    mine, theirs = reference.generator.state_dict(), models.generator.state_dict()
    if mine.keys() != theirs.keys() or not all(torch.equal(mine[key], theirs[key]) for key in mine):
        raise SystemExit(f"{path}: its generator is not the one of the checkpoint ranked; pass selectors trained on "
                         "the same generator (train.generator)")


@torch.no_grad()
def per_image(models: LoadedModels, split: str, max_samples: int,
              read: Callable[[LoadedModels, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``read(models, images (B, 3, S, S))`` over the images :func:`hypotheses_and_rewards` reads (``split`` of
    ``models``' data, no augmentation, CPU), concatenated: the first ``max_samples`` (0 = all)."""
    cfg = models.config
    dataset = build_datasets(cfg, data_root(cfg, progress=False), splits=(split,))[split]
    dataset.augment = False
    parts, seen = [], 0
    for batch in make_loader(dataset, cfg, train=False, device=torch.device("cpu")):
        parts.append(read(models, batch["image"]).float())
        seen += len(batch["image"])
        if max_samples and seen >= max_samples:
            break
    return torch.cat(parts)[:max_samples or None]


def selector_rewards(models: LoadedModels, split: str, max_samples: int = 0) -> torch.Tensor:
    """The rewards ``(N, K)`` of ``models``' selector (:func:`same_generator`) on :func:`per_image`'s images."""
    return per_image(models, split, max_samples, lambda m, images: m.selector(images, m.generator(images)).reward)


def generator_unfolder_joints(models: LoadedModels, split: str, max_samples: int = 0) -> torch.Tensor:
    """The Unfolder joints ``(N, T, J, 2)`` (crop pixels) of ``models``' generator (:func:`other_models`) on
    :func:`per_image`'s images."""
    return per_image(models, split, max_samples, lambda m, images: m.generator(images).unfolder_joints_2d)


def share_table(data: dict[str, torch.Tensor], others: dict[str, torch.Tensor]) -> str:
    """Markdown table: for the selector's Unfolder joints, random error of their size (:func:`random_error_2d`),
    each of ``others`` and, with two or more of them, their mean: the mean distance from the ground truth's valid 2D
    joints (crop pixels) and :func:`error_along_hypotheses`."""
    evidence = {"the selector's Unfolder joints": data["evidence_2d"],
                "the ground truth's 2D joints plus random error of the Unfolder's size": random_error_2d(data),
                **others}
    if len(others) > 1:
        evidence[f"the mean of those {len(others)} Unfolders' joints"] = torch.stack(list(others.values())).mean(dim=0)
    lines = ["| 2D evidence | error, crop px | share of the error along the hypotheses' differences |",
             "|---|---:|---:|"]
    lines += [f"| {name} | {error_px(data, points):.2f} | {error_along_hypotheses(data, points):.2f} |"
              for name, points in evidence.items()]
    return "\n".join(lines)


def error_px(data: dict[str, torch.Tensor], points: torch.Tensor) -> float:
    """Mean distance (crop pixels) of 2D ``points (N, T, J, 2)`` from the ground truth's valid 2D joints."""
    return float((points - data["gt_2d"]).norm(dim=-1)[data["valid"]].mean())


def unfolder_error_px(data: dict[str, torch.Tensor]) -> float:
    """:func:`error_px` of the selector's Unfolder joints."""
    return error_px(data, data["evidence_2d"])


def equal_groups(values: torch.Tensor, groups: int) -> tuple[torch.Tensor, ...]:
    """The indices of ``values (N,)`` split into ``groups`` of about equal count, from the smallest values up."""
    return torch.argsort(values, stable=True).tensor_split(groups)


def unfolder_error_by_box(data: dict[str, torch.Tensor], image_size: int, groups: int = 4) -> list[dict[str, float]]:
    """The selector's Unfolder error by the size of the hand in the image: the images split into ``groups`` of
    about equal count by ``box_side``, each with its side range (image pixels), its count, and its mean distance
    from the ground truth's valid 2D joints in crop pixels and in image pixels (crop pixels x side / crop side).
    If the crop's resolution limited the joints, the error would be the same in crop pixels across the groups;
    if the image's own detail (its blur, its pixels) did, it would be the same in image pixels."""
    valid = data["valid"].float()
    distance = (data["evidence_2d"] - data["gt_2d"]).norm(dim=-1)  # (N, T, J) crop px
    per_image = (distance * valid).sum(dim=(1, 2)) / valid.sum(dim=(1, 2)).clamp(min=1)  # (N,)
    side = data["box_side"]
    rows = []
    for part in equal_groups(side, groups):
        rows.append({"side_low": float(side[part].min()), "side_high": float(side[part].max()),
                     "images": len(part), "crop_px": float(per_image[part].mean()),
                     "image_px": float((per_image[part] * side[part] / image_size).mean())})
    return rows


def by_motion(data: dict[str, torch.Tensor], top_n: int, image_size: int, groups: int = 4) -> list[dict[str, float]]:
    """The images split into ``groups`` of about equal count by how far the hand moved during the exposure: the mean,
    over the joints valid in both, of the distance between the ground truth's first and last frame 2D joints, in
    image pixels (crop pixels x ``box_side`` / crop side). Per group: the motion range, the count, the Unfolder's
    error (crop pixels) and its :func:`error_along_hypotheses`, and the final of the selector, of the 2D shape
    rankings by the Unfolder's and by the ground truth's joints, of a random top-n and of the label oracle."""
    valid = data["valid"]
    both = valid[:, 0] & valid[:, -1]  # (N, J)
    moved = (data["gt_2d"][:, 0] - data["gt_2d"][:, -1]).norm(dim=-1)  # (N, J) crop px
    moved = (moved * both).sum(dim=1) / both.sum(dim=1).clamp(min=1) * data["box_side"] / image_size  # (N,)
    rows = []
    for part in equal_groups(moved, groups):
        group = {key: value[part] for key, value in data.items()}
        selector = ranked(group, group["reward"], top_n)
        rows.append({"moved_low": float(moved[part].min()), "moved_high": float(moved[part].max()),
                     "images": len(part), "unfolder_px": unfolder_error_px(group),
                     "share": error_along_hypotheses(group, group["evidence_2d"]),
                     "selector": selector["final/mpjpe_current"],
                     "unfolder": ranked(group, two_d(group, group["evidence_2d"], image_size, "similarity"),
                                        top_n)["final/mpjpe_current"],
                     "ground_truth": ranked(group, two_d(group, perfect_2d(group), image_size, "similarity"),
                                            top_n)["final/mpjpe_current"],
                     "random": selector["random_n/mpjpe_current"],
                     "label_oracle": selector["label_oracle/mpjpe_current"]})
    return rows


def motion_table(rows: list[dict[str, float]], image_size: int) -> str:
    """Markdown table of :func:`by_motion`."""
    lines = [f"| hand's motion during the exposure (image px) | images | Unfolder error, crop px ({image_size} px "
             "crops) | its share along the hypotheses' differences | final: the selector | final: 2D shape, the "
             "Unfolder's joints | final: 2D shape, the ground truth's joints | random top-n | label oracle |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['moved_low']:.1f}-{r['moved_high']:.1f} | {r['images']} | {r['unfolder_px']:.2f} | "
              f"{r['share']:.2f} | {r['selector']:.2f} | {r['unfolder']:.2f} | {r['ground_truth']:.2f} | "
              f"{r['random']:.2f} | {r['label_oracle']:.2f} |" for r in rows]
    return "\n".join(lines)


def box_table(rows: list[dict[str, float]], image_size: int) -> str:
    """Markdown table of :func:`unfolder_error_by_box`."""
    lines = [f"| crop box side (image px) | images | Unfolder error, crop px ({image_size} px crops) | "
             "Unfolder error, image px |", "|---|---:|---:|---:|"]
    lines += [f"| {r['side_low']:.0f}-{r['side_high']:.0f} | {r['images']} | {r['crop_px']:.2f} | "
              f"{r['image_px']:.2f} |" for r in rows]
    return "\n".join(lines)


def table(rows: list[dict[str, float | str]]) -> str:
    """Markdown table of :func:`ceiling_rows`."""
    lines = ["| ranking | final | gain | precision | top-1 error, camera plane (x, y) | top-1 error, depth (z) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        cells = [f"{r[key]:.2f}" if key in r else "" for key in ("final", "gain")]
        cells.append(f"{r['precision']:.3f}" if "precision" in r else "")
        cells += [f"{r['top1_plane']:.2f}", f"{r['top1_depth']:.2f}"]
        lines.append(f"| {r['ranking']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a selection-stage hmh checkpoint")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"], help="(default: test)")
    parser.add_argument("--max-samples", type=int, default=0, help="at most this many images, 0 = all (default: 0)")
    parser.add_argument("--unfolders", type=Path, nargs="*", default=[], metavar="CKPT",
                        help="other checkpoints trained on the same data whose generators' Unfolder joints are also "
                             "ranked by and compared (default: none)")
    parser.add_argument("--selectors", type=Path, nargs="*", default=[], metavar="CKPT",
                        help="other selection checkpoints on the same generator whose rewards, each and averaged "
                             "with this one's, also rank the hypotheses (default: none)")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    try:
        models = models_from_checkpoint(args.checkpoint)
        if models.selector is None:
            raise SystemExit(f"{args.checkpoint}: a generation-stage checkpoint has no selector; pass a selection one")
        cfg = models.config
        unfolders = {path: other_models(path, cfg) for path in args.unfolders}  # refused before the long passes
        selectors = {path: other_models(path, cfg) for path in args.selectors}
        for path, other in selectors.items():
            same_generator(path, other, models)
    except CheckpointError as error:
        raise SystemExit(str(error)) from None
    data = hypotheses_and_rewards(models, args.split, args.max_samples)
    others = {f"the Unfolder joints of `{path}`": generator_unfolder_joints(other, args.split, args.max_samples)
              for path, other in unfolders.items()}
    rewards = {f"the selector of `{path}`": selector_rewards(other, args.split, args.max_samples)
               for path, other in selectors.items()}
    rows = ceiling_rows(data, cfg.selection.top_n, cfg.model.image_size, others, rewards)
    text = (f"Checkpoint `{args.checkpoint}`, {args.split} split ({len(data['joints'])} images), "
            f"K={cfg.model.num_hypotheses}, top-n={cfg.selection.top_n}; current-frame MPJPE of the top-n in mm, "
            f"random top-n {rows[0]['random']:.2f}. Top-1 errors: sequence MPJPE in mm. The selector's Unfolder "
            f"joints are {unfolder_error_px(data):.2f} px from the ground truth's on average "
            f"({cfg.model.image_size} px crops).\n\n" + table(rows) + "\n\nThe Unfolder's error by the size of the "
            "hand's crop box in the image (a larger box is shrunk more into the crop):\n\n"
            + box_table(unfolder_error_by_box(data, cfg.model.image_size), cfg.model.image_size)
            + f"\n\nHow much of each 2D evidence's error lies along the directions in which the "
            f"{cfg.model.num_hypotheses} hypotheses differ (the only part that can change their ranking):\n\n"
            + share_table(data, others) + "\n\nThe same by how far the hand moved during the exposure (the ground "
            "truth's first to last frame; current-frame MPJPE of the top-n in mm):\n\n"
            + motion_table(by_motion(data, cfg.selection.top_n, cfg.model.image_size), cfg.model.image_size))
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(args.out, text + "\n")
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
