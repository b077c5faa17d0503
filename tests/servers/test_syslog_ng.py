"""The whole host as a source: the real syslog-ng with the shipped destination
(config/syslog-ng/logrouter-amqp.conf) publishes `logger` messages into the exchange and
`logrouter run` files them with host, program, pid and the time they were logged.

syslog-ng runs as the current user in the foreground with its own persist, control, pid
files and disk buffer in a temp dir; its source is a unix-dgram socket of the test
(instead of journald and /dev/log), set through the same @define names the shipped
logrouter.conf uses.
"""

from __future__ import annotations

import calendar
import contextlib
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from logrouter.severity import SEVERITIES
from tests.helpers import rabbit_nodes
from tests.helpers.broker import wait_for
from tests.helpers.sinks import declare, lines_of, sink_env, start, stop, write_config

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "config" / "syslog-ng"
HOW_TO = (
    "syslog-ng with its amqp() module is needed: `make tools` installs it as root, or "
    "`apt-get install syslog-ng-core syslog-ng-mod-amqp` (and `logger` from bsdutils)."
)
#: `{ts} {host} {app}[{pid}] {facility}.{severity} {logger}: {msg}` (the default line)
LINE = re.compile(
    r"(?P<ts>\S+) (?P<host>\S+) (?P<app>\S+)\[(?P<pid>[^\]]*)\] "
    r"(?P<facility>[^.\s]+)\.(?P<severity>\S+) (?P<logger>\S+): (?P<msg>.*)"
)
CATCH_UP = 60.0


def require_syslog_ng() -> None:
    """Fail (never skip) with a how-to when syslog-ng, its amqp module or logger is missing."""
    missing = [tool for tool in ("syslog-ng", "logger") if shutil.which(tool) is None]
    if not missing and not list(Path("/usr/lib/syslog-ng").glob("*/libafamqp.so")):
        missing.append("syslog-ng-mod-amqp")
    if missing:
        pytest.fail(f"missing {' '.join(missing)}. {HOW_TO}", pytrace=False)


class SyslogNg:
    """A private syslog-ng: the shipped destination, a test socket as source s_src."""

    def __init__(self, base: Path, url: str, exchange: str, extra: str = "") -> None:
        self.base = base
        self.socket = base / "log"
        self.conf = base / "syslog-ng.conf"
        self.stderr = base / "syslog-ng.err"
        params = pika.URLParameters(url)
        defines = {
            "include-path": f"{SHIPPED}:/usr/share/syslog-ng/include/scl",
            "logrouter_amqp_host": params.host,
            "logrouter_amqp_port": str(params.port),
            "logrouter_amqp_vhost": params.virtual_host,
            "logrouter_amqp_user": params.credentials.username,  # type: ignore[attr-defined]
            "logrouter_amqp_password": params.credentials.password,  # type: ignore[attr-defined]
            "logrouter_exchange": exchange,
            "logrouter_buffer_dir": str(base / "buffer"),
            "logrouter_buffer_size": str(1 << 20),
            "logrouter_time_reopen": "1",
        }
        (base / "buffer").mkdir()
        lines = ["@version: 3.38"]
        lines += [f'@define {key} "{value}"' for key, value in defines.items()]
        lines.append(f'source s_src {{ unix-dgram("{self.socket}"); }};')
        lines.append('@include "logrouter-amqp.conf"')
        lines.append(extra)
        self.conf.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start in the foreground (a restart reuses persist file and disk buffer)."""
        self.socket.unlink(missing_ok=True)
        with open(self.stderr, "ab") as err:
            self.process = subprocess.Popen(
                [
                    "syslog-ng",
                    "-F",
                    "--no-caps",
                    "-f",
                    str(self.conf),
                    "-R",
                    str(self.base / "persist"),
                    "-c",
                    str(self.base / "ctl"),
                    "-p",
                    str(self.base / "pid"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        wait_for(lambda: self.socket.exists() or not self.running(), "syslog-ng's socket")
        assert self.running(), f"syslog-ng exited: {self.stderr.read_text()}"

    def queued(self) -> int:
        """Messages d_logrouter holds (its disk buffer), from ``syslog-ng-ctl stats``."""
        stats = subprocess.run(
            ["syslog-ng-ctl", "stats", "-c", str(self.base / "ctl")],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        for row in stats.splitlines():
            fields = row.split(";")
            if (
                fields[0] == "dst.amqp"
                and fields[1].startswith("d_logrouter")
                and fields[-2:-1] == ["queued"]
            ):
                return int(fields[-1])
        return -1

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def datagram(self, text: str) -> None:
        """A raw BSD syslog datagram (a program writing /dev/log itself)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(text.encode(), str(self.socket))


def logger(socket_path: Path, selector: str, tag: str, pid: int | None, text: str) -> None:
    """What a program on the host does: ``logger -u SOCKET -p auth.err -t prog --id=N``."""
    args = ["logger", "-u", str(socket_path), "-p", selector, "-t", tag]
    if pid is not None:
        args.append(f"--id={pid}")
    subprocess.run([*args, text], check=True, timeout=10)


