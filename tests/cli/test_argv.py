"""The light parser (cli/argv.py) reads what argparse reads, the same way, or hands over to it."""

from __future__ import annotations

import argparse

import pytest

from provisiond.cli import argv as cli_argv
from provisiond.cli import commands as cli

# Forms people type, for every kind of argument the commands declare.
SAME = [
    ["list"], ["--json", "list"], ["list", "--json"], ["-q", "warm", "x"], ["warm", "x", "-q", "-v"],
    ["--socket", "/tmp/s", "--home", "/tmp/h", "status"], ["--socket=/tmp/s", "status", "--json"],
    ["warm", "x", "--update"], ["show", "x", "--lock"], ["create", "-f", "env.yml", "-n", "t", "--force"],
    ["create", "--file=env.yml", "--name", "t"], ["export", "x", "--format", "explicit", "-f", "out.txt"],
    ["export", "x"], ["export", "x", "--explicit", "--no-builds"], ["clone", "a", "b"], ["gc", "--cache-budget", "20G", "--dry-run"],
    ["gc", "--older-than", "3.5"], ["bundle", "a", "b", "-o", "out.tar"], ["unbundle", "x.tar", "--home", "/h"],
    ["allow"], ["allow", "some/dir"], ["activate", "x", "--shell", "fish"], ["deactivate"], ["hook", "zsh"],
    ["daemon", "install-units", "--dir", "d"], ["watch", "d", "--no-warm", "-n", "nm"], ["doctor", "--repair"],
    ["run", "x", "ls", "-l"], ["check", "-"], ["completion", "fish"],
]


def _argparse(argv: list[str]) -> dict:
    at = cli._command_in(argv)
    assert at is not None
    return vars(cli.parser(argv[at]).parse_args(argv, namespace=cli_argv.Args()))


@pytest.mark.parametrize("argv", SAME, ids=" ".join)
def test_the_light_parser_agrees_with_argparse(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    used = []
    real = cli.parser
    monkeypatch.setattr(cli, "parser", lambda command=None: used.append(command) or real(command))
    light = vars(cli.parse(argv))
    assert used == [], "argparse was needed"
    assert light == _argparse(argv)


@pytest.mark.parametrize("argv", [["warm", "x", "--upd"], ["create", "-f"], ["export", "x", "--format", "xml"],
                                  ["gc", "--cache-budget", "lots"], ["warm"], ["clone", "a"], ["warm", "x", "y"],
                                  ["-qv", "list"], ["list", "--json=1"]], ids=" ".join)
def test_anything_else_goes_to_argparse(argv: list[str], monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    used = []
    real = cli.parser
    monkeypatch.setattr(cli, "parser", lambda command=None: used.append(command) or real(command))
    try:
        args = vars(cli.parse(argv))
    except SystemExit as exc:
        assert exc.code == 2 and "usage: provisionctl" in capsys.readouterr().err
    else:
        assert args == _argparse(argv)  # an abbreviation, or -qv: argparse reads it
    assert used and used[0] is not None, "only the subcommand's parser is built"


def test_global_flags_before_or_after_the_command() -> None:
    for argv in (["--json", "-q", "-v", "list"], ["list", "--json", "-q", "-v"], ["-v", "list", "--json", "-q"]):
        args = cli.parse(argv)
        assert (args.json, args.quiet, args.verbose) == (True, True, 1), argv
    args = cli.parse(["list"])
    assert (args.json, args.quiet, args.verbose) == (False, False, 0)


def test_nothing_after_run_double_dash_is_parsed() -> None:
    for argv, cmd in ((["run", "x", "--", "python", "--json", "-v", "list"], ["python", "--json", "-v", "list"]),
                      (["run", "x", "--json", "--", "ls", "--", "-q"], ["ls", "--", "-q"]),
                      (["--json", "run", "x", "--", "--help"], ["--help"]),
                      (["run", "x", "--", "--version"], ["--version"])):
        args = cli.parse(argv)
        assert (args.command, args.target, args.cmd) == ("run", "x", cmd), argv
    assert cli.parse(["run", "x", "--json", "--", "ls"]).json is True


def test_version_and_help_need_no_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.parse(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("provisionctl ")
    with pytest.raises(SystemExit):
        cli.parse(["warm", "-h"])
    out = capsys.readouterr().out
    assert "usage: provisionctl warm" in out and "--json" in out and "-q" in out


def test_a_declaration_it_does_not_know_sends_the_command_to_argparse() -> None:
    p = cli_argv.Parser()
    group = p.add_mutually_exclusive_group()
    group.add_argument("--a", action="store_true")
    with pytest.raises(cli_argv.Fallback):
        p.parse([], cli_argv.Args())
    q = cli_argv.Parser()
    q.add_argument("--many", nargs=2)
    with pytest.raises(cli_argv.Fallback):
        q.parse([], cli_argv.Args())
    assert argparse.REMAINDER == cli_argv.REMAINDER and argparse.SUPPRESS == cli_argv.SUPPRESS
