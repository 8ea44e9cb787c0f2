"""A per-test timeout for the crash tests that name none.

The global timeout (300 s in pyproject.toml) is the last resort; a hang in
one of these tests should fail within seconds. The slowest of them without
a mark of its own (every truncation offset of the last batch) takes about
8 s on the project's 2-core machine; tests that take longer carry their
own ``pytest.mark.timeout``, a few times their measured duration.
"""

from __future__ import annotations

from pathlib import Path

import pytest

DEFAULT_TIMEOUT = 30.0
HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Called with every collected item of the session: touch only this directory's.
    for item in items:
        if item.path.parent == HERE and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT))