@pytest.fixture
def short_base() -> Iterator[Path]:
    """A short directory (unix socket paths are limited to 107 bytes)."""
    base = rabbit_nodes.short_dir("lrsng-")
    yield base
    shutil.rmtree(base, ignore_errors=True)


def parsed_lines(out: Path) -> dict[str, list[dict[str, str]]]:
    """Every file line under ``out`` parsed, by file name."""
    result: dict[str, list[dict[str, str]]] = {}
    for path in sorted(out.glob("*.log")):
        for line in lines_of(path):
            match = LINE.fullmatch(line)
            assert match is not None, f"{path.name}: unexpected line {line!r}"
            result.setdefault(path.name, []).append(match.groupdict())
    return result


class Pipeline:
    """`logrouter run` with one file sink (`*.*` to `out/{facility}.{severity}.log`) and
    a private syslog-ng publishing to the same exchange."""

    def __init__(self, tmp: Path, base: Path, url: str, exchange: str, sink: str, extra: str = ""):
        self.out = tmp / "out"
        self.sink_log = tmp / "sink.err"
        config = write_config(
            tmp / "routing.toml",
            url,
            exchange,
            {
                sink: {
                    "type": "file",
                    "match": "*.*",
                    "path": f"{self.out}/{{facility}}.{{severity}}.log",
                }
            },
        )
        # back within a second of the broker after an outage (default: up to 30 s later)
        config.write_text(
            config.read_text().replace("[broker]\n", "[broker]\nreconnect_max = 1\n", 1)
        )
        declare(config)
        self.sinks = start(["run", str(config)], sink_env(tmp / "state"), self.sink_log)
        self.daemon = SyslogNg(base, url, exchange, extra)
        self.code: int | None = None

    def settle(self, predicate: Callable[[], bool], what: str) -> None:
        """Wait (while the sink runs) until ``predicate``; on failure show both daemons' stderr."""
        try:
            wait_for(lambda: predicate() or self.sinks.poll() is not None, what, CATCH_UP)
            assert self.sinks.poll() is None, f"logrouter run exited ({self.sinks.returncode})"
        except AssertionError as exc:
            logs = (self.daemon.stderr, self.sink_log)
            shown = "\n".join(
                f"--- {log}:\n{log.read_text()[-3000:]}" for log in logs if log.exists()
            )
            raise AssertionError(f"{exc}\n{shown}") from None

    def tokens(self) -> list[str]:
        """The ``tok-N`` words of every file line so far."""
        return [
            word
            for path in self.out.glob("*.log")
            for word in re.findall(r"tok-\d+", path.read_text())
        ]


@contextlib.contextmanager
def pipeline(
    tmp: Path, base: Path, url: str, exchange: str, sink: str, extra: str = ""
) -> Iterator[Pipeline]:
    """A started ``Pipeline``; both daemons stopped afterwards (the sink's exit code kept)."""
    run = Pipeline(tmp, base, url, exchange, sink, extra)
    try:
        run.daemon.start()
        yield run
    finally:
        run.daemon.stop()
        run.code = stop(run.sinks)
    assert run.code == 0, run.sink_log.read_text()


@pytest.fixture
def shared(
    amqp_url: str, broker_settings: Any, unique_name: Callable[[str], str]
) -> Iterator[tuple[str, str, str]]:
    """(url, exchange, sink name) on the shared broker; the sink's and unrouted queues removed."""
    sink = f"sng_{unique_name('s').rsplit('.', 1)[-1]}"
    yield amqp_url, broker_settings.exchange, sink
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        for queue in (f"logrouter.{sink}", f"{broker_settings.exchange}.unrouted"):
            channel.queue_delete(queue)
    finally:
        connection.close()


def test_host_logs_land_with_host_program_pid_and_time_across_a_broker_restart(
    tmp_path: Path, short_base: Path
) -> None:
    """`logger` messages of several facilities and severities, sent before, during and after
    a broker outage in which syslog-ng itself restarts (only its disk buffer keeps them), all
    end up once or more (none lost) in `{facility}.{severity}.log`, with the host, the
    program, the pid and the time they were logged (not the arrival)."""
    require_syslog_ng()
    sent: dict[str, tuple[str, str, int | None]] = {}
    facilities = ("auth", "mail", "daemon", "local3", "cron")
    with (
        rabbit_nodes.started_node("lrsng") as node,
        pipeline(tmp_path, short_base, node.url, "logs", "host") as run,
    ):

        def send(count: int) -> None:
            for _ in range(count):
                n = len(sent)
                facility = facilities[n % len(facilities)]
                severity = SEVERITIES[n % len(SEVERITIES)]
                prog, pid = f"prog{n % 3}", (1000 + n if n % 4 else None)
                logger(run.daemon.socket, f"{facility}.{severity}", prog, pid, f"tok-{n} {prog}")
                sent[f"tok-{n}"] = (f"{facility}.{severity}", prog, pid)

        before = time.time()
        send(16)
        run.settle(lambda: len(set(run.tokens())) == 16, "the first records")
        node.stop()
        send(16)
        run.settle(lambda: run.daemon.queued() == 16, "syslog-ng to buffer the outage's records")
        run.daemon.stop()  # what it holds now survives only on disk
        run.daemon.start()
        restarting = time.time()
        node.start()
        send(8)
        run.settle(lambda: set(run.tokens()) == set(sent), "every record")

    host = socket.gethostname().split(".")[0]
    seen = parsed_lines(run.out)
    for name, lines in seen.items():
        for line in lines:
            token = line["msg"].split()[0]
            key, prog, pid = sent[token]
            assert name == f"{key}.log"
            assert f"{line['facility']}.{line['severity']}" == key
            assert (line["host"], line["app"]) == (host, prog)
            assert line["pid"] == (str(pid) if pid is not None else "-")
            logged = calendar.timegm(time.strptime(line["ts"][:19], "%Y-%m-%dT%H:%M:%S"))
            assert int(before) <= logged, line
            if int(token[4:]) < 32:  # logged before the broker came back: its own time
                assert logged <= restarting, line
    assert {line["msg"].split()[0] for lines in seen.values() for line in lines} == set(sent)


