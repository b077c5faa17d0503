"""The systemd units in systemd/: they verify cleanly and the sink unit is well hardened.

The committed units run /usr/local/bin/logrouter (where `pip install .` puts it).
`systemd-analyze verify` checks that every Exec binary exists, so the tests verify
a temporary copy whose path points at this venv's `logrouter` script instead;
nothing else in the copy differs from the committed file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT_DIR = Path(__file__).resolve().parents[2] / "systemd"
INSTALLED_BINARY = "/usr/local/bin/logrouter"
MAX_EXPOSURE = 2.5
UNITS = ["logrouter-sink@.service", "logrouter-setup.service", "logrouter.target"]


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail(
            "systemd-analyze not found: install systemd (`apt-get install systemd`) "
            "to check the units in systemd/",
            pytrace=False,
        )
    return tool


def _venv_logrouter() -> str:
    script = Path(sys.executable).parent / "logrouter"
    if not script.exists():
        pytest.fail(f"{script} missing: install the package (`make install`)", pytrace=False)
    return str(script)


def _unit_copy(tmp_path: Path, unit: str) -> Path:
    """A copy of ``unit`` using the venv's logrouter; a template is instantiated as @errors."""
    text = (UNIT_DIR / unit).read_text().replace(INSTALLED_BINARY, _venv_logrouter())
    for name in UNITS:  # siblings, so references between the units resolve
        sibling = (UNIT_DIR / name).read_text().replace(INSTALLED_BINARY, _venv_logrouter())
        (tmp_path / name).write_text(sibling)
    target = tmp_path / unit.replace("@.", "@errors.")
    target.write_text(text)
    return target


def _directives(unit: str) -> list[tuple[str, str]]:
    pairs = []
    for line in (UNIT_DIR / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            pairs.append((key.strip(), value.strip()))
    return pairs


@pytest.mark.parametrize("unit", UNITS)
def test_unit_verifies_without_warnings(unit: str, tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit and prints nothing (no warning at all)."""
    path = _unit_copy(tmp_path, unit)
    result = subprocess.run(
        [_systemd_analyze(), "verify", path.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, output
    assert output == ""


@pytest.mark.parametrize("unit", ["logrouter-sink@.service", "logrouter-setup.service"])
def test_service_exposure_is_at_most_2_5(unit: str, tmp_path: Path) -> None:
    """`systemd-analyze security --offline=yes` rates the service's exposure at most 2.5."""
    path = _unit_copy(tmp_path, unit)
    result = subprocess.run(
        [_systemd_analyze(), "security", "--offline=yes", "--no-pager", path.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_sink_unit_has_the_contracted_service_settings() -> None:
    """The sink template: Type=notify, watchdog, HUP reload, config check, no restart on 78."""
    settings = _directives("logrouter-sink@.service")
    values = dict(settings)
    assert values["Type"] == "notify"
    assert values["NotifyAccess"] == "main"
    assert values["WatchdogSec"] == "30"
    assert values["Restart"] == "on-failure"
    assert values["RestartPreventExitStatus"] == "78"
    assert values["ExecStartPre"] == f"{INSTALLED_BINARY} check"
    assert values["ExecStart"] == f"{INSTALLED_BINARY} sink %i"
    assert values["ExecReload"].endswith("kill -HUP $MAINPID")
    assert values["ProtectSystem"] == "strict"
    assert values["NoNewPrivileges"] == "yes"
    assert values["RestrictAddressFamilies"] == "AF_UNIX AF_INET AF_INET6"
    assert values["DynamicUser"] == "yes"
    for directory in ("StateDirectory", "LogsDirectory", "ConfigurationDirectory"):
        assert values[directory] == "logrouter"
    assert values["WantedBy"] == "logrouter.target"


@pytest.mark.parametrize("unit", ["logrouter-sink@.service", "logrouter-setup.service"])
def test_services_umask_and_network_allow_list(unit: str) -> None:
    """UMask=0027 (no world-readable files) and IP traffic denied except to the local broker."""
    values = dict(_directives(unit))
    assert values["UMask"] == "0027"
    assert values["IPAddressDeny"] == "any"
    assert values["IPAddressAllow"] == "localhost"
    assert "IPAddressAllow=" in (UNIT_DIR / unit).read_text().split("IPAddressDeny=any")[0]


def test_setup_unit_is_a_oneshot_and_the_target_groups_the_units() -> None:
    """logrouter-setup is oneshot + RemainAfterExit; logrouter.target pulls in setup."""
    setup = dict(_directives("logrouter-setup.service"))
    assert setup["Type"] == "oneshot"
    assert setup["RemainAfterExit"] == "yes"
    assert setup["ExecStart"] == f"{INSTALLED_BINARY} setup"
    target = dict(_directives("logrouter.target"))
    assert "logrouter-setup.service" in target["Wants"]
    assert target["WantedBy"] == "multi-user.target"


def test_verify_reports_a_directive_systemd_252_lacks(tmp_path: Path) -> None:
    """The no-warning check has teeth: Type=notify-reload (not in systemd 252) is reported."""
    path = _unit_copy(tmp_path, "logrouter-sink@.service")
    path.write_text(path.read_text().replace("Type=notify\n", "Type=notify-reload\n"))
    result = subprocess.run(
        [_systemd_analyze(), "verify", path.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    version = subprocess.run(
        [_systemd_analyze(), "--version"], capture_output=True, text=True, timeout=30
    ).stdout.split()[1]
    if int(version) >= 253:  # notify-reload exists there: nothing to report
        assert result.returncode == 0
    else:
        assert "notify-reload" in result.stdout + result.stderr
