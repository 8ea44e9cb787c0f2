"""A settable clock for the cache modules, shared by the cache tests."""

from __future__ import annotations

import pytest


class Clock:
    """A settable clock for every module of the cache."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, start: float = 1_800_000_000.0) -> None:
        self.now = start
        for target in (
            "logshelf.cache._time",
            "logshelf._access._time",
            "logshelf._eviction._now",
            "logshelf._memoize._now",
            "logshelf._cli_cache._now",
        ):
            monkeypatch.setattr(target, self)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
