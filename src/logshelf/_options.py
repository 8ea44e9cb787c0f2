"""The options of one open store, validated once, before anything touches disk.

Every argument of :func:`logshelf.open` is checked here, for every flag (a
read-only handle rejects a bad ``lock_backend`` just as a writer does), and
the message names the bad value. The engine and the object layer then read a
frozen :class:`Options` and never validate again.
"""

from __future__ import annotations

import codecs
import os
import pickle
from dataclasses import dataclass

from . import _codecs
from ._fs import FileSystem

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "DEFAULT_PROTOCOL",
    "DURABILITY_MODES",
    "FLAGS",
    "LOCK_BACKENDS",
    "Options",
    "check_compress_min",
    "check_compression",
    "check_copy",
    "check_protocol",
    "check_unpickling",
    "make_options",
]

FLAGS = ("r", "w", "c", "n")
DURABILITY_MODES = ("none", "always", "interval")
LOCK_BACKENDS = ("auto", "flock", "filelock")
#: Pickle protocol for new records when ``protocol=None``. Protocol 5 (Python
#: 3.8+) is the fastest for in-band data; stores written with it read on every
#: Python version logshelf supports.
DEFAULT_PROTOCOL = 5
#: Segments smaller than this would roll over on almost every write.
MIN_SEGMENT_SIZE = 4096


@dataclass(frozen=True)
class Options:
    """What the engine needs to know of one handle; see :func:`make_options`."""

    #: Absolute path of the store directory, as ``str``.
    path: str
    flag: str
    durability: str
    sync_interval: float
    lock_timeout: float | None
    #: ``"flock"`` or ``"filelock"``: ``"auto"`` is resolved here.
    lock_backend: str
    max_segment_size: int
    auto_compact: float | None
    #: Permission bits for files the store creates (before the umask), as dbm's ``mode``.
    mode: int
    fs: FileSystem
    #: ``key=`` (``_signing.check_keys``): newest first; empty for an unsigned store.
    keys: tuple[bytes, ...] = ()

    @property
    def writable(self) -> bool:
        return self.flag != "r"


def _store_path(filename: object) -> str:
    """``filename`` as an absolute ``str`` path: ``str``, ``bytes`` and any
    ``os.PathLike`` of either are accepted, as :func:`shelve.open` does."""
    try:
        path = os.fspath(filename)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(
            f"filename must be str, bytes or os.PathLike, not {type(filename).__name__}"
        ) from None
    return os.path.abspath(os.fsdecode(path))


def resolve_lock_backend(backend: object) -> str:
    """Map ``"auto"`` to the backend for this platform; validate the name."""
    if backend not in LOCK_BACKENDS:
        raise ValueError(f"lock_backend must be one of {LOCK_BACKENDS}, not {backend!r}")
    if backend == "auto":
        return "flock" if fcntl is not None else "filelock"
    if backend == "flock" and fcntl is None:  # pragma: no cover - Windows
        raise ValueError("lock_backend 'flock' is not available on this platform")
    return str(backend)


