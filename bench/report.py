"""Where benchmark figures go: each benchmark owns one marked section of a Markdown file under docs/."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def write_section(name: str, body: str, doc: Path = DOCS / "benchmarks.md") -> None:
    """Replace the ``name`` section of ``doc`` with ``body``, leaving every other section alone.

    A section is what stands between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``; a missing
    section (or file) is appended (created).
    """
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    section = f"{start}\n{body.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else f"# {doc.stem.capitalize()}\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.write_text(text)
