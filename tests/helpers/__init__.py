"""Helpers shared by the tests (import as ``tests.helpers.<module>``)."""

from pathlib import Path

#: The repository root (config/, systemd/, docs/ live here).
ROOT = Path(__file__).resolve().parents[2]
