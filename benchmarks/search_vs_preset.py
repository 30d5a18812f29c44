"""Does a search's final beat the configuration a preset ships? Side by side on the same test split.

    python benchmarks/search_vs_preset.py RESULTS [--preset bench] [--out RESULTS/vs_<preset>.md]

``RESULTS`` is an ``hmh search`` results folder after its final retrain (``final/config.yaml``,
``final/metrics.json``, ``space.yaml``). The preset's configuration is the final retrain's own configuration (its
data, model size and final budget) with every searched key of ``space.yaml`` set to the preset's value: so only what
the search chose differs. It is trained here with ``hmh train``'s code (``hmh.train.runner.run_training``) into
``RESULTS/<preset>-at-final-budget`` (resumed if interrupted), and the report gives both test finals, their
selection gain, and the constant mean pose of the same test split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hmh.files import atomic

ROWS = (("final/mpjpe_current", "selected top-n, mm"), ("best_of_k/mpjpe_current", "best of K, mm"),
        ("mean_of_k/mpjpe_current", "mean of K, mm"), ("selection/gain", "selection gain"))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"search_vs_preset: cannot read {path}: {exc}") from exc


def preset_overrides(results: Path, preset: str) -> list[str]:
    """``key=value`` for every searched key of ``results/space.yaml``, at ``preset``'s value."""
    from hmh.config import load_config, to_dict
    from tune.space import load_space

    final = results / "final" / "config.yaml"
    space = load_space(str(results / "space.yaml"), load_config(str(final)))
    values = to_dict(load_config(preset))
    out = []
    for param in space.params:
        section, key = param.key.split(".", 1)
        out.append(f"{param.key}={json.dumps(values[section][key])}")
    return out


def compare(results: Path, preset: str, echo=print) -> str:
    """Train the preset's searched values at the final retrain's budget (or read that run) and write the report."""
    from hmh.config import load_config
    from hmh.train.runner import run_training

    final_dir = results / "final"
    searched = _read_json(final_dir / "metrics.json")
    overrides = preset_overrides(results, preset)
    run = results / f"{preset}-at-final-budget"
    metrics_file = run / "metrics.json"
    if not metrics_file.is_file():
        echo(f"training {preset}'s values of the searched keys at the final budget into {run}: {' '.join(overrides)}")
        run_training(load_config(str(final_dir / "config.yaml"), overrides), run, echo=echo, progress=False)
    shipped = _read_json(metrics_file)["metrics"]
    best, constant = searched["metrics"], shipped["constant/mpjpe_current"]
    lines = [f"# The search's final against `{preset}` as shipped, same data, model size and budget", "",
             f"Command: `python benchmarks/search_vs_preset.py {results} --preset {preset}`", "",
             f"Test split, current-frame MPJPE. The constant mean pose of this split: {constant:.2f} mm. "
             f"`{preset}` as shipped: the final retrain's configuration with {' '.join(f'`{o}`' for o in overrides)}.",
             "", f"| | search's final (trial {searched.get('best_trial_id', '?')}) | `{preset}` as shipped |",
             "|---|---:|---:|"]
    for key, name in ROWS:
        cells = [f"{m[key]:.2f}" if key in m else "-" for m in (best, shipped)]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    ratio = [f"{m['final/mpjpe_current'] / constant:.2f}x" for m in (best, shipped)]
    lines.append(f"| selected top-n / constant | {ratio[0]} | {ratio[1]} |")
    verdict = best["final/mpjpe_current"] < shipped["final/mpjpe_current"]
    lines += ["", f"The search's final {'beats' if verdict else 'does not beat'} `{preset}` as shipped: "
              f"{best['final/mpjpe_current']:.2f} against {shipped['final/mpjpe_current']:.2f} mm "
              f"({best['final/mpjpe_current'] / shipped['final/mpjpe_current']:.2f}x)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="an hmh search results folder after its final retrain")
    parser.add_argument("--preset", default="bench", help="the preset whose searched values to train (default: bench)")
    parser.add_argument("--out", type=Path, help="the report (default: RESULTS/vs_<preset>.md)")
    args = parser.parse_args(argv)
    text = compare(args.results, args.preset)
    out = args.out or args.results / f"vs_{args.preset}.md"
    atomic.write_text(out, text)
    print(text + f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
