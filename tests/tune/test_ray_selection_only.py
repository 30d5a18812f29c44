"""A selection-only search on a local Ray (2 CPUs), tiny config: ``search.generator`` names hmh train's generation
checkpoint; every trial and the final retrain train the selection stage alone on that generator, frozen, and Optuna
is told each trial once (tune.searcher). Its checks before Ray starts: tests/tune/test_tune_selection_only.py."""

from pathlib import Path

import pandas as pd
import pytest
from test_ray import assert_each_trial_told_once, ray_address, write_experiment  # noqa: F401

pytestmark = [pytest.mark.ray, pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),
              pytest.mark.usefixtures("ray_address")]  # test_ray's local Ray, started for this module

SELECTION_SPACE = """\
parameters:
  optim.selection_lr: {type: loguniform, low: 1.0e-9, high: 1.0e-2}
  loss.jrc_alpha: {type: float, low: 0.0, high: 1.0}
initial_points:
  - {optim.selection_lr: 1.0e-3, loss.jrc_alpha: 0.5}
  - {optim.selection_lr: 1.0e-9, loss.jrc_alpha: 0.5}
"""


def test_a_selection_only_search_trains_selectors_on_the_given_generator(tmp_path: Path) -> None:
    import torch

    from hmh.config import load_config
    from hmh.models.checkpoint import load_checkpoint
    from hmh.results.tables import FINAL_SCHEMA, read_table
    from hmh.train.runner import run_training
    from tune.search import load_experiment, run_search

    config, space = write_experiment(tmp_path, SELECTION_SPACE)
    run_training(load_config(config, ["train.generation_epochs=1", "train.selection_epochs=0"]), tmp_path / "gen",
                 echo=lambda line: None, progress=False)
    given = tmp_path / "gen" / "checkpoints" / "generation_best.pt"  # a file, as hmh train keeps it
    exp = load_experiment(str(config), [f"search.generator={given}", "train.selection_epochs=2",
                                        "search.final_retrain=true"], str(space))
    assert run_search(exp) == 0

    trials = pd.read_parquet(exp.paths.trials)
    assert len(trials) == 2 and set(trials["status"]) == {"TERMINATED"}
    assert set(trials["epochs_total"]) == {4}  # the selection epochs count on after train.generation_epochs = 2
    iterations = pd.read_parquet(exp.paths.iterations)
    assert set(iterations["stage"]) == {"selection"} and set(iterations["trial_epoch"]) <= {3, 4}
    assert_each_trial_told_once(exp.paths, trials)
    runs = Path(exp.paths.train_storage)
    assert not list(runs.glob("*-generation"))  # no trial, nor the final retrain, trained a generator
    assert sorted(p.name for p in runs.glob("*-selection")) == sorted([*(f"{t}-selection" for t in trials["trial_id"]),
                                                                      "final-selection"])

    _, meta = read_table(exp.paths.final, FINAL_SCHEMA)
    final = load_checkpoint(meta["checkpoint"])
    source = load_checkpoint(given)
    assert final["stage"] == "selection" and final["model"]["selector"] is not None
    for name, weight in source["model"]["generator"].items():  # the given generator, frozen throughout
        assert torch.equal(final["model"]["generator"][name], weight), name
