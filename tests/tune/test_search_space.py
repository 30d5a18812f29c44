"""Search spaces: the shipped files load, define-by-run keeps top_n <= K, and bad files fail naming the key."""

import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest

from hmh.config import ConfigError, load_config
from hmh.errors import HmhError
from tune.space import DefineByRun, SpaceError, apply_params, config_field_types, load_space

REPO = Path(__file__).resolve().parents[2]
SPACES = REPO / "tune" / "spaces"
CONFIGS = REPO / "tune" / "configs"


def write_space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize(("space", "config"), [("default", "demo.yaml"), ("default", "blurhand.yaml"),
                                               ("paper", "blurhand.yaml"), ("default", "cpu")])
def test_shipped_spaces_load_against_shipped_configs(space: str, config: str) -> None:
    cfg = load_config(CONFIGS / config if config.endswith(".yaml") else config)
    loaded = load_space(SPACES / f"{space}.yaml", cfg)
    assert loaded.keys[:2] == ["model.num_hypotheses", "selection.top_n"]
    assert {"loss.diversity_alpha", "loss.jrc_alpha", "loss.joint_3d", "loss.proj", "loss.mano", "loss.aux",
            "loss.diversity", "optim.lr"} <= set(loaded.keys)


def test_define_by_run_keeps_top_n_within_k_and_every_config_valid() -> None:
    cfg = load_config(CONFIGS / "demo.yaml")
    space = load_space(SPACES / "default.yaml", cfg)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    define = DefineByRun(space)
    seen_k = set()
    for _ in range(25):
        trial = study.ask()
        define(trial)
        params = trial.params
        assert 1 <= params["selection.top_n"] <= params["model.num_hypotheses"]
        seen_k.add(params["model.num_hypotheses"])
        built = apply_params(cfg, params)
        assert built.selection.top_n == params["selection.top_n"]
        study.tell(trial, float(params["model.num_hypotheses"]))
    assert seen_k == {2, 4, 8}


def test_yaml_1e_notation_and_references_to_the_config(tmp_path: Path) -> None:
    path = write_space(tmp_path, """
        parameters:
          optim.lr: {type: loguniform, low: 1e-5, high: 1e-3}
          selection.top_n: {type: int, low: 1, high: model.num_hypotheses}
        initial_points:
          - {optim.lr: 1e-4, selection.top_n: 3}
    """)
    space = load_space(path, load_config("cpu"))  # K = 4 in the cpu preset, not searched here
    assert space.params[0].low == 1e-5
    assert space.bounds(space.params[1], {}) == (1, 4)
    assert space.initial_points == ({"optim.lr": 1e-4, "selection.top_n": 3},)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("model.num_hypothesis: {type: int, low: 1, high: 4}", "model.num_hypothesis"),
        ("nonsense: {type: int, low: 1, high: 4}", "nonsense"),
        ("model.num_hypotheses: {type: float, low: 1, high: 4}", "model.num_hypotheses"),
        ("optim.lr: {type: int, low: 1, high: 4}", "optim.lr"),
        ("optim.lr: {type: loguniform, low: 0.0, high: 1.0e-3}", "optim.lr"),
        ("optim.lr: {type: uniform, low: 1.0e-4, high: 1.0e-3}", "optim.lr"),
        ("optim.lr: {type: float, low: 1.0e-3, high: 1.0e-4}", "optim.lr"),
        ("optim.lr: {type: float, low: 1.0e-4}", "optim.lr"),
        ("optim.lr: {type: float, low: 1.0e-4, high: 1.0e-3, sigma: 2}", "sigma"),
        ("loss.jrc_alpha: {type: float, low: 0.0, high: 1.5}", "loss.jrc_alpha"),
        ("loss.mano: {type: float, low: -1.0, high: 1.0}", "loss.mano"),
        ("model.backbone: {type: categorical, values: [resnet18, vgg16]}", "model.backbone"),
        ("model.backbone: {type: categorical, values: []}", "model.backbone"),
        ("selection.top_n: {type: int, low: 1, high: 8}", "selection.top_n"),  # K = 4 in the cpu preset
        ("selection.top_n: {type: int, low: 1, high: loss.bogus}", "loss.bogus"),
        ("search.num_samples: {type: int, low: 1, high: 4}", "search.num_samples"),
        ("train.generation_epochs: {type: int, low: 1, high: 4}", "train.generation_epochs"),
        ("optim.milestones: {type: categorical, values: [[1], [2]]}", "optim.milestones"),
        ("model.num_hypotheses: {type: categorical, values: [1, 2, 4]}", "selection.top_n"),  # base top_n = 2
    ],
)
def test_invalid_parameters_name_the_key(tmp_path: Path, text: str, names: str) -> None:
    path = write_space(tmp_path, "parameters:\n  " + text + "\n")
    with pytest.raises(SpaceError, match=names.replace(".", r"\.")) as info:
        load_space(path, load_config("cpu"))
    assert str(path) in str(info.value)
    assert isinstance(info.value, HmhError)


