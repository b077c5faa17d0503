"""Shared by benchmarks: replace one marked section of docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_section(name: str, title: str, text: str, docs: Path = DOCS) -> None:
    """Put ``text`` under ``## title`` between ``<!-- name:begin/end -->`` (added at the end)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    section = f"{begin}\n## {title}\n\n{text}{end}\n"
    current = docs.read_text() if docs.exists() else "# Benchmarks\n\n"
    if begin in current and end in current:
        head, _, rest = current.partition(begin)
        _, _, tail = rest.partition(end)
        current = head + section + tail.lstrip("\n")
    else:
        current = current.rstrip("\n") + "\n\n" + section
    docs.write_text(current)
