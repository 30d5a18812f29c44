"""``hmh mano build|convert|show``: the synthetic MANO files, chumpy-free conversion, a posed mesh to look at."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("mano", help="MANO model files: build the synthetic hand, convert, export a mesh")
    verbs = parser.add_subparsers(dest="mano_command", metavar="VERB", required=True)

    build = verbs.add_parser("build", help="write the synthetic MANO_RIGHT.npz and MANO_LEFT.npz")
    build.add_argument("--out", required=True, type=Path, help="output folder")
    build.add_argument("--seed", type=int, default=0, help="builder seed (default 0: the cached hand)")
    build.set_defaults(func=_build)

    convert = verbs.add_parser("convert", help="convert an official MANO .pkl to .npz without chumpy")
    convert.add_argument("source", type=Path, help="official MANO_RIGHT.pkl or MANO_LEFT.pkl")
    convert.add_argument("out", type=Path, help="output .npz")
    convert.set_defaults(func=_convert)

    show = verbs.add_parser("show", help="export a posed mesh as Wavefront OBJ for a look")
    show.add_argument("model", help="MANO file or folder ('' = the synthetic hand)")
    show.add_argument("--out", required=True, type=Path, help="output .obj")
    show.add_argument("--side", choices=("right", "left"), default="right")
    show.add_argument("--pose", choices=("mean", "flat", "random"), default="mean",
                      help="mean: MANO's mean (relaxed) pose; flat: the template; random: a PCA pose sample")
    show.add_argument("--seed", type=int, default=0, help="seed for --pose random")
    show.set_defaults(func=_show)


def _build(args: argparse.Namespace) -> int:
    from hmh import mano

    for side in ("right", "left"):
        target = args.out / f"MANO_{side.upper()}.npz"
        mano.write_model(mano.synthetic_model(seed=args.seed, side=side), target)
        print(f"wrote {target}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from hmh import mano

    mano.write_model(mano.load_model_file(args.source), args.out)
    print(f"wrote {args.out}")
    return 0


def _show(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from hmh import atomic, mano

    arrays = mano.load_model_file(mano.model_path(args.model, args.side))
    layer = mano.Mano(arrays, side=args.side)
    hand_pose = torch.zeros(1, 45)
    if args.pose == "flat":
        hand_pose -= torch.as_tensor(arrays["hands_mean"], dtype=torch.float32)
    elif args.pose == "random":
        coeffs = torch.as_tensor(np.random.default_rng(args.seed).normal(size=45), dtype=torch.float32)
        hand_pose += coeffs @ torch.as_tensor(arrays["hands_components"], dtype=torch.float32)
    with torch.no_grad():
        out = layer(torch.zeros(1, 3), hand_pose, torch.zeros(1, 10))
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in out.vertices[0].tolist()]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in layer.faces.tolist()]
    atomic.write_text(args.out, "\n".join(lines) + "\n")
    print(f"wrote {args.out} ({len(out.vertices[0])} vertices, {len(layer.faces)} faces, pose {args.pose})")
    return 0