def test_conditional_bounds_are_checked_per_value_of_the_reference(tmp_path: Path) -> None:
    path = write_space(tmp_path, """
        parameters:
          model.num_hypotheses: {type: categorical, values: [2, 8]}
          selection.top_n: {type: int, low: 3, high: model.num_hypotheses}
    """)
    with pytest.raises(SpaceError, match=r"selection\.top_n.*low 3 > high 2 when model\.num_hypotheses=2"):
        load_space(path, load_config("cpu"))


def test_reference_to_a_parameter_listed_later_is_rejected(tmp_path: Path) -> None:
    path = write_space(tmp_path, """
        parameters:
          selection.top_n: {type: int, low: 1, high: model.num_hypotheses}
          model.num_hypotheses: {type: categorical, values: [2, 8]}
    """)
    with pytest.raises(SpaceError, match=r"selection\.top_n.*searched after it"):
        load_space(path, load_config("cpu"))


@pytest.mark.parametrize(
    ("points", "names"),
    [
        ("[{optim.lr: 1.0}]", "optim.lr"),
        ("[{loss.aux: 1.0}]", "loss.aux"),
        ("[{selection.top_n: 2}]", "model.num_hypotheses"),
        ("[{model.num_hypotheses: 2, selection.top_n: 4}]", "selection.top_n"),
        ("{optim.lr: 1.0e-4}", "initial_points"),
    ],
)
def test_invalid_initial_points_name_the_key(tmp_path: Path, points: str, names: str) -> None:
    path = write_space(tmp_path, f"""
        parameters:
          model.num_hypotheses: {{type: categorical, values: [2, 4]}}
          selection.top_n: {{type: int, low: 1, high: model.num_hypotheses}}
          optim.lr: {{type: loguniform, low: 1.0e-5, high: 1.0e-3}}
        initial_points: {points}
    """)
    with pytest.raises(SpaceError, match=names.replace(".", r"\.")):
        load_space(path, load_config("cpu"))


@pytest.mark.parametrize("text", ["parameters: {}", "[1, 2]", "parameters:\n  optim.lr: 3", "params: {}", ": :"])
def test_malformed_files_are_rejected(tmp_path: Path, text: str) -> None:
    with pytest.raises(SpaceError, match=str(tmp_path / "space.yaml")):
        load_space(write_space(tmp_path, text), load_config("cpu"))


