"""The examples in docstrings and in the tutorial run, and print what they show.

Docstrings are the API reference's single source, and the tutorial is the
first page a new user follows: an example in either that no longer runs is a
bug. Each test runs in a fresh temporary folder, since the examples write
stores in the current directory.
"""

from __future__ import annotations

import doctest
import importlib
import re
import sys
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Modules whose docstrings hold examples (the public names' modules).
MODULES = [
    "logshelf",
    "logshelf.cache",
    "logshelf.errors",
    "logshelf._transfer",
    "logshelf._prefix_scans",
    "logshelf.store",
    "logshelf._serializers",
]
#: Pages written as ">>>" sessions.
PAGES = ["docs/tutorial.md"]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The examples' stores, and their tempfile.mkdtemp() folders, in tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def _run(test: doctest.DocTest) -> tuple[int, str]:
    """Run one doctest; return the failures and the report."""
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    runner.run(test, out=report.append)
    return runner.failures, "".join(report)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    """Every ">>>" example in the module's docstrings prints what it shows."""
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    assert tests, f"{name} has no examples: drop it from MODULES"
    for test in tests:
        failures, report = _run(test)
        assert failures == 0, report


def _page_module(name: str) -> Iterator[types.ModuleType]:
    """A module to run a page in: classes the page defines get an importable
    ``__module__``, so pickle can store them, as in a user's script."""
    module = types.ModuleType(name)
    sys.modules[name] = module
    try:
        yield module
    finally:
        del sys.modules[name]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("page", PAGES)
def test_page_sessions_run(page: str) -> None:
    """The page's ">>>" sessions, run in order as one session, print what the
    page shows. Code fences are blanked first, so that a fence closing a block
    does not read as expected output."""
    text = re.sub(r"^```.*$", "", (ROOT / page).read_text(), flags=re.MULTILINE)
    for module in _page_module("logshelf_page_" + Path(page).stem):
        test = doctest.DocTestParser().get_doctest(text, {}, page, page, 0)
        test.globs = vars(module)  # not the copy DocTest made: pickle looks here
        assert len(test.examples) > 10, "the page lost its examples"
        failures, report = _run(test)
        assert failures == 0, report


def test_the_runner_reports_a_wrong_output() -> None:
    """A session whose output differs from the page fails (the tests above can fail)."""
    test = doctest.DocTestParser().get_doctest(">>> 1 + 1\n3\n", {}, "wrong", "wrong", 0)
    failures, report = _run(test)
    assert failures == 1 and "Expected:\n    3\nGot:\n    2" in report