def test_time_is_the_programs_own_not_the_arrival(
    tmp_path: Path, short_base: Path, shared: tuple[str, str, str]
) -> None:
    """A datagram stamped `Jan  5 01:02:03` is filed at 01:02:03 on Jan 5 (UTC), pid and
    program from its header."""
    require_syslog_ng()
    with pipeline(tmp_path, short_base, *shared) as run:
        run.daemon.datagram("<11>Jan  5 01:02:03 oldprog[77]: tok-1 stamped long ago")
        run.settle(lambda: run.tokens() == ["tok-1"], "the record")
    [line] = parsed_lines(run.out)["user.err.log"]
    assert line["ts"].endswith("-01-05T01:02:03.000000Z")
    assert (line["app"], line["pid"]) == ("oldprog", "77")


#: Two more destinations beside the shipped one: syslog-ng's text body and its
#: default (empty) body, where everything is in the headers.
EXTRA_DESTINATIONS = """
source s_text {{ unix-dgram("{base}/text"); }};
source s_bare {{ unix-dgram("{base}/bare"); }};
destination d_text {{ amqp(host("{host}") port({port}) vhost("/") username("guest")
    password("guest") exchange("{exchange}") exchange-declare(no)
    routing-key("$FACILITY.$LEVEL") body("${{MESSAGE}}") time-reopen(1) persist-name("text")); }};
destination d_bare {{ amqp(host("{host}") port({port}) vhost("/") username("guest")
    password("guest") exchange("{exchange}") exchange-declare(no)
    routing-key("$FACILITY.$LEVEL") time-reopen(1) persist-name("bare")); }};
log {{ source(s_text); destination(d_text); }};
log {{ source(s_bare); destination(d_bare); }};
"""


def test_text_json_and_header_only_bodies_all_land_with_their_metadata(
    tmp_path: Path, short_base: Path, shared: tuple[str, str, str]
) -> None:
    """The shipped JSON body, a text body (`body("${MESSAGE}")`) and syslog-ng's default
    empty body (metadata only in the headers) each give the same file line: host,
    program, pid, facility.severity and the message."""
    require_syslog_ng()
    url, exchange, _ = shared
    params = pika.URLParameters(url)
    extra = EXTRA_DESTINATIONS.format(
        base=short_base, host=params.host, port=params.port, exchange=exchange
    )
    with pipeline(tmp_path, short_base, *shared, extra) as run:
        wait_for(lambda: (short_base / "bare").exists(), "the extra sockets")
        for n, path in enumerate((run.daemon.socket, short_base / "text", short_base / "bare")):
            logger(path, "local5.warning", "app5", 555, f"tok-{n} same message")
        run.settle(lambda: len(run.tokens()) == 3, "three records")
    host = socket.gethostname().split(".")[0]
    lines = parsed_lines(run.out)["local5.warning.log"]
    assert sorted(line["msg"] for line in lines) == [f"tok-{n} same message" for n in range(3)]
    for line in lines:
        assert (line["host"], line["app"], line["pid"]) == (host, "app5", "555")
        assert (line["facility"], line["severity"]) == ("local5", "warning")
    assert len({line["ts"][:16] for line in lines}) == 1  # the minute they were logged


def test_shipped_whole_host_config_passes_syslog_ngs_syntax_check(tmp_path: Path) -> None:
    """config/syslog-ng/logrouter.conf (system() source, the amqp destination, the disk
    buffer) is accepted by `syslog-ng --syntax-only`."""
    require_syslog_ng()
    wrapper = tmp_path / "check.conf"
    wrapper.write_text(
        "@version: 3.38\n"
        f'@define include-path "{SHIPPED}:/usr/share/syslog-ng/include/scl"\n'
        '@include "logrouter.conf"\n'
    )
    result = subprocess.run(
        ["syslog-ng", "--syntax-only", "-f", str(wrapper)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
