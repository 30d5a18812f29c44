"""``hmh search`` / ``hmh study``: the Ray drivers under the one CLI, with their own arguments, help and errors."""

import pytest

from hmh.cli import main


@pytest.mark.parametrize("command, flag", [("search", "--space"), ("study", "--ks")])
def test_help_is_the_drivers_own(command, flag, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: hmh {command} ") and flag in out and "--verbose" in out


@pytest.mark.parametrize("command", ["search", "study"])
def test_a_bad_config_is_one_line_error_before_ray_starts(command, tmp_path, capsys):
    import ray

    missing = tmp_path / "missing.yaml"
    assert main([command, "--config", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hmh {command}: error: ") and "missing.yaml" in err and "\n" not in err
    assert not ray.is_initialized()


def test_an_unknown_option_is_the_drivers_error(capsys):
    with pytest.raises(SystemExit) as done:
        main(["search", "--no-such-option"])
    assert done.value.code == 2
    assert "hmh search: error: unrecognized arguments: --no-such-option" in capsys.readouterr().err


def test_study_arms_train_a_selector_only_where_asked():
    """``--select-ks``: the other arms train the generation stage alone (Table 4.2 reads best of K); the no-MSF
    arm needs its partner's selector; a K outside ``--ks`` is refused naming the option."""
    from hmh.config import ConfigError, load_config
    from tune.study import study_arms

    cfg = load_config("bench")  # top-2
    every = {a.name: a.select for a in study_arms(cfg, [1, 4, 8, 16], 8)}
    assert every == {"k1": False, "k4": True, "k8": True, "k8-no-msf": True, "k16": True}
    asked = {a.name: a.select for a in study_arms(cfg, [1, 4, 8, 16], 8, [8])}
    assert asked == {"k1": False, "k4": False, "k8": True, "k8-no-msf": True, "k16": False}
    with pytest.raises(ConfigError, match="--msf-k 8: expected one of --ks .and of --select-ks"):
        study_arms(cfg, [1, 4, 8, 16], 8, [4])
    with pytest.raises(ConfigError, match="--select-ks 32: expected some of --ks 1 4 8 16"):
        study_arms(cfg, [1, 4, 8, 16], 8, [32])


def test_a_selector_option_adds_an_arm_on_each_selecting_arms_generator():
    """``--selector-set``: ``k<K>-<name>`` after every ``k<K>`` that trains its own selector, on its generator, with
    those settings on top of the arm's own; generation keys, the partner's top-n, a setting that trains no selector,
    a bad value and a bad name are refused naming the option."""
    from hmh.config import ConfigError, load_config
    from tune.study import study_arms

    cfg = load_config("bench")  # top-2
    arms = study_arms(cfg, [1, 4, 8], 8, None, "evidence", ["selection.evidence=both", "loss.rank_weight=0"])
    assert [a.name for a in arms] == ["k1", "k4", "k4-evidence", "k8", "k8-evidence", "k8-no-msf"]
    option = arms[2]
    assert (option.generator_of, option.num_hypotheses, option.top_n, option.select) == ("k4", 4, 2, True)
    params = option.params(cfg)
    assert params["selection.evidence"] == "both" and params["loss.rank_weight"] == 0
    assert params["model.num_hypotheses"] == 4 and "selection.evidence" not in arms[1].params(cfg)
    for bad, message in [(["optim.lr=0.1"], "--selector-set optim.lr: the option's arms keep their partner's"),
                         (["selection.top_n=1"], "--selector-set selection.top_n: the option's arms keep"),
                         (["selection.rule=reprojection"], "k4-evidence would train no selector .selection.rule"),
                         (["selection.evidence=nope"], "selection.evidence")]:
        with pytest.raises(ConfigError, match=message):
            study_arms(cfg, [1, 4, 8], 8, None, "evidence", bad)
    with pytest.raises(ConfigError, match="--selector-name 'no-msf'"):
        study_arms(cfg, [1, 4, 8], 8, None, "no-msf", ["selection.evidence=both"])
