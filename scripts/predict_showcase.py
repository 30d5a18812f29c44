"""The README's ``hmh predict`` pictures: a checkpoint's predictions on freshly generated blurred hands.

    .venv/bin/python scripts/predict_showcase.py CHECKPOINT [--out docs/predict] [--images 4] [--size 384]

Renders ``--images`` new test images with the synthetic generator (``hmh data synth``, bench profile, seed 7: hands
the checkpoint has not seen), writes their hand boxes and sides from the annotations as a ``--boxes`` CSV, runs
``hmh predict`` on them (the CLI, as a user would), and copies the first image (``input.jpg``) and its
``overlay.png``, ``hypotheses_mesh.png``, ``sequence.gif`` and ``turntable.gif`` to ``OUT``.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
from pathlib import Path

from hmh.cli import main as hmh
from hmh.predict.files import PICTURES

SEED = 7


def write_boxes(root: Path, path: Path, count: int) -> None:
    """The first ``count`` middle annotations of ``root``'s test split as an ``hmh predict --boxes`` CSV."""
    data = json.loads((root / "annotations" / "test" / "BlurHand_test_data.json").read_text())
    images = {image["id"]: image for image in data["images"]}
    middle = [a for a in data["annotations"] if a["is_middle"] and a["hand_type"] in ("right", "left")][:count]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "x", "y", "w", "h", "hand"])
        for ann in middle:
            image = root / "blur_images" / "test" / images[ann["image_id"]]["file_name"]
            writer.writerow([image, *ann["bbox"], ann["hand_type"]])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/predict"))
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=384)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hmh-showcase-") as tmp:
        root = Path(tmp) / "data"
        status = hmh(["data", "synth", "--out", str(root), "--train", "2", "--test", str(2 * args.images),
                      "--size", str(args.size), "--seed", str(SEED), "--profile", "bench", "--no-progress"])
        if status:
            return status
        boxes = Path(tmp) / "boxes.csv"
        write_boxes(root, boxes, args.images)
        predictions = Path(tmp) / "predictions"
        status = hmh(["predict", "--checkpoint", str(args.checkpoint), "--boxes", str(boxes), "--out",
                      str(predictions), "--no-progress"])
        if status:
            return status
        with boxes.open() as f:
            first = Path(next(csv.DictReader(f))["image"])
        from hmh.predict.run import prediction_name

        folder = sorted(predictions.glob(prediction_name(first) + "*"))[0]  # "-left"/"-right" for two hands
        args.out.mkdir(parents=True, exist_ok=True)
        shutil.copy(first, args.out / "input.jpg")
        for name in PICTURES:
            shutil.copy(folder / name, args.out / name)
    print(f"pictures in {args.out}: input.jpg, {', '.join(PICTURES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
