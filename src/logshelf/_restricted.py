"""Restricted loading: ``open(..., safe=True)``.

A pickle is a program: each global it names (``os.system``, ``builtins.eval``)
is imported and may be called. Under ``safe=True`` values load through an
unpickler that resolves only the globals of an exact allow-list of
``(module, qualified name)`` pairs: builtin containers and scalars, the
``datetime``, ``decimal``, ``fractions``, ``uuid``, ``pathlib`` and
``collections`` types, and numpy's own array and scalar rebuilders, so
arrays load. A handle extends it with ``trusted=[...]``, never process-wide.
Anything else raises :class:`~logshelf.UntrustedGlobalError`, naming the
global and the exact ``trusted=`` entry that would allow it.

Exact pairs matter: resolving ``module.attr.attr`` chains (protocol 4 names
can hold dots) is how allow-lists have been bypassed (``operator`` gadgets,
``getattr`` chains through an allowed module). An allow-list is a defence
in depth, not a proof: the signed stores of the safety issue are the proof.
"""

from __future__ import annotations

import _compat_pickle
import io
import os
import pickle
import warnings
from collections.abc import Iterable
from typing import Any

from .errors import UntrustedGlobalError, UntrustedStoreError, UntrustedStoreWarning

__all__ = ["SAFE_GLOBALS", "RestrictedLoads", "check_safety", "trusted_pairs"]

_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMPY_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")

#: What ``safe=True`` loads. Containers, str, bytes, int, float, bool and None
#: need no global at all (they have opcodes).
SAFE_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [
        *(("builtins", n) for n in ("set", "frozenset", "bytearray", "complex", "slice")),
        *(("builtins", n) for n in ("range", "Ellipsis", "NotImplemented")),
        # bytes pickled with protocols 0-2 rebuild through this (latin-1 text).
        ("_codecs", "encode"),
        # protocol 0/1 objects: object.__new__(cls), cls itself checked here.
        ("copyreg", "_reconstructor"),
        ("builtins", "object"),
        *(("datetime", n) for n in ("datetime", "date", "time", "timedelta", "timezone")),
        ("decimal", "Decimal"),
        ("fractions", "Fraction"),
        ("uuid", "UUID"),
        # pathlib became a package in 3.13: its classes pickle from pathlib._local.
        *(
            (m, n)
            for m in ("pathlib", "pathlib._local")
            for n in ("Path", "PosixPath", "PurePosixPath", "PureWindowsPath")
        ),
        *(("collections", n) for n in ("OrderedDict", "defaultdict", "deque", "Counter")),
        *((m, "_reconstruct") for m in _NUMPY_CORE),
        *((m, "scalar") for m in _NUMPY_CORE),
        *((m, "_frombuffer") for m in _NUMPY_NUMERIC),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    ]
)


def trusted_pairs(trusted: Iterable[object]) -> frozenset[tuple[str, str]]:
    """``trusted=`` entries as ``(module, qualified name)`` pairs: a class or
    function, a ``(module, qualname)`` tuple, or a ``"module:qualname"`` string.

    Raises:
        TypeError: an entry of another kind (the message names it).
    """
    if isinstance(trusted, (str, bytes)):
        raise TypeError("trusted must be a list of entries, not a single string")
    pairs = set()
    for entry in trusted:
        if isinstance(entry, tuple) and len(entry) == 2 and all(isinstance(p, str) for p in entry):
            pairs.add((entry[0], entry[1]))
        elif isinstance(entry, str) and entry.count(":") == 1 and all(entry.split(":")):
            module, qualname = entry.split(":")
            pairs.add((module, qualname))
        elif hasattr(entry, "__module__") and hasattr(entry, "__qualname__"):
            pairs.add((str(entry.__module__), str(entry.__qualname__)))
        else:
            raise TypeError(
                "a trusted= entry is a class or function, a (module, qualname) tuple or a "
                f"'module:qualname' string, not {entry!r}"
            )
    return frozenset(pairs)


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: Any, allowed: frozenset[tuple[str, str]], **options: Any) -> None:
        super().__init__(io.BytesIO(data), **options)
        self._allowed = allowed
        self._fix = options.get("fix_imports", True)

    def find_class(self, module: str, name: str) -> Any:
        # Checked under the names pickle would import: a Python 2 pickle's
        # __builtin__.set is builtins.set here.
        mapped = (module, name)
        if self._fix:  # no Python 3 module has a Python 2 name: safe at any protocol
            if (module, name) in _compat_pickle.NAME_MAPPING:
                mapped = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                mapped = (_compat_pickle.IMPORT_MAPPING[module], name)
        if mapped not in self._allowed:
            raise UntrustedGlobalError(
                f"safe=True refused to load {mapped[0]}.{mapped[1]} (not on the allow-list); "
                f"if you trust it, open with trusted=[({mapped[0]!r}, {mapped[1]!r})]"
            )
        # Import what was checked (CPython maps Python 2 names only below
        # protocol 3; this checks the mapped name at every protocol).
        return super().find_class(*mapped)


