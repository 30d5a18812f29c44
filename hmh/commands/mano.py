"""``hmh mano build|convert|show``: the synthetic MANO files, chumpy-free conversion, a posed mesh to look at."""

from __future__ import annotations

import argparse
from pathlib import Path

from hmh.cli import count

SYNTHETIC = ("", "synthetic")
SIDES = ("right", "left")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "mano",
        help="MANO hand model files: build the synthetic hand, convert the official pickle, export a mesh",
        description="MANO hand model files. Without the official MANO_RIGHT.pkl / MANO_LEFT.pkl (mano.is.tue.mpg.de),"
        " hmh uses a procedurally built hand in the same format.",
    )
    verbs = parser.add_subparsers(dest="mano_command", metavar="VERB", required=True)

    build = verbs.add_parser(
        "build",
        help="write the synthetic MANO_RIGHT.npz and MANO_LEFT.npz",
        description="Build the synthetic MANO-format hand (778 vertices, MANO's skeleton, shape and pose spaces) "
        "and write MANO_RIGHT.npz and MANO_LEFT.npz into a folder usable as model.mano_path.",
    )
    build.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    build.add_argument("--seed", type=count(0), default=0,
                       help="seed of shape fields and pose prior, >= 0 (0: the usual hand)")
    build.set_defaults(func=_build)

    convert = verbs.add_parser(
        "convert",
        help="convert an official MANO .pkl to .npz without chumpy",
        description="Read an official MANO pickle (chumpy objects, sparse J_regressor) safely, without chumpy: only "
        "numpy and scipy.sparse data is accepted, any other content is refused. Writes a plain .npz.",
    )
    convert.add_argument("source", type=Path, help="official MANO_RIGHT.pkl or MANO_LEFT.pkl")
    convert.add_argument("out", type=Path, help="output .npz (keep the MANO_RIGHT/MANO_LEFT name for smplx)")
    convert.set_defaults(func=_convert)

    show = verbs.add_parser(
        "show",
        help="export a posed hand mesh as Wavefront OBJ",
        description="Pose a MANO model and write the mesh as OBJ (open it in any mesh viewer).",
    )
    show.add_argument("model", help="MANO file or folder; '' or 'synthetic' for the synthetic hand")
    show.add_argument("--out", required=True, type=Path, help="output .obj")
    show.add_argument("--side", choices=SIDES, default="right", help="hand side when MODEL is a folder")
    show.add_argument(
        "--pose", choices=("mean", "flat", "random"), default="mean",
        help="mean: MANO's mean (relaxed) pose, the zero of hmh's pose vectors; flat: the template; "
        "random: a sample of the PCA pose space (default: mean)",
    )
    show.add_argument("--seed", type=count(0), default=0, help="seed for --pose random, >= 0 (default 0)")
    show.set_defaults(func=_show)


def _build(args: argparse.Namespace) -> int:
    from hmh.mano import model as mano

    models = {args.out / f"MANO_{side.upper()}.npz": mano.synthetic_model(args.seed, side) for side in SIDES}
    mano.write_models(models)  # both or neither
    for target in models:
        print(f"wrote {target}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from hmh.mano import model as mano

    mano.write_model(mano.load_model_file(args.source), args.out)
    print(f"wrote {args.out}")
    return 0


def _show(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from hmh.mano import model as mano
    from hmh.mano.obj import write_obj

    if args.out.is_dir():
        raise mano.MANOFileError(f"--out {args.out}: is a folder, expected the path of the .obj to write")
    path = mano.model_path("" if args.model in SYNTHETIC else args.model, args.side)
    arrays = mano.load_model_file(path)
    layer = mano.Mano(arrays, side=args.side)
    hand_pose = torch.zeros(1, 45)
    if args.pose == "flat":
        hand_pose -= torch.as_tensor(arrays["hands_mean"], dtype=torch.float32)
    elif args.pose == "random":  # hands_components rows are scaled by their std: unit normal coefficients
        coeffs = np.random.default_rng(args.seed).normal(size=45) @ arrays["hands_components"]
        hand_pose += torch.as_tensor(coeffs, dtype=torch.float32)
    with torch.no_grad():
        out = layer(torch.zeros(1, 3), hand_pose, torch.zeros(1, 10))
    write_obj(args.out, out.vertices[0].numpy(), layer.faces.numpy(), f"{path} ({args.side}, pose {args.pose})")
    print(f"wrote {args.out}: {path.name} {args.side} hand, pose {args.pose}, "
          f"{len(out.vertices[0])} vertices, {len(layer.faces)} faces")
    return 0