def make_options(
    filename: object,
    flag: str = "c",
    *,
    durability: str = "none",
    sync_interval: float = 1.0,
    lock_timeout: float | None = None,
    lock_backend: str = "auto",
    max_segment_size: int = 128 << 20,
    auto_compact: float | None = 0.5,
    mode: int = 0o666,
    fs: FileSystem | None = None,
) -> Options:
    """Validate the store-level arguments of :func:`logshelf.open`.

    Raises:
        TypeError: ``filename`` is not a path.
        ValueError: any other argument is out of range (the message names it).
    """
    path = _store_path(filename)
    if flag not in FLAGS:
        raise ValueError(f"flag must be one of 'r', 'w', 'c' or 'n', not {flag!r}")
    if durability not in DURABILITY_MODES:
        raise ValueError(f"durability must be one of {DURABILITY_MODES}, not {durability!r}")
    if not _is_number(sync_interval) or not sync_interval >= 0:
        raise ValueError(f"sync_interval must be >= 0 seconds, not {sync_interval!r}")
    if lock_timeout is not None and (not _is_number(lock_timeout) or not lock_timeout >= 0):
        raise ValueError(f"lock_timeout must be None or >= 0 seconds, not {lock_timeout!r}")
    if not isinstance(max_segment_size, int) or max_segment_size < MIN_SEGMENT_SIZE:
        raise ValueError(
            f"max_segment_size must be an int >= {MIN_SEGMENT_SIZE} bytes, not {max_segment_size!r}"
        )
    if auto_compact is not None and (not _is_number(auto_compact) or not 0 < auto_compact <= 1):
        raise ValueError(f"auto_compact must be None or a fraction in (0, 1], not {auto_compact!r}")
    if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o7777:
        raise ValueError(f"mode must be file permission bits (0 to 0o7777), not {mode!r}")
    return Options(
        path=path,
        flag=flag,
        durability=durability,
        sync_interval=float(sync_interval),
        lock_timeout=None if lock_timeout is None else float(lock_timeout),
        lock_backend=resolve_lock_backend(lock_backend),
        max_segment_size=max_segment_size,
        auto_compact=None if auto_compact is None else float(auto_compact),
        mode=mode,
        fs=fs if fs is not None else FileSystem(),
    )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_protocol(protocol: object) -> int:
    """The pickle protocol for ``protocol=`` (None: :data:`DEFAULT_PROTOCOL`)."""
    if protocol is None:
        return DEFAULT_PROTOCOL
    if (
        not isinstance(protocol, int)
        or isinstance(protocol, bool)
        or not 0 <= protocol <= pickle.HIGHEST_PROTOCOL
    ):
        raise ValueError(f"protocol must be None or 0..{pickle.HIGHEST_PROTOCOL}, not {protocol!r}")
    return protocol


def check_compress_min(compress_min: object) -> int:
    if not isinstance(compress_min, int) or isinstance(compress_min, bool) or compress_min < 0:
        raise ValueError(f"compress_min must be an int >= 0, not {compress_min!r}")
    return compress_min


def check_unpickling(encoding: object, errors: object, fix_imports: object) -> None:
    """Check ``encoding=``, ``errors=`` and ``fix_imports=`` as :func:`pickle.loads`
    takes them, so a typo fails at open() rather than at the first read of
    a Python 2 string.

    Raises:
        ValueError: ``encoding`` is not a codec name and not ``"bytes"``, or
            ``errors`` not a registered error handler.
        TypeError: ``encoding`` or ``errors`` is not a str, or ``fix_imports``
            not a bool.
    """
    if not isinstance(encoding, str):
        raise TypeError(f"encoding must be a str, not {type(encoding).__name__}: {encoding!r}")
    if encoding != "bytes":  # pickle's own value: Python 2 str stays bytes
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(f"encoding {encoding!r} is not a known codec (nor 'bytes')") from None
    if not isinstance(errors, str):
        raise TypeError(f"errors must be a str, not {type(errors).__name__}: {errors!r}")
    try:
        codecs.lookup_error(errors)
    except LookupError:
        raise ValueError(f"errors {errors!r} is not a known error handler") from None
    if not isinstance(fix_imports, bool):
        raise TypeError(
            f"fix_imports must be a bool, not {type(fix_imports).__name__}: {fix_imports!r}"
        )


def check_compression(compression: str | None) -> _codecs.Codec:
    """The codec for ``compression=`` (raises ValueError naming a bad one)."""
    return _codecs.codec_from_name(compression)


def check_copy(copy: object) -> bool:
    """``copy=`` of ``open`` and ``Shelf.get``: a bool (raises TypeError otherwise)."""
    if not isinstance(copy, bool):
        raise TypeError(f"copy must be True or False, not {copy!r}")
    return copy
