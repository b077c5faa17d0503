"""Run benchmarks: ``python -m bench`` (all) or ``python -m bench handler sinks`` (some).

Every module ``bench/<name>.py`` with a ``main()`` or ``run()`` is a benchmark;
each writes its own results (bench/results/<name>.md and its docs section).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any


def discover() -> dict[str, Callable[[], Any]]:
    """Benchmark entry points by module name, in name order."""
    found: dict[str, Callable[[], Any]] = {}
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"bench.{info.name}")
        entry = getattr(module, "main", None) or getattr(module, "run", None)
        if callable(entry):
            found[info.name] = entry
    return found


def main(argv: list[str] | None = None) -> int:
    names = sys.argv[1:] if argv is None else argv
    available = discover()
    unknown = [name for name in names if name not in available]
    if unknown:
        print(f"unknown benchmark(s): {' '.join(unknown)}; have: {' '.join(available)}")
        return 2
    failed = []
    for name in names or list(available):
        print(f"== bench {name}", flush=True)
        start = time.monotonic()
        saved, sys.argv = sys.argv, [f"bench.{name}"]  # each parses its own (empty) argv
        try:
            code = available[name]()
        except Exception:
            traceback.print_exc()
            code = 1
        finally:
            sys.argv = saved
        if isinstance(code, int) and code != 0:
            failed.append(name)
        print(f"== bench {name}: {time.monotonic() - start:.1f} s", flush=True)
    if failed:
        print(f"failed: {' '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
