"""``hmh predict``: a checkpoint's K hypotheses, rewards, selected top-n and final hand sequence for images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SYNTHETIC_NOTE = ("note: this checkpoint was trained on {data} only; on photographs its results are not expected "
                  "to be meaningful (train on the BlurHand dataset for that)")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="run a checkpoint on blurred hand images: K hypotheses, the selected top-n, the final sequence",
        description="Rebuild the models from a checkpoint alone and predict every image: per image a folder with "
        "prediction.json (every hypothesis' 3D joints in mm, wrist-relative, camera frame, and 2D joints in image "
        "pixels; rewards; the selected top-n; the final past/current/future sequence; the hypotheses' and rewards' "
        "spread), final_{past,current,future}.obj meshes, hypotheses.png and the mesh pictures overlay.png, "
        "hypotheses_mesh.png, sequence.gif, turntable.gif; over all images OUT/predictions.parquet (one row per "
        "image and hypothesis). An unreadable image or a bad boxes row is reported and the others are still written.",
    )
    p.add_argument("images", nargs="*", type=Path, metavar="IMAGE",
                   help="blurred hand images (any format PIL reads), folders of images, or glob patterns")
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="a .pt written by hmh train, or a Ray Train checkpoint folder of a search "
                   "(a selection-stage one for the selected top-n)")
    p.add_argument("--bbox", type=float, nargs=4, metavar=("X", "Y", "W", "H"), default=None,
                   help="the hand's box in image pixels, for every image; it is made square and enlarged x1.25 as "
                   "BlurHand's boxes are (default: each image is a hand crop already)")
    p.add_argument("--boxes", type=Path, default=None, metavar="FILE",
                   help="a CSV (header image,x,y,w,h[,hand]) or JSON list of such objects: a box and hand per image "
                   "(paths relative to the file); its images are predicted too")
    p.add_argument("--hand", choices=("right", "left"), default="right",
                   help="which hand the images show (left hands are mirrored into the right-hand model)")
    p.add_argument("--out", type=Path, default=Path("predictions"),
                   help="output folder, one subfolder per image, <stem>-<hash of the image's resolved path>: a rerun "
                   "of the same image replaces its own results only (default: ./predictions)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--no-pictures", action="store_true",
                   help="skip the rendered mesh pictures and GIFs (faster; no EGL needed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_predict)


def _plan(args: argparse.Namespace):
    """The call's :class:`hmh.predict_jobs.Job` list and bad-row messages; raises when ``--out`` or a folder
    cannot be written or when nothing is given."""
    from hmh.errors import HmhError
    from hmh.outputs import OutputError, check_folder
    from hmh.predict_jobs import expand_images, plan_jobs

    if not args.images and args.boxes is None:
        raise HmhError("give images (files, folders or glob patterns) and/or --boxes FILE")
    check_folder(args.out, "--out")
    jobs, bad = plan_jobs(expand_images(args.images), args.boxes, args.out,
                          None if args.bbox is None else tuple(args.bbox), args.hand == "left")
    for job in jobs:
        if job.folder.exists() and not job.folder.is_dir():
            raise OutputError(f"--out {args.out}: {job.folder} exists and is not a folder")
    return jobs, bad


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
    from tqdm import tqdm

    from hmh.checkpoint import models_from_checkpoint
    from hmh.data.blurhand import load_image
    from hmh.data.render import RendererUnavailableError
    from hmh.errors import HmhError
    from hmh.evaluation import SelectionStats
    from hmh.loop import resolve_device
    from hmh.predict import crop_hand, predict
    from hmh.prediction_files import prediction_rows, training_data, update_table, write_prediction

    device = resolve_device(args.device, "--device")
    if args.bbox is not None:
        from hmh.predict import check_bbox

        check_bbox(args.bbox)
    jobs, bad_rows = _plan(args)
    for message in bad_rows:
        print(f"hmh predict: skipped: {message}", file=sys.stderr)
    models = models_from_checkpoint(args.checkpoint, device)
    cfg = models.config
    trained_on, synthetic = training_data(cfg.data)
    if synthetic:
        print(SYNTHETIC_NOTE.format(data=trained_on), flush=True)
    faces = models.generator.mano.faces.cpu().numpy()
    pictures = not args.no_pictures
    stats, rows, pending, failed = SelectionStats(), [], [], []
    bar = tqdm(total=len(jobs), desc="predict", unit="image", disable=args.no_progress or not sys.stderr.isatty())

    def flush() -> None:
        nonlocal pictures
        for (job, photo, crop), pred in zip(pending, predict(models, [c for *_, c in pending], device), strict=True):
            try:
                write_prediction(job.folder, pred, crop, faces, str(job.image), str(args.checkpoint), trained_on,
                                 photo if pictures else None)
            except RendererUnavailableError as err:
                pictures = False
                print(f"hmh predict: warning: no mesh pictures ({err})", file=sys.stderr)
            rows.extend(prediction_rows(job.folder.name, pred, crop, str(job.image), str(args.checkpoint)))
            if pred.reward is not None:
                stats.update(torch.from_numpy(pred.reward)[None], torch.from_numpy(pred.selected)[None])
            rewards = "" if pred.reward is None else (" rewards " + " ".join(f"{r:.3f}" for r in pred.reward)
                                                       + f" (spread {pred.reward.std():.4f})")
            spread = pred.spread_mm()[1]
            bar.write(f"{job.image}: K={len(pred.joints)}{rewards}; hypotheses {spread:.1f} mm apart (current "
                      f"frame); final = {pred.final_source} {pred.selected.tolist()} -> {job.folder}/")
            bar.update()
        pending.clear()

    for job in jobs:
        try:
            photo = load_image(job.image)
            crop = crop_hand(photo, cfg.model.image_size, job.bbox, job.is_left, str(job.image))
        except HmhError as err:
            bar.write(f"hmh predict: skipped: {err}", file=sys.stderr)
            failed.append(str(job.image))
            bar.update()
            continue
        pending.append((job, photo, crop))
        if len(pending) == cfg.train.eval_batch_size:
            flush()
    flush()
    bar.close()
    if rows:
        print(f"table: {update_table(args.out, rows)} ({len(rows)} rows: one per image and hypothesis)", flush=True)
    if stats.count >= 2:
        print(selection_summary(stats), flush=True)
    problems = ([f"{len(failed)} of {len(jobs)} images were skipped: {', '.join(failed)}"] if failed else []) + (
        [f"{len(bad_rows)} row(s) of {args.boxes} were skipped"] if bad_rows else [])
    if problems:
        raise HmhError("; ".join(problems))
    return 0
