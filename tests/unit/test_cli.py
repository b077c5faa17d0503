"""The command line: one ``--config FILE`` spelling everywhere, the old positional still works,
and an escaped LogrouterError becomes its message and exit code."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from logrouter import cli, exitcodes
from logrouter.commands import check
from logrouter.errors import LogrouterError

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = ROOT / "config" / "routing.toml"

EVERY_COMMAND = [
    ["check"],
    ["setup"],
    ["sink", "errors"],
    ["run"],
    ["tail"],
    ["send", "user.info", "hello"],
    ["stats"],
    ["reload"],
]


@pytest.mark.parametrize("words", EVERY_COMMAND, ids=lambda words: words[0])
def test_every_command_takes_config_flag(words: list[str], tmp_path: Path) -> None:
    """``--config FILE`` is accepted by every command and reaches the command as args.config."""
    config = tmp_path / "routing.toml"
    parser = cli.build_parser()
    args = parser.parse_args([words[0], "--config", str(config), *words[1:]])
    cli._settle_config(parser, args)
    assert args.config == config


@pytest.mark.parametrize("command", ["check", "setup", "run", "stats"])
def test_old_positional_config_still_works(command: str, tmp_path: Path) -> None:
    """``logrouter COMMAND CONFIG`` (the older spelling) means the same as --config CONFIG."""
    config = tmp_path / "routing.toml"
    parser = cli.build_parser()
    args = parser.parse_args([command, str(config)])
    cli._settle_config(parser, args)
    assert args.config == config


def test_sink_positional_config_after_name(tmp_path: Path) -> None:
    """``logrouter sink NAME CONFIG`` (what older systemd units run) still names the config."""
    config = tmp_path / "routing.toml"
    parser = cli.build_parser()
    args = parser.parse_args(["sink", "errors", str(config)])
    cli._settle_config(parser, args)
    assert (args.name, args.config) == ("errors", config)


def test_two_different_configs_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A positional config and a different --config is a usage error (exit 2) naming both."""
    with pytest.raises(SystemExit) as caught:
        cli.main(["check", "--config", str(tmp_path / "a.toml"), str(tmp_path / "b.toml")])
    assert caught.value.code == exitcodes.USAGE
    assert "two configs given" in capsys.readouterr().err


def test_check_runs_with_either_spelling(capsys: pytest.CaptureFixture[str]) -> None:
    """``check --config FILE`` and ``check FILE`` print the same report and exit 0."""
    assert cli.main(["check", "--config", str(DEFAULT_CONFIG)]) == exitcodes.OK
    flag = capsys.readouterr().out
    assert cli.main(["check", str(DEFAULT_CONFIG)]) == exitcodes.OK
    assert capsys.readouterr().out == flag
    assert "sink errors" in flag


def test_escaped_error_becomes_its_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A LogrouterError a command does not handle ends the run with its message and exit code."""

    class Refused(LogrouterError):
        exit_code = exitcodes.CONFIG

    def refuse(_args: argparse.Namespace) -> int:
        raise Refused("amqp://guest:secret@host/ refused")

    monkeypatch.setattr(check, "run", refuse)
    assert cli.main(["check", str(DEFAULT_CONFIG)]) == exitcodes.CONFIG
    err = capsys.readouterr().err
    assert "logrouter check: amqp://guest:***@host/ refused" in err
    assert "secret" not in err
