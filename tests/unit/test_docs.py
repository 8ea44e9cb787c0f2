"""The prose stays in step with the code and runs on any checkout."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from logshelf import _format as fmt
from logshelf import _hint_format

ROOT = Path(__file__).resolve().parents[2]
# Every Markdown file a reader follows commands from.
COMMAND_DOCS = [
    ROOT / "README.md",
    ROOT / "benchmarks" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]


def _first_words(text: str) -> set[str]:
    return {line.split()[0] for line in text.splitlines() if line.strip()}


def test_every_store_file_is_listed_in_format_docstring_and_format_md() -> None:
    """_format's module docstring and docs/format.md §1 name every file of a store."""
    names = {
        fmt.LOCK_NAME,
        fmt.CHANGES_NAME,
        fmt.COMPACT_LOCK_NAME,
        fmt.MANIFEST_NAME,
        fmt.QUARANTINE_DIR + "/",
    }
    format_md = (ROOT / "docs" / "format.md").read_text()
    listing = format_md.split("## 1.", 1)[1].split("## 2.", 1)[0]
    assert fmt.__doc__ is not None
    assert names <= _first_words(fmt.__doc__), names - _first_words(fmt.__doc__)
    assert names <= _first_words(listing), names - _first_words(listing)


def test_hint_layout_comment_names_the_hint_version_written() -> None:
    """The hint layout comment in _hint_format gives the version encode_hint writes."""
    source = inspect.getsource(_hint_format)
    found = re.findall(r"hint version \((?:HINT_VERSION, )?(\d+)", source)
    assert found == [str(fmt.HINT_VERSION)]


def test_doc_commands_use_no_absolute_paths_of_one_machine() -> None:
    """Commands in the docs run from any checkout: no /work/, /tmp/ or /home/ paths."""
    machine_path = re.compile(r"(?<![\w.])/(?:work|tmp|home)/")
    found = [
        f"{doc.relative_to(ROOT)}:{n}: {line}"
        for doc in COMMAND_DOCS
        for n, line in enumerate(doc.read_text().splitlines(), 1)
        if machine_path.search(line)
    ]
    assert found == []


def test_sources_cite_only_documents_of_the_repository() -> None:
    """Every docs/*.md a module cites exists, and none cites the design-time storage
    notes, which are not part of the repository."""
    cited: set[str] = set()
    notes = []
    for source in (ROOT / "src" / "logshelf").glob("*.py"):
        text = source.read_text()
        cited |= set(re.findall(r"docs/[\w-]+\.md", text))
        if re.search(r"storage[ -]notes", text, re.IGNORECASE):
            notes.append(source.name)
    assert cited and all((ROOT / doc).is_file() for doc in cited), cited
    assert notes == []
