"""``hmh predict``: a checkpoint's K hypotheses, rewards, selected top-n and final hand sequence for images."""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

SYNTHETIC_NOTE = ("note: this checkpoint was trained on {data} only; on photographs its results are not expected "
                  "to be meaningful (train on the BlurHand dataset for that)")
WHOLE_IMAGE_NOTE = ("note: {count} image(s) without --bbox or a --boxes row: each whole image is taken as a hand crop "
                    "(the square about its centre); give the hand's box where the hand fills less of the picture")
UNRELIABLE_WARNING = ("hmh predict: warning: {image}: the {count} averaged hypotheses are {spread:.1f} mm apart "
                      "(above {limit:g} mm): their average, the final sequence, need not look like a hand; "
                      "overlay.png and turntable.gif show hypothesis {top} beside it")


def _path(text: str) -> Path:
    """An argparse ``type``: a non-empty path (``Path("")`` would silently be the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path")
    return Path(text)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="run a checkpoint on blurred hand images: K hypotheses, the selected top-n, the final sequence",
        description="Rebuild the models from a checkpoint alone and predict every image: per image a folder with "
        "prediction.json (every hypothesis' 3D joints in mm, wrist-relative, camera frame, and 2D joints in image "
        "pixels; rewards; the selected top-n; the final past/current/future sequence; the hypotheses' and rewards' "
        "spread), final_{past,current,future}.obj meshes, hypotheses.png and the mesh pictures overlay.png, "
        "hypotheses_mesh.png, sequence.gif, turntable.gif; over all images OUT/predictions.parquet (one row per "
        "image and hypothesis, and one for the final sequence). MANO parameters (axis-angle, right-hand MANO, x "
        "negated for a left hand) and the camera are exported with the joints; docs/predict/outputs.md documents "
        "every field. An unreadable image or a bad boxes row is reported and the others are still written. Images "
        "are read upright (EXIF orientation applied); 16-bit ones are scaled to 8 bits.",
    )
    p.add_argument("images", nargs="*", type=_path, metavar="IMAGE",
                   help="blurred hand images (any format PIL reads), folders of images, or glob patterns")
    p.add_argument("--checkpoint", type=_path, required=True,
                   help="a .pt written by hmh train, or a Ray Train checkpoint folder of a search "
                   "(a selection-stage one for the selected top-n)")
    p.add_argument("--bbox", type=float, nargs=4, metavar=("X", "Y", "W", "H"), default=None,
                   help="the hand's box in the upright image's pixels (after its EXIF orientation), for every image; "
                   "it is made square and enlarged x1.25 as BlurHand's boxes are (default: each image is a hand crop "
                   "already, which is said once)")
    p.add_argument("--boxes", type=_path, default=None, metavar="FILE",
                   help="a CSV (header image,x,y,w,h[,hand]) or JSON list of such objects: a box (upright image "
                   "pixels) and hand per image (paths relative to the file); its images are predicted too")
    p.add_argument("--hand", choices=("right", "left"), default="right",
                   help="which hand the images show (left hands are mirrored into the right-hand model)")
    p.add_argument("--out", type=_path, default=Path("predictions"),
                   help="output folder, one subfolder per image, <stem>-<hash of the image's resolved path>: a rerun "
                   "of the same image replaces its own results only; one hmh predict at a time writes into it "
                   "(default: ./predictions)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--no-pictures", action="store_true",
                   help="skip the rendered mesh pictures and GIFs (faster; no EGL needed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_predict)


def _plan(args: argparse.Namespace):
    """The call's :class:`hmh.predict.jobs.Job` list and bad-row messages; raises when ``--out`` or a folder
    cannot be written or when nothing is given."""
    from hmh.errors import HmhError
    from hmh.files.outputs import OutputError, check_folder
    from hmh.predict.jobs import expand_images, plan_jobs

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
    """The selector's behaviour over the images of one ``hmh predict`` call (an ``hmh.eval.protocol.SelectionStats``):
    its reward spread across images and how often it chose its most common set, flagged when it is a constant
    rule."""
    from hmh.eval.report import CONSTANT_RULE_SHARE

    got = stats.compute()
    share = got["common_set_share"]
    line = (f"selection over {stats.count} images: reward spread {got['reward_spread']:.4f} (std of a slot's reward "
            f"across images, mean over slots); the most common set {list(stats.most_common_set())} was selected for "
            f"{100 * share:.0f}% of them")
    if share >= CONSTANT_RULE_SHARE:
        line += " -- the selector acts as a constant rule here, not as a reading of the image"
    return line


def _writable(out: Path) -> None:
    """Create ``out`` and write a scratch file in it, or raise :class:`hmh.files.outputs.OutputError` naming it."""
    from hmh.files.outputs import OutputError

    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise OutputError(f"--out {out}: cannot write there ({err.strerror or err})") from None


def run_predict(args: argparse.Namespace) -> int:
    from hmh.errors import HmhError
    from hmh.files import folder_lock
    from hmh.predict.run import check_bbox
    from hmh.train.loop import resolve_device

    device = resolve_device(args.device, "--device")
    if args.bbox is not None:
        check_bbox(args.bbox)
    jobs, bad_rows = _plan(args)
    for message in bad_rows:
        print(f"hmh predict: skipped: {message}", file=sys.stderr)
    if not jobs:
        raise HmhError(f"no image to predict: all {len(bad_rows)} row(s) of {args.boxes} were skipped")
    whole = sum(job.bbox is None for job in jobs)
    if whole:
        print(WHOLE_IMAGE_NOTE.format(count=whole), flush=True)
    with folder_lock.exclusive(args.out):
        return _predict_jobs(args, jobs, bad_rows, device)


def _predict_jobs(args: argparse.Namespace, jobs, bad_rows: list[str], device) -> int:
    """Predict ``jobs`` into ``args.out`` (whose lock the caller holds): every image's files, then the table."""
    import torch
    from tqdm import tqdm

    from hmh.cli import os_error_line
    from hmh.data.render import RendererUnavailableError
    from hmh.errors import HmhError
    from hmh.eval.protocol import SelectionStats
    from hmh.models.checkpoint import models_from_checkpoint
    from hmh.predict.files import (
        existing_rows,
        mano_model,
        prediction_rows,
        training_data,
        update_table,
        write_prediction,
    )
    from hmh.predict.run import AVERAGE_SPREAD_LIMIT_MM, crop_hand, load_photo, path_text, predict

    earlier = existing_rows(args.out)
    models = models_from_checkpoint(args.checkpoint, device)
    cfg = models.config
    trained_on, synthetic = training_data(cfg.data)
    if synthetic:
        print(SYNTHETIC_NOTE.format(data=trained_on), flush=True)
    fresh = not args.out.exists()
    _writable(args.out)
    faces = models.generator.mano.faces.cpu().numpy()
    mano = mano_model(cfg.model)
    pictures = not args.no_pictures
    stats, rows, pending, failed = SelectionStats(), [], [], []
    bar = tqdm(total=len(jobs), desc="predict", unit="image", disable=args.no_progress or not sys.stderr.isatty())

    def flush() -> None:
        nonlocal pictures
        for (job, photo, crop), pred in zip(pending, predict(models, [c for *_, c in pending], device), strict=True):
            image, checkpoint = path_text(job.image), path_text(args.checkpoint)
            try:
                write_prediction(job.folder, pred, crop, faces, image, checkpoint, trained_on, mano,
                                 photo if pictures else None)
            except RendererUnavailableError as err:
                pictures = False
                print(f"hmh predict: warning: no mesh pictures ({err})", file=sys.stderr)
            except OSError as err:  # e.g. a read-only image folder: the other images are still written
                bar.write(f"hmh predict: skipped: {image}: {os_error_line(err)}", file=sys.stderr)
                failed.append(image)
                bar.update()
                continue
            rows.extend(prediction_rows(job.folder.name, pred, crop, image, checkpoint))
            if pred.reward is not None:
                stats.update(torch.from_numpy(pred.reward)[None], torch.from_numpy(pred.selected)[None])
            rewards = "" if pred.reward is None else (" rewards " + " ".join(f"{r:.3f}" for r in pred.reward)
                                                       + f" (spread {pred.reward.std():.4f})")
            spread = pred.spread_mm()[1]
            bar.write(f"{image}: K={len(pred.joints)}{rewards}; hypotheses {spread:.1f} mm apart (current "
                      f"frame); final = {pred.final_source} {pred.selected.tolist()} -> {path_text(job.folder)}/")
            if pred.average_unreliable():
                bar.write(UNRELIABLE_WARNING.format(image=image, count=len(pred.selected),
                                                    spread=pred.averaged_spread_mm().max(),
                                                    limit=AVERAGE_SPREAD_LIMIT_MM, top=int(pred.selected[0])),
                          file=sys.stderr)
            bar.update()
        pending.clear()

    for job in jobs:
        try:
            photo = load_photo(job.image)
            crop = crop_hand(photo, cfg.model.image_size, job.bbox, job.is_left, path_text(job.image),
                             job.box_source)
        except HmhError as err:
            bar.write(f"hmh predict: skipped: {err}", file=sys.stderr)
            failed.append(path_text(job.image))
            bar.update()
            continue
        pending.append((job, photo, crop))
        if len(pending) == cfg.train.eval_batch_size:
            flush()
    flush()
    bar.close()
    if fresh and not rows:  # nothing written: leave no empty --out behind
        with contextlib.suppress(OSError):
            args.out.rmdir()
    if rows:
        print(f"table: {update_table(args.out, earlier, rows)} ({len(rows)} rows: one per image and hypothesis, "
              "and one per image for its final sequence)", flush=True)
    if stats.count >= 2:
        print(selection_summary(stats), flush=True)
    problems = ([f"{len(failed)} of {len(jobs)} images were skipped: {', '.join(failed)}"] if failed else []) + (
        [f"{len(bad_rows)} row(s) of {args.boxes} were skipped"] if bad_rows else [])
    if problems:
        raise HmhError("; ".join(problems))
    return 0
