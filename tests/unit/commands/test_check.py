"""``logrouter check``: bindings per sink on stdout, exit 0; issues on stderr, exit 78."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_CONFIG = ROOT / "config" / "routing.toml"


def check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LOGROUTER_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "logrouter", "check", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=environment,
    )


def test_default_config_prints_bindings_per_sink() -> None:
    """The shipped config checks out: exit 0, each sink with its queue and bindings."""
    result = check(str(DEFAULT_CONFIG))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "sink errors" in out and "sink console" in out and "sink archive" in out
    assert out.index("sink errors") < out.index("sink console") < out.index("sink archive")
    assert "queue     logrouter.errors (classic)" in out
    errors_block = out[out.index("sink errors") : out.index("sink console")]
    bindings = [line.strip() for line in errors_block.splitlines() if line.startswith("    ")]
    assert bindings == ["*.alert", "*.crit", "*.emerg", "*.err"]
    assert "    *.info\n" in out and "    #\n" in out
    assert "max_files 1000 (then the overflow file logrouter~overflow.jsonl)" in errors_block
    assert "guest:guest" not in out and "guest:***@" in out
    assert result.stderr == ""


def test_superset_bindings_are_flagged(tmp_path: Path) -> None:
    """A selector AMQP cannot express says its bindings are a superset filtered by the sink."""
    config = tmp_path / "routing.toml"
    config.write_text('[sinks.c]\ntype = "console"\nmatch = "*.info;mail.none"\n')
    result = check(str(config))
    assert result.returncode == 0, result.stderr
    assert "superset" in result.stdout and "the sink filters the rest" in result.stdout


def test_bad_config_exits_78_with_file_line_and_key(tmp_path: Path) -> None:
    """A broken config prints file:line: sinks.NAME.KEY: message on stderr and exits 78."""
    config = tmp_path / "routing.toml"
    config.write_text('[sinks.errors]\ntype = "file"\nmatch = "*.eror"\npath = "/tmp/x.log"\n')
    result = check(str(config))
    assert result.returncode == 78
    assert f"{config}:3: sinks.errors.match: unknown severity 'eror'" in result.stderr
    assert "allowed: emerg" in result.stderr
    assert result.stdout == ""


def test_every_issue_is_printed(tmp_path: Path) -> None:
    """All problems are listed, one per line, then a summary line."""
    config = tmp_path / "routing.toml"
    config.write_text('[sinks.a]\ntype = "pipe"\nmatch = "*.err"\n[sinks.b]\ntype = "console"\n')
    result = check(str(config))
    assert result.returncode == 78
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"{config}:2: sinks.a.type: unknown sink type")
    assert lines[1].startswith(f"{config}:4: sinks.b.match: missing")
    assert "2 problems" in lines[-1]


def test_missing_file_exits_78_naming_the_path(tmp_path: Path) -> None:
    """A config path that does not exist exits 78 and names the path."""
    missing = tmp_path / "absent.toml"
    result = check(str(missing))
    assert result.returncode == 78
    assert f"{missing}: cannot read config" in result.stderr


def test_unreadable_path_exits_78(tmp_path: Path) -> None:
    """A path that cannot be read as a file (a directory) exits 78 and names it."""
    result = check(str(tmp_path))
    assert result.returncode == 78
    assert f"{tmp_path}: cannot read config" in result.stderr


def test_not_toml_exits_78(tmp_path: Path) -> None:
    """A file that is not TOML exits 78 with the line of the syntax error."""
    config = tmp_path / "routing.toml"
    config.write_text('[sinks.a]\ntype = "file"\nthis is not toml\n')
    result = check(str(config))
    assert result.returncode == 78
    assert f"{config}:3: not valid TOML" in result.stderr


def test_url_option_replaces_broker_url_and_hides_password() -> None:
    """--url takes the place of the config's URL; its password is not printed."""
    result = check(
        str(DEFAULT_CONFIG), "--url", "amqp://ops:s3cret@mq1/%2F amqp://ops:s3cret@mq2/%2F"
    )
    assert result.returncode == 0, result.stderr
    assert "amqp://ops:***@mq1/%2F amqp://ops:***@mq2/%2F" in result.stdout
    assert "s3cret" not in result.stdout + result.stderr


def test_bad_url_option_exits_78() -> None:
    """A --url that is not an AMQP URL is a config error (78), password hidden."""
    result = check(str(DEFAULT_CONFIG), "--url", "http://ops:s3cret@mq1/")
    assert result.returncode == 78
    assert "LOGROUTER_URL" in result.stderr and "amqp:// or amqps://" in result.stderr
    assert "s3cret" not in result.stderr


def test_config_from_environment(tmp_path: Path) -> None:
    """Without an argument, check reads $LOGROUTER_CONFIG."""
    config = tmp_path / "env.toml"
    config.write_text('[sinks.only]\ntype = "console"\nmatch = "auth,authpriv.*"\n')
    result = check(env={"LOGROUTER_CONFIG": str(config)})
    assert result.returncode == 0, result.stderr
    assert "sink only" in result.stdout and "    auth.*\n    authpriv.*\n" in result.stdout


def test_diff_with_bad_config_still_exits_78(tmp_path: Path) -> None:
    """--diff never reaches the broker with a broken config: exit 78."""
    config = tmp_path / "routing.toml"
    config.write_text("[sinks.a]\n")
    result = check(str(config), "--diff")
    assert result.returncode == 78


def _two_sink_config(tmp_path: Path) -> Path:
    path = tmp_path / "routing.toml"
    path.write_text(
        "[sinks.errors]\n"
        'type = "file"\nmatch = "*.err"\npath = "/srv/logs/{facility}.log"\n\n'
        "[sinks.archive]\n"
        'type = "archive"\nmatch = "*.*"\ndir = "/var/log/logrouter/archive"\n'
    )
    return path


def test_sandbox_issue_names_the_read_only_dir_and_the_readwritepaths_fix(
    tmp_path: Path,
) -> None:
    """Under the unit (LOGS_DIRECTORY set), output on a read-only mount: the fix is named."""
    from logrouter.commands.check import sandbox_issues
    from logrouter.config import load_config

    config = load_config(_two_sink_config(tmp_path))
    env = {"LOGS_DIRECTORY": "/var/log/logrouter", "STATE_DIRECTORY": "/var/lib/logrouter"}

    def read_only(path: Path) -> bool:
        return not str(path).startswith("/var/log/logrouter")

    issues = sandbox_issues(config, env, read_only)
    assert len(issues) == 1
    assert "sink errors: /srv/logs is read-only here (EROFS)" in issues[0]
    assert "ReadWritePaths=/srv/logs" in issues[0]
    assert "systemctl edit logrouter-sink@errors.service" in issues[0]
    assert sandbox_issues(config, env, lambda _path: False) == []


def test_check_exits_78_when_a_sink_cannot_write_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`logrouter check` refuses (exit 78) a config whose output is on a read-only mount."""
    from logrouter import cli
    from logrouter.commands import check as check_command

    monkeypatch.setattr(check_command, "read_only", lambda path: str(path) == "/srv/logs")
    monkeypatch.setenv("LOGS_DIRECTORY", "/var/log/logrouter")
    code = cli.main(["check", str(_two_sink_config(tmp_path))])
    err = capsys.readouterr().err
    assert code == 78
    assert "ReadWritePaths=/srv/logs" in err
