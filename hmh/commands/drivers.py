"""``hmh search`` and ``hmh study``: the Ray drivers ``python -m tune.search`` / ``python -m tune.study`` (which
stay) under the one CLI, with the same arguments. Ray is imported only when one of them runs."""

from __future__ import annotations

import argparse
import importlib

DRIVERS = {
    "search": ("tune.search", "the Ray Tune search (Optuna; ASHA or brief-then-finish rounds) and the final "
                              "retrain of its best configuration"),
    "study": ("tune.study", "the reproduction study: the dissertation's Tables 4.1-4.3 as one Ray Tune experiment"),
}


def register(subparsers) -> None:
    for name, (module, help_text) in DRIVERS.items():
        parser = subparsers.add_parser(name, help=f"{help_text} (python -m {module}; hmh {name} --help)",
                                       add_help=False, prefix_chars="\0")
        parser.add_argument("arguments", nargs=argparse.REMAINDER, help=f"the arguments of python -m {module}")
        parser.set_defaults(func=run_driver, driver=name)


def run_driver(args: argparse.Namespace) -> int:
    """Run the driver's own parser on the arguments as given; it prints its own errors and help."""
    from tune.cli import main

    module = importlib.import_module(DRIVERS[args.driver][0])
    return main(f"hmh {args.driver}", module.run_args, module.build_parser(prog=f"hmh {args.driver}"), args.arguments)
