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
