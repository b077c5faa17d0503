"""A small tmpfs mounted for one test: a real disk-full, not a mocked one."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def mounted_tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (mount's syntax: "64k", "2m") on a new directory
    ``mount_point``, unmount it afterwards. Needs root (or CAP_SYS_ADMIN): without it
    the test fails and says so."""
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"cannot mount a {size} tmpfs for a disk-full test ({done.stderr.strip()}): "
            "run the suite as root (or in a container with CAP_SYS_ADMIN)",
            pytrace=False,
        )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30)
