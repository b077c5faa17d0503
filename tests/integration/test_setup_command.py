"""``logrouter setup``: from a routing config to the broker's bindings, as an operator sees it."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pika
import pytest

from logrouter import cli
from logrouter.connection import BrokerSettings
from logrouter.selector import compile_selector
from logrouter.topology import setup
from tests.helpers.broker import broker_bindings, broker_queue


@dataclass
class Project:
    """A config file with unique exchange and sink names, and the broker URL."""

    url: str
    exchange: str
    tag: str
    path: Path

    def queue(self, sink: str) -> str:
        return f"logrouter.{sink}_{self.tag}"

    def write(self, sinks: dict[str, str], extra: dict[str, dict[str, str]] | None = None) -> Path:
        """Write console sinks ``{name: match}`` (name gets the tag appended)."""
        lines = ["[broker]", f'url = "{self.url}"', f'exchange = "{self.exchange}"', ""]
        for name, match in sinks.items():
            lines += [f"[sinks.{name}_{self.tag}]", 'type = "console"', f'match = "{match}"']
            lines += [f"{key} = {value}" for key, value in (extra or {}).get(name, {}).items()]
            lines.append("")
        self.path.write_text("\n".join(lines))
        return self.path


@pytest.fixture
def project(amqp_url: str, tmp_path: Path) -> Iterator[Project]:
    """A unique exchange; its recorded queues, AE and unrouted queue are deleted afterwards."""
    tag = uuid.uuid4().hex[:8]
    proj = Project(amqp_url, f"test.logs.{tag}", tag, tmp_path / "routing.toml")
    yield proj
    settings = BrokerSettings.from_url(amqp_url, exchange=proj.exchange)
    setup(settings, [], prune=True)  # deletes this exchange's queues, drops them from the record
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.queue_delete(f"{proj.exchange}.unrouted")
    for name in (proj.exchange, f"{proj.exchange}.unrouted"):
        channel.exchange_delete(name)
    connection.close()


def logrouter(*argv: str) -> int:
    return cli.main(list(argv))


def test_setup_binds_what_the_config_compiles_to(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 0, '+ key' per binding, and the broker's bindings are the compiled selector's."""
    path = project.write({"errors": "*.err", "everything": "*.*"})
    assert logrouter("setup", str(path)) == 0
    out = capsys.readouterr().out
    errors_bindings = set(compile_selector("*.err").bindings)
    for key in errors_bindings:
        assert f"  + {key}" in out
    assert f"{project.queue('everything')}:\n  + #" in out
    assert broker_bindings(project.queue("errors")) == {
        (project.exchange, key) for key in errors_bindings
    }
    assert broker_bindings(project.queue("everything")) == {(project.exchange, "#")}


def test_second_setup_reports_unchanged(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """Running setup again prints 'unchanged' for every queue and no binding change."""
    path = project.write({"errors": "*.err", "console": "*.=info"})
    assert logrouter("setup", str(path)) == 0
    capsys.readouterr()
    assert logrouter("setup", str(path)) == 0
    out = capsys.readouterr().out
    assert f"{project.queue('errors')}: unchanged" in out
    assert f"{project.queue('console')}: unchanged" in out
    assert "  + " not in out and "  - " not in out


def test_edited_selector_prints_and_applies_the_diff(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """Changing a match prints '+'/'-' lines and the broker ends with the new bindings only."""
    path = project.write({"mail": "mail.*"})
    assert logrouter("setup", str(path)) == 0
    project.write({"mail": "mail,auth.*"})
    capsys.readouterr()
    assert logrouter("setup", str(path)) == 0
    out = capsys.readouterr().out
    assert f"{project.queue('mail')}:\n  + auth.*\n" in out
    assert broker_bindings(project.queue("mail")) == {
        (project.exchange, "auth.*"),
        (project.exchange, "mail.*"),
    }
    project.write({"mail": "auth.*"})
    capsys.readouterr()
    assert logrouter("setup", str(path)) == 0
    assert f"{project.queue('mail')}:\n  - mail.*\n" in capsys.readouterr().out
    assert broker_bindings(project.queue("mail")) == {(project.exchange, "auth.*")}


def test_removed_sink_is_kept_then_pruned(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """A removed sink's queue survives setup and is deleted by setup --prune."""
    path = project.write({"keep": "*.*", "old": "*.err"})
    assert logrouter("setup", str(path)) == 0
    project.write({"keep": "*.*"})
    assert logrouter("setup", str(path)) == 0
    assert broker_queue(project.queue("old")) is not None
    capsys.readouterr()
    assert logrouter("setup", str(path), "--prune") == 0
    assert f"{project.queue('old')}: deleted" in capsys.readouterr().out
    assert broker_queue(project.queue("old")) is None
    assert broker_queue(project.queue("keep")) is not None


def test_quorum_sink_gets_a_quorum_queue(project: Project) -> None:
    """queue_type = "quorum" in the config makes a quorum queue with a delivery limit."""
    path = project.write({"ha": "*.*"}, extra={"ha": {"queue_type": '"quorum"'}})
    assert logrouter("setup", str(path)) == 0
    qtype, args = broker_queue(project.queue("ha")) or ("", "")
    assert qtype == "quorum"
    assert "x-delivery-limit" in args


def test_queue_type_change_exits_1_naming_queue_and_argument(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """Switching a sink to quorum after its queue exists: exit 1, queue and argument named."""
    path = project.write({"switch": "*.*"})
    assert logrouter("setup", str(path)) == 0
    project.write({"switch": "*.*"}, extra={"switch": {"queue_type": '"quorum"'}})
    capsys.readouterr()
    assert logrouter("setup", str(path)) == 1
    err = capsys.readouterr().err
    assert project.queue("switch") in err
    assert "x-queue-type" in err
    assert "Traceback" not in err


def test_bad_config_exits_78_with_the_issue(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown severity in a selector exits 78 and names the file on stderr."""
    path = project.write({"typo": "*.eror"})
    assert logrouter("setup", str(path)) == 78
    err = capsys.readouterr().err
    assert "routing.toml" in err
    assert "eror" in err


def test_unreachable_broker_exits_1_without_password(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """No broker at --url: exit 1, a clear message, and the password never printed."""
    path = project.write({"errors": "*.err"})
    url = "amqp://ops:hunter2-secret@127.0.0.1:1/%2F"
    assert logrouter("setup", str(path), "--url", url) == 1
    captured = capsys.readouterr()
    assert "hunter2-secret" not in captured.out + captured.err
    assert "unreachable" in captured.err
    assert "ops:***@127.0.0.1:1" in captured.err


def test_setup_runs_as_a_program(project: Project) -> None:
    """`python -m logrouter setup CONFIG` exits 0 and prints the per-queue result."""
    path = project.write({"prog": "*.warning"})
    result = subprocess.run(
        [sys.executable, "-m", "logrouter", "setup", str(path), "--url", project.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"{project.queue('prog')}:\n  + *.alert" in result.stdout
