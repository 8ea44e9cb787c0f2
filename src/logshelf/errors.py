"""The exceptions logshelf raises.

Every error the library detects itself derives from :class:`StoreError`. Each
subclass also derives from the builtin exception a user would already catch for
that kind of failure, so ``except ValueError`` around shelve code keeps working::

    StoreError(Exception)
    ├── StoreClosedError(StoreError, ValueError)    use of a closed store
    ├── ReadOnlyError(StoreError, PermissionError)   write to a store opened with flag "r"
    ├── StoreNotFoundError(StoreError, FileNotFoundError)
    │                                                flag "r" or "w" on a path with no store
    ├── LockTimeoutError(StoreError, TimeoutError)   the writer lock was not acquired in time
    ├── FormatError(StoreError, ValueError)          not a logshelf store, or a newer format
    ├── CorruptionError(StoreError)                  checksum mismatch or impossible bytes on disk
    │   └── TamperedError(CorruptionError)           a signed store's record fails its signature
    ├── HandlePoisonedError(StoreError, OSError)     an fsync failed earlier; reopen the store
    ├── CodecUnavailableError(StoreError, ImportError)
    │                                                a compression codec's module is missing
    ├── SerializerUnavailableError(StoreError, ImportError)
    │                                                a serializer is not installed or registered
    ├── SigningError(StoreError, ValueError)         key= does not fit the store (missing, wrong)
    ├── UntrustedGlobalError(StoreError, pickle.UnpicklingError)
    │                                                safe=True met a global outside the allow-list
    ├── UntrustedStoreError(StoreError, PermissionError)
    │                                                safe=True refused a store others can write
    └── BackendUnavailableError(StoreError, ConnectionError)
                                                     a remote backend (Redis) cannot be reached

    UntrustedStoreWarning(UserWarning)               a store others can write, opened without
                                                     safe=True or key=

Operating-system failures (disk full, permission denied, ...) are raised as the
original :class:`OSError`, untranslated. A missing key raises :class:`KeyError`;
a key that is not a ``str`` raises :class:`TypeError`.

Catch :class:`StoreError` for anything logshelf itself detected, or the
builtin family for code written against shelve:

Examples:
    >>> import logshelf, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "missing.db")
    >>> try:
    ...     logshelf.open(path, "r")
    ... except FileNotFoundError as exc:
    ...     isinstance(exc, logshelf.StoreNotFoundError)
    True
"""

from __future__ import annotations

import pickle

__all__ = [
    "BackendUnavailableError",
    "CodecUnavailableError",
    "CorruptionError",
    "FormatError",
    "HandlePoisonedError",
    "LockTimeoutError",
    "ReadOnlyError",
    "SerializerUnavailableError",
    "SigningError",
    "StoreClosedError",
    "StoreError",
    "StoreNotFoundError",
    "TamperedError",
    "UntrustedGlobalError",
    "UntrustedStoreError",
    "UntrustedStoreWarning",
]


class StoreError(Exception):
    """Base class of every error logshelf detects itself.

    Errors of the operating system are not wrapped in it: they propagate as
    the original :class:`OSError`.
    """


class StoreClosedError(StoreError, ValueError):
    """An operation was attempted on a closed store or cache.

    Also a :class:`ValueError`, which is what :mod:`shelve` raises there.
    """


class ReadOnlyError(StoreError, PermissionError):
    """A write was attempted on a store (or cache) opened with ``flag="r"``.

    Also a :class:`PermissionError`. Nothing was written.
    """


class StoreNotFoundError(StoreError, FileNotFoundError):
    """Flag ``"r"`` or ``"w"`` named a path that holds no store.

    Also a :class:`FileNotFoundError`. Use flag ``"c"`` to create the store.
    """


class LockTimeoutError(StoreError, TimeoutError):
    """The writer lock could not be acquired within ``lock_timeout`` seconds.

    Also a :class:`TimeoutError`. Another process (or thread) held the lock
    longer, usually inside a long ``transaction()``; nothing was written.
    """


class FormatError(StoreError, ValueError):
    """The path is not a logshelf store, or it was written by a newer format version.

    Also a :class:`ValueError`. Nothing at the path was changed.
    """


class CorruptionError(StoreError):
    """Bytes on disk failed a checksum or describe something impossible.

    The message names the file, the offset and, where it is known, the key.
    """


class TamperedError(CorruptionError):
    """A record of a signed store does not check with any key of the handle:
    written without the key, or changed since (``docs/security.md``). The
    message names the key, file and offset; nothing of the record was
    decompressed or loaded."""


class SigningError(StoreError, ValueError):
    """``key=`` does not fit the store: a signed store opened without a key,
    an unsigned store opened with one, or keys none of which the store was
    signed with (``docs/security.md``). Nothing was read or changed."""


class UntrustedStoreWarning(UserWarning):
    """Opened without ``safe=True`` or ``key=``, a store belongs to another
    user or others can write it: whoever can write it can make this process
    run their code when it reads (``docs/security.md``). A warning, not an
    error: ``warnings.filterwarnings("error", category=...)`` makes it one."""


class HandlePoisonedError(StoreError, OSError):
    """An earlier fsync failed, so this handle refuses further writes.

    After a failed fsync the kernel may have dropped the unsynced pages, so
    nothing this handle believes about the file is trustworthy. Close the store
    and open it again: recovery re-validates everything on disk.
    """


class CodecUnavailableError(StoreError, ImportError):
    """A record or an option needs a compression module that is not installed.

    Also an :class:`ImportError`; the message names the package to install.
    """


class SerializerUnavailableError(StoreError, ImportError):
    """A record or an option needs a serializer that is not available here: a
    package that is not installed ("dill", "cloudpickle"), or a custom
    serializer this process has not been given (the message names it)."""


class UntrustedGlobalError(StoreError, pickle.UnpicklingError):
    """A value read under ``safe=True`` names a global outside the allow-list
    (the message names it and the ``trusted=`` entry that would allow it);
    nothing of the value was loaded past that point."""


class UntrustedStoreError(StoreError, PermissionError):
    """``safe=True`` refused a store that another user owns or that group or
    others can write (``trusted_owner=True`` overrides)."""


class BackendUnavailableError(StoreError, ConnectionError):
    """A remote backend (a Redis server) could not be reached or stopped
    answering during an operation.

    A write that fails so was applied wholly or not at all (each write is one
    server-side script), never in part; the message says whether it may have
    been applied. Nothing read before the failure is returned.
    """
