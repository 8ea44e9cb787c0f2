"""The one fork hook: objects that hold per-process state register here.

After ``fork()`` the child inherits descriptors, flock locks (which belong to
open file descriptions, so the child would seem to hold its parent's lock)
and thread locks that threads of the parent may have held at that instant
(and that nobody in the child will ever release). Every object that must
forget such state registers here; the single ``after_in_child`` hook calls
``forget_after_fork()`` on each.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol

__all__ = ["ForkAware", "register", "unregister"]


class ForkAware(Protocol):
    def forget_after_fork(self) -> None:
        """Called in the child right after ``fork()``, before any other code."""


# Weak: registration must not keep a handle or a lock alive.
_objects: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def register(obj: ForkAware) -> None:
    """Call ``obj.forget_after_fork()`` in every child forked from now on."""
    _objects.add(obj)


def unregister(obj: ForkAware) -> None:
    """Undo :func:`register` (no error when ``obj`` is not registered)."""
    _objects.discard(obj)


def _after_fork_in_child() -> None:
    for obj in list(_objects):
        obj.forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
