"""Writes a benchmark's section of docs/benchmarks.md in place, keeping the other sections."""

import os
import pathlib

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def replace_section(section: str, text: str, path: pathlib.Path = DOCS) -> None:
    """Replaces the section whose heading line is `section` (e.g. "## SavedModel latency") with
    `text`, or appends it; the file is replaced atomically."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    if section in old:
        start = old.index(section)
        end = old.find("\n## ", start + len(section))
        new = old[:start] + text + (old[end + 1 :] if end >= 0 else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(new)
    os.replace(tmp, path)