@pytest.mark.parametrize(("data", "says"), [
    ("parameters:\n  optim.lr: {type: loguniform, low: 1e-5, high: 1e-3}  # caf\xe9\n".encode("latin-1"),
     "not UTF-8"),
    ("parameters: {}\n".encode("utf-16"), "not UTF-8"),
    (b"parameters:\n\t optim.lr: 1\n", "line 2, column 1"),
    (b"parameters:\n  ? [a]\n  : 1\n", "unhashable key"),
    (b"parameters: " + b"[" * 50000 + b"]" * 50000, "nested deeper than 16 levels"),
    (b"parameters:\n  loss.jrc_alpha: {type: float, low: [1], high: 2}\n", "'low' must be a number"),
    (b"parameters:\n  selection.top_n: {type: int, low: {a: 1}, high: 2}\n", "'low' must be a number"),
    (b"parameters:\n  selection.top_n: {type: int, low: 1, high: 2, step: [1]}\n", "'step' must be"),
    (b"parameters:\n  selection.top_n: {type: int, low: 1, high: 2, step: .inf}\n", "'step' must be"),
])
def test_undecodable_or_malformed_files_fail_in_one_line_naming_the_file(tmp_path: Path, data: bytes,
                                                                         says: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_bytes(data)
    with pytest.raises(SpaceError) as info:
        load_space(path, load_config("cpu"))
    message = str(info.value)
    assert message.startswith(f"{path}: ") and says in message and "\n" not in message


def test_to_yaml_round_trips(tmp_path: Path) -> None:
    cfg = load_config("paper")
    space = load_space(SPACES / "paper.yaml", cfg)
    again = load_space(write_space(tmp_path, space.to_yaml()), cfg)
    assert again.params == space.params and again.initial_points == space.initial_points


def test_field_types_cover_the_config() -> None:
    types = config_field_types()
    assert types["model.num_hypotheses"] is int and types["loss.jrc_alpha"] is float
    assert types["selection.msf"] is bool and types["model.backbone"] is str


def test_apply_params_names_the_invalid_key() -> None:
    with pytest.raises(ConfigError, match=r"selection\.top_n"):
        apply_params(load_config("cpu"), {"selection.top_n": 9})


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--set", "data.val_fraction=0"], "data.val_fraction"),
        (["--set", "search.grace_period=9"], "search.grace_period"),
        (["--set", "search.num_workers=0"], "search.num_workers"),
        (["--set", "model.num_hypotheses=1"], "selection.top_n"),
        (["--space", "SPACE"], "loss.jrc_alpha"),
        (["--set", "search.objectives=mpjpe_ms", "--set", "train.selection_epochs=0"], "train.selection_epochs=0"),
        (["--set", "search.objectives=mpjpe_ms", "--set", "search.pick=max_ms=none"], "search.pick='max_ms=none'"),
        (["--set", "search.scheduler=hyperband"], "search.scheduler='hyperband'"),
        (["--set", "search.sampler=gp"], "search.sampler='gp'"),
        (["--set", "search.scheduler=brief_then_finish", "--set", "search.round_trials=0"], "search.round_trials=0"),
        (["--set", "search.objectives=mpjpe_ms", "--set", "search.scheduler=brief_then_finish"],
         "search.scheduler='brief_then_finish' is invalid with search.objectives='mpjpe_ms'"),
    ],
)
def test_search_rejects_bad_config_or_space_before_ray_starts(tmp_path: Path, args: list[str], names: str) -> None:
    bad_space = write_space(tmp_path, "parameters:\n  loss.jrc_alpha: {type: float, low: 0.5, high: 2.0}\n")
    args = [str(bad_space) if a == "SPACE" else a for a in args]
    code = textwrap.dedent(f"""
        import sys
        from tune.search import build_parser, run_args
        from tune.cli import main
        status = main("tune.search", run_args, build_parser(), {["--config", str(CONFIGS / "demo.yaml"), "--set",
                                                             f"search.storage_path={tmp_path}", *args]!r})
        assert "ray" not in sys.modules, "Ray was imported before the config was checked"
        sys.exit(status)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert names in proc.stderr
    assert not (tmp_path / "demo").exists()


def test_two_objective_demo_loads_and_a_resume_may_change_only_the_pick(tmp_path: Path) -> None:
    from hmh.config import save_config
    from tune.search import load_experiment

    config = str(CONFIGS / "demo_pareto.yaml")
    storage = f"search.storage_path={tmp_path}"
    exp = load_experiment(config, [storage, "search.grace_period=9"])  # no ASHA: its grace period is not used
    assert exp.two_objectives and exp.objectives == ("val/objective_mpjpe_current", "cost/ms_per_image_b1")
    assert exp.space.keys == ["model.num_hypotheses", "selection.top_n", "optim.lr"]
    assert not load_experiment(str(CONFIGS / "demo.yaml"), [storage]).two_objectives
    exp = load_experiment(config, [storage])
    save_config(exp.cfg, exp.paths.config)
    exp.paths.space.write_text(exp.space.to_yaml())
    again = load_experiment(config, [storage, "search.pick=max_ms=20"], resume=True)
    assert again.cfg.search.pick == "max_ms=20"
    with pytest.raises(ConfigError, match="optim.lr"):
        load_experiment(config, [storage, "optim.lr=0.1"], resume=True)


def test_the_sampler_follows_the_search_settings_and_blurhand_uses_the_measured_ones() -> None:
    """``search.sampler`` and ``search.tpe_*`` reach Optuna; the real-data search takes the settings the
    search-efficiency benchmark measured best (4 start-up trials, multivariate, ASHA's first rung at the first
    selection epoch)."""
    import optuna

    from tune.search import optuna_sampler

    default = optuna_sampler(load_config("cpu").search)
    assert (default._n_startup_trials, default._multivariate) == (10, False)  # Optuna's defaults
    assert isinstance(optuna_sampler(load_config("cpu", ["search.sampler=random"]).search),
                      optuna.samplers.RandomSampler)
    cfg = load_config(CONFIGS / "blurhand.yaml")
    sampler = optuna_sampler(cfg.search)
    assert (sampler._n_startup_trials, sampler._multivariate) == (4, True)
    assert cfg.search.grace_period == cfg.train.generation_epochs + 1