class RestrictedLoads:
    """``pickle.loads`` under an allow-list, with ``pickle.loads``'s options."""

    def __init__(
        self,
        trusted: frozenset[tuple[str, str]],
        encoding: str = "ASCII",
        errors: str = "strict",
        fix_imports: bool = True,
    ) -> None:
        self.allowed = SAFE_GLOBALS | trusted
        self._options = {"encoding": encoding, "errors": errors, "fix_imports": fix_imports}

    def __call__(self, data: bytes, /, *, buffers: Iterable[Any] | None = None) -> Any:
        return _Unpickler(data, self.allowed, buffers=buffers, **self._options).load()


def check_safety(
    path: str, safe: object, trusted: Iterable[object], trusted_owner: object, warn: bool = True
) -> frozenset[tuple[str, str]] | None:
    """Check ``open()``'s safety arguments; the ``trusted=`` pairs with
    ``safe=True``, else None.

    With ``safe=True`` an existing store is refused when another user owns
    its directory or one of its files, or when group or others can write
    them: whoever can write a store can make its readers load their data.
    Without it, another user's store or one that others can write only
    warns (``UntrustedStoreWarning``; a group-writable one is how a team
    shares a store, and is left alone).

    ``warn=False`` (a Redis URL, a signed store) skips the warning.

    Raises:
        TypeError: ``safe`` or ``trusted_owner`` not a bool, a bad entry.
        ValueError: ``trusted=`` or ``trusted_owner=`` without ``safe=True``.
        UntrustedStoreError: the permissions above, unless ``trusted_owner``.
    """
    if not isinstance(safe, bool) or not isinstance(trusted_owner, bool):
        raise TypeError("safe and trusted_owner must be True or False")
    pairs = trusted_pairs(trusted)
    if not safe:
        if pairs or trusted_owner:
            raise ValueError("trusted= and trusted_owner= only apply with safe=True")
        problem = _writable_by_others(path, group=False) if warn else None
        if problem is not None:
            warnings.warn(
                UntrustedStoreWarning(
                    f"{path}: {problem}: whoever can write a store can make its readers "
                    "run their code (docs/security.md: safe=True, key=)"
                ),
                stacklevel=3,
            )
        return None
    if not trusted_owner:
        problem = _writable_by_others(path)
        if problem is not None:
            raise UntrustedStoreError(
                f"safe=True refuses to open {path}: {problem}. Whoever can write a store "
                "can make its readers load their data; fix the permissions, or pass "
                "trusted_owner=True if you trust them"
            )
    return pairs


def _writable_by_others(path: str, group: bool = True) -> str | None:
    """Why others could write the store at ``path`` (None: they cannot):
    another user owns its directory or a file, or others (and, with
    ``group``, the group) can write one."""
    try:
        names = ["", *sorted(os.listdir(path))]
    except (FileNotFoundError, NotADirectoryError):
        return None  # created by this open(), with 0700 / 0600
    me = os.geteuid()
    for name in names:
        try:
            st = os.lstat(os.path.join(path, name) if name else path)
        except FileNotFoundError:
            continue  # removed meanwhile (a compaction's old segment)
        what = name or "the directory"
        if st.st_uid != me:
            return f"{what} belongs to user id {st.st_uid}"
        if st.st_mode & (0o022 if group else 0o002):
            who = "group or others" if group else "others"
            return f"{who} can write {what} (mode {st.st_mode & 0o777:o})"
    return None
