"""logshelf: a shelve-compatible persistent object store on an append-only,
checksummed log, safe for many processes.

>>> import logshelf, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "state.db")
>>> with logshelf.open(path) as db:
...     db["answer"] = {"value": 42}
>>> with logshelf.open(path, "r") as db:
...     db["answer"]
{'value': 42}

Values are pickles: only open stores you trust.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ._compaction import CompactionResult
from ._hashing import UnhashableArgumentError
from ._memoize import CacheInfo
from ._salvage import SalvageReport, salvage
from ._serializers import Serializer, register_serializer
from ._transfer import ImportReport, export, import_from
from .cache import Cache, memoize
from .errors import (
    BackendUnavailableError,
    CodecUnavailableError,
    CorruptionError,
    FormatError,
    HandlePoisonedError,
    LockTimeoutError,
    ReadOnlyError,
    SerializerUnavailableError,
    SigningError,
    StoreClosedError,
    StoreError,
    StoreNotFoundError,
    TamperedError,
    UntrustedGlobalError,
    UntrustedStoreError,
    UntrustedStoreWarning,
)
from .store import DEFAULT_PROTOCOL, Shelf, open

try:
    __version__ = version("logshelf")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "DEFAULT_PROTOCOL",
    "BackendUnavailableError",
    "Cache",
    "CacheInfo",
    "CodecUnavailableError",
    "CompactionResult",
    "CorruptionError",
    "FormatError",
    "HandlePoisonedError",
    "ImportReport",
    "LockTimeoutError",
    "ReadOnlyError",
    "SalvageReport",
    "Serializer",
    "SerializerUnavailableError",
    "Shelf",
    "SigningError",
    "StoreClosedError",
    "StoreError",
    "StoreNotFoundError",
    "TamperedError",
    "UnhashableArgumentError",
    "UntrustedGlobalError",
    "UntrustedStoreError",
    "UntrustedStoreWarning",
    "__version__",
    "export",
    "import_from",
    "memoize",
    "open",
    "register_serializer",
    "salvage",
]
