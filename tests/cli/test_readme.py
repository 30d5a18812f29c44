"""The README's commands exist as written, and every relative link of the README and docs/ points to a file.

Commands: each ``hmh ...`` in the README's command table and code blocks names a real command (its ``--help``
exits 0, run in-process) and uses only options that command has; a code-block line is parsed whole, as the user
would type it. Each ``python -m tune.<verb>`` runs its ``--help`` in a subprocess.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from hmh import cli

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.S | re.M)
TABLE_SPAN = re.compile(r"`((?:hmh|python -m tune\.)[^`]*)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
DRIVERS = {"search": "tune.search", "study": "tune.study"}  # hmh commands that hand their arguments to tune


def code_block_commands(text: str) -> list[str]:
    """Lines of fenced code blocks that start with ``hmh`` or ``python -m tune.``; continuations joined and
    ``# comments`` dropped."""
    commands = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line.startswith(("hmh ", "python -m tune.")) or line == "hmh":
                commands.append(line)
    return commands


def table_commands(text: str) -> list[str]:
    """The backticked ``hmh ...`` / ``python -m tune....`` spans of the README's table rows."""
    return [span for line in text.splitlines() if line.startswith("|") for span in TABLE_SPAN.findall(line)]


def subparsers_of(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def resolve(tokens: list[str]) -> tuple[list[str], argparse.ArgumentParser, list[str]]:
    """``hmh`` tokens -> (the command path, e.g. ["mano", "build"], its parser, the remaining arguments); the
    parser of ``hmh search``/``hmh study`` is the tune driver's own."""
    parser, path = cli.build_parser(), []
    rest = tokens[1:]
    while rest and rest[0] in subparsers_of(parser):
        parser = subparsers_of(parser)[rest[0]]
        path.append(rest.pop(0))
    if path and path[0] in DRIVERS:
        parser = importlib.import_module(DRIVERS[path[0]]).build_parser(prog=f"hmh {path[0]}")
    return path, parser, rest


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {name for action in parser._actions for name in action.option_strings}


README_TEXT = README.read_text(encoding="utf-8")
HMH_BLOCK = [c for c in code_block_commands(README_TEXT) if c.startswith("hmh")]
HMH_TABLE = [c for c in table_commands(README_TEXT) if c.startswith("hmh")]
TUNE_MODULES = sorted({m for c in code_block_commands(README_TEXT) + table_commands(README_TEXT)
                       for m in re.findall(r"python -m (tune\.\w+)", c)})


def test_the_readme_names_commands() -> None:
    assert len(HMH_BLOCK) >= 5 and len(HMH_TABLE) >= 10 and "tune.train" in TUNE_MODULES


@pytest.mark.parametrize("command", sorted(set(HMH_BLOCK + HMH_TABLE)))
def test_hmh_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    path, _, _ = resolve(command.split())
    with pytest.raises(SystemExit) as stop:
        cli.main([*path, "--help"])
    assert stop.value.code == 0, f"{command}: `hmh {' '.join(path)} --help` exited {stop.value.code}"
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("command", sorted(set(HMH_BLOCK + HMH_TABLE)))
def test_hmh_command_options_exist(command: str) -> None:
    path, parser, rest = resolve(command.split())
    unknown = set(OPTION.findall(" ".join(rest))) - option_strings(parser)
    assert not unknown, f"{command}: hmh {' '.join(path)} has no option {sorted(unknown)}"


@pytest.mark.parametrize("command", HMH_BLOCK)
def test_code_block_command_parses(command: str) -> None:
    path, parser, rest = resolve(shlex.split(command))
    try:
        parser.parse_args(rest)
    except SystemExit as stop:  # argparse's way of refusing, or of ending after --help
        if stop.code == 0 and "--help" in rest:
            return
        pytest.fail(f"{command}: hmh {' '.join(path)} refuses {rest} (exit {stop.code})")


@pytest.mark.parametrize("module", TUNE_MODULES)
def test_tune_driver_has_help(module: str) -> None:
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"python -m {module}" in done.stdout


def relative_links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return [link for link in LINK.findall(text) if not re.match(r"[a-z]+:|#", link)]


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_exist(page: Path) -> None:
    missing = [link for link in relative_links(page) if not (page.parent / link.split("#")[0]).exists()]
    assert not missing, f"{page.relative_to(ROOT)}: links to missing files {missing}"


def test_a_missing_link_is_caught(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("[a](there.md) [b](https://example.org) [c](#here)\n```\n[d](not-a-link.md)\n```\n")
    assert relative_links(page) == ["there.md"]
    assert not (tmp_path / "there.md").exists()
