"""``hmh predict``: a checkpoint's K hypotheses, rewards, selected top-n and final hand sequence for images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="run a checkpoint on blurred hand images: K hypotheses, the selected top-n, the final sequence",
        description="Rebuild the models from a checkpoint alone and predict every image: per image a folder with "
        "prediction.json (every hypothesis' 3D joints in mm, wrist-relative, camera frame, and 2D joints in image "
        "pixels; rewards; the selected top-n; the final past/current/future sequence), final_{past,current,future}"
        ".obj meshes and hypotheses.png. An unreadable image is reported and the others are still written.",
    )
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="blurred hand images (any format PIL reads)")
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="a .pt written by hmh train, or a Ray Train checkpoint folder of a search "
                   "(a selection-stage one for the selected top-n)")
    p.add_argument("--bbox", type=float, nargs=4, metavar=("X", "Y", "W", "H"), default=None,
                   help="the hand's box in image pixels, for every image; it is made square and enlarged x1.25 as "
                   "BlurHand's boxes are (default: each image is a hand crop already)")
    p.add_argument("--hand", choices=("right", "left"), default="right",
                   help="which hand the images show (left hands are mirrored into the right-hand model)")
    p.add_argument("--out", type=Path, default=Path("predictions"),
                   help="output folder, one subfolder per image (default: ./predictions)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.set_defaults(func=run_predict)


def _folders(images: list[Path], out: Path) -> list[Path]:
    """One output folder per image, named after it; repeated names get ``-2``, ``-3``, ..."""
    seen: dict[str, int] = {}
    folders = []
    for image in images:
        seen[image.stem] = seen.get(image.stem, 0) + 1
        folders.append(out / (image.stem if seen[image.stem] == 1 else f"{image.stem}-{seen[image.stem]}"))
    return folders


def selection_summary(stats) -> str:
    """The selector's behaviour over the images of one ``hmh predict`` call (an ``hmh.evaluation.SelectionStats``):
    its reward spread across images and how often it chose its most common set, flagged when it is a constant
    rule."""
    from hmh.report import CONSTANT_RULE_SHARE

    got = stats.compute()
    share = got["common_set_share"]
    line = (f"selection over {stats.count} images: reward spread {got['reward_spread']:.4f} (std of a slot's reward "
            f"across images, mean over slots); the most common set {list(stats.most_common_set())} was selected for "
            f"{100 * share:.0f}% of them")
    if share >= CONSTANT_RULE_SHARE:
        line += " -- the selector acts as a constant rule here, not as a reading of the image"
    return line


def run_predict(args: argparse.Namespace) -> int:
    import torch

    from hmh.checkpoint import models_from_checkpoint
    from hmh.data.blurhand import load_image
    from hmh.errors import HmhError
    from hmh.evaluation import SelectionStats
    from hmh.loop import resolve_device
    from hmh.predict import FRAMES, HandCrop, crop_hand, predict, write_prediction

    device = resolve_device(args.device)
    models = models_from_checkpoint(args.checkpoint, device)
    cfg = models.config
    faces = models.generator.mano.faces.cpu().numpy()
    current = FRAMES.index("current")
    failed: list[str] = []
    pending: list[tuple[Path, Path, HandCrop]] = []
    stats = SelectionStats()

    def flush() -> None:
        for (image_path, folder, crop), pred in zip(pending, predict(models, [c for *_, c in pending], device),
                                                    strict=True):
            write_prediction(folder, pred, crop, faces, str(image_path), str(args.checkpoint))
            rewards = "" if pred.reward is None else " rewards " + " ".join(f"{r:.3f}" for r in pred.reward)
            if pred.reward is not None:
                stats.update(torch.from_numpy(pred.reward)[None], torch.from_numpy(pred.selected)[None])
            wrist = pred.final_joints_2d[current, 0].round(1).tolist()
            print(f"{image_path}: K={len(pred.joints)}{rewards}; final = {pred.final_source} "
                  f"{pred.selected.tolist()}, current-frame wrist at {wrist} px -> {folder}/", flush=True)
        pending.clear()

    for image_path, folder in zip(args.images, _folders(args.images, args.out), strict=True):
        try:
            crop = crop_hand(load_image(image_path), cfg.model.image_size, args.bbox, args.hand == "left",
                             str(image_path))
        except HmhError as err:
            print(f"hmh predict: skipped: {err}", file=sys.stderr)
            failed.append(str(image_path))
            continue
        pending.append((image_path, folder, crop))
        if len(pending) == cfg.train.eval_batch_size:
            flush()
    flush()
    if stats.count >= 2:
        print(selection_summary(stats), flush=True)
    if failed:
        raise HmhError(f"{len(failed)} of {len(args.images)} images could not be read: {', '.join(failed)}")
    return 0
