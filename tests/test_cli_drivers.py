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
