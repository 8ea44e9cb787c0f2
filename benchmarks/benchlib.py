"""Shared parts of the benchmark scripts in this directory.

Everything here is independent of which systems are measured: the records
every workload writes, the raw baseline, expected-state bookkeeping for the
persistence checks, running a function in a new process that never saw the store,
statistics, sizes on disk and in memory, facts about the machine, and
plain-text / Markdown tables.

Nothing here imports a peer library; ``numpy`` is used for the large values
when it is installed and replaced by ``bytes`` otherwise.
"""

from __future__ import annotations

import gc
import hashlib
import math
import multiprocessing
import os
import pickle
import platform
import statistics
import subprocess
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import logshelf

T = TypeVar("T")

#: How child processes start: forked from multiprocessing's fork server (a
#: clean process that imported logshelf and the benchmark modules and never
#: opens a store), or spawned where there is no fork server. Either way a
#: child shares no state with the process that wrote a store; the fork server
#: only saves the ~0.2 s of interpreter start-up and imports per child.
CHILDREN: Any = multiprocessing.get_context(
    "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
)

#: Size of one large value: 1 MiB.
LARGE_BYTES = 1 << 20

_numpy: Any = False  # not looked for yet


def numpy_module() -> Any:
    """The numpy module, or None when it is not installed. Imported on first
    use only: most child processes never need it, and it costs a tenth of a
    second to import."""
    global _numpy
    if _numpy is False:
        try:
            import numpy
        except ImportError:  # the test environment has no numpy
            numpy = None
        _numpy = numpy
    return _numpy


# ----------------------------------------------------------------------------
# records


def make_key(i: int) -> str:
    """The i-th small record's key: 15 ASCII characters."""
    return f"user:{i:010d}"


def make_value(i: int, generation: int = 0) -> dict[str, Any]:
    """The i-th small value, about 80 bytes pickled (below logshelf's default
    ``compress_min`` of 256, so compression never applies to it).
    ``generation`` tells an overwrite (1) or a write of the mixed workload (2)
    from the original (0); all generations pickle to the same size."""
    return {
        "id": i,
        "name": f"user{i}",
        "email": f"u{i}@example.com",
        "score": i * 0.5 + generation,
    }


def make_items(indices: Iterable[int], generation: int = 0) -> list[tuple[str, Any]]:
    """``(key, value)`` pairs of the small records ``indices``."""
    return [(make_key(i), make_value(i, generation)) for i in indices]


def large_key(i: int) -> str:
    """The i-th large record's key."""
    return f"blob:{i:010d}"


def large_value_kind() -> str:
    """What the large values are on this interpreter."""
    if numpy_module() is not None:
        return "numpy float64 array of 131,072 elements (1 MiB)"
    return "bytes of 1 MiB (numpy is not installed)"


def large_value(i: int) -> Any:
    """The i-th large value: 1 MiB of pseudo-random, barely compressible data,
    a numpy array when numpy is installed and ``bytes`` otherwise. The same
    ``i`` gives an equal value in every process."""
    numpy = numpy_module()
    if numpy is not None:
        return numpy.random.default_rng(i).standard_normal(LARGE_BYTES // 8)
    return hashlib.shake_128(f"large value {i}".encode()).digest(LARGE_BYTES)


def values_equal(a: Any, b: Any) -> bool:
    """Equality that also works for numpy arrays."""
    kind = type(a).__name__
    if kind == "ndarray" or type(b).__name__ == "ndarray":
        numpy = numpy_module()
        return bool(numpy.array_equal(a, b))
    return bool(a == b)


def chunked(seq: Sequence[T], size: int) -> list[Sequence[T]]:
    """``seq`` cut into consecutive pieces of at most ``size`` items."""
    return [seq[i : i + size] for i in range(0, len(seq), size)]


# ----------------------------------------------------------------------------
# expected state, for the persistence checks


#: What one key should hold: ``("small", i, generation)``, ``("large", i, 0)``
#: or ``("absent", i, 0)`` (the small key i was deleted).
Spec = tuple[str, int, int]


def spec_key(spec: Spec) -> str:
    """The key a spec is about."""
    kind, i, _ = spec
    return large_key(i) if kind == "large" else make_key(i)


def spec_value(spec: Spec) -> Any:
    """The value a spec expects (None for an absent key)."""
    kind, i, generation = spec
    if kind == "small":
        return make_value(i, generation)
    if kind == "large":
        return large_value(i)
    return None


def live_bytes(specs: Iterable[Spec]) -> int:
    """Bytes of the live data a store should hold: UTF-8 keys plus values
    pickled with protocol 5. The yardstick for sizes on disk."""
    total = 0
    for spec in specs:
        if spec[0] != "absent":
            total += len(spec_key(spec).encode()) + len(pickle.dumps(spec_value(spec), 5))
    return total


# ----------------------------------------------------------------------------
# the raw baseline


class RawLog:
    """The baseline: the least work a pickling append-only log can do.

    A write is ``pickle.dumps(value, 5)``, one append to a Python-buffered
    file and an ``(offset, length)`` entry in a dict. A read is a dict lookup,
    one ``os.pread`` and ``pickle.loads``. A delete removes the dict entry
    and appends the key, so that the log records it. Nothing is checksummed,
    locked or synced; writes reach the kernel when the 8 KiB buffer fills, at
    :meth:`flush` (part of every timed write workload) or when a read needs
    bytes still in the buffer. :meth:`close` saves the index as one pickle of
    the whole dict; opening loads it back.
    """

    DATA = "data.log"
    INDEX = "index.pickle"

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self._directory = directory
        data_path = os.path.join(directory, self.DATA)
        index_path = os.path.join(directory, self.INDEX)
        self._index: dict[str, tuple[int, int]] = {}
        if os.path.exists(index_path):
            with open(index_path, "rb") as f:
                self._index = pickle.load(f)
        self._file = open(data_path, "ab")  # noqa: SIM115 - lives as long as the store
        self._offset = self._file.tell()
        self._flushed = self._offset
        self._fd = os.open(data_path, os.O_RDONLY)

    def __setitem__(self, key: str, value: Any) -> None:
        data = pickle.dumps(value, 5)
        self._file.write(data)
        self._index[key] = (self._offset, len(data))
        self._offset += len(data)

    def __getitem__(self, key: str) -> Any:
        offset, length = self._index[key]
        if offset + length > self._flushed:  # only after a write in the same workload
            self.flush()
        return pickle.loads(os.pread(self._fd, length, offset))

    def __delitem__(self, key: str) -> None:
        del self._index[key]
        data = key.encode()
        self._file.write(data)
        self._offset += len(data)

    def flush(self) -> None:
        """Hand buffered writes to the kernel."""
        self._file.flush()
        self._flushed = self._offset

    def close(self) -> None:
        """Flush, and save the index as one pickle (atomically replaced)."""
        self._file.close()
        os.close(self._fd)
        tmp = os.path.join(self._directory, self.INDEX + ".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(self._index, f, 5)
        os.replace(tmp, os.path.join(self._directory, self.INDEX))


# ----------------------------------------------------------------------------
# fresh processes


class BenchmarkFailure(RuntimeError):
    """A system lost or damaged data, or a child process failed."""


def preload(modules: Sequence[str]) -> None:
    """Have the fork server import ``modules`` once, before it forks any child
    (call before the first child starts; nothing happens under spawn)."""
    if CHILDREN.get_start_method() == "forkserver":
        CHILDREN.set_forkserver_preload(list(modules))


def run_fresh(func: Callable[..., T], *args: Any) -> T:
    """Run ``func(*args)`` in a new child process and return its result.

    The child has imported ``func``'s module (and so logshelf) before
    ``func`` runs, so import time is never part of a measurement, and it
    has never opened the store it is given. Children inherit ``sys.path`` and
    the environment (``PYTHONPATH`` included).
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=CHILDREN) as pool:
        return pool.submit(func, *args).result()


# ----------------------------------------------------------------------------
# statistics and sizes


def median(values: Sequence[float]) -> float:
    """The median (NaN for no values)."""
    return statistics.median(values) if values else float("nan")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def disk_usage(path: str) -> tuple[int, int]:
    """``(allocated, apparent)`` bytes of every file under ``path``.

    Allocated bytes (``st_blocks``) are what the disk really gives the store:
    they count a whole block for each small file and nothing for the holes
    of a sparse file; apparent bytes are the sum of file lengths.
    """
    allocated = apparent = 0
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(directory, name))
            except FileNotFoundError:
                continue
            allocated += st.st_blocks * 512
            apparent += st.st_size
    return allocated, apparent


def resident_bytes() -> int:
    """Resident set size of this process in bytes (Linux ``/proc``; -1 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return -1


def collect() -> None:
    """Run the garbage collector before a timed loop (it stays enabled)."""
    gc.collect()


# ----------------------------------------------------------------------------
# facts about the run


def package_dir() -> str:
    """Directory of the logshelf package being measured."""
    return os.path.dirname(os.path.abspath(logshelf.__file__))


def git_state() -> str | None:
    """Short commit of the checkout logshelf is imported from, marked when the
    package has uncommitted changes; None outside a git checkout."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=package_dir(), capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", ".")
    except OSError:
        return None
    return f"{commit}+uncommitted" if commit and dirty else commit or None


def source_fingerprint() -> str:
    """Hash of the logshelf package's source files, to notice edits during a run."""
    package = package_dir()
    digest = hashlib.sha256()
    for name in sorted(os.listdir(package)):
        if name.endswith(".py"):
            with open(os.path.join(package, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()[:16]


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (or the platform's processor string)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict[str, Any]:
    """Facts about the machine and the measured logshelf."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "logshelf": logshelf.__version__,
        "logshelf_path": package_dir(),
        "git": git_state(),
        "source_sha256": source_fingerprint(),
        "large_values": large_value_kind(),
    }


# ----------------------------------------------------------------------------
# tables


@dataclass
class Table:
    """A table to print as text or Markdown."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        """Aligned plain text, with the title and notes."""
        widths = [
            max([len(h)] + [len(r[i]) for r in self.rows]) for i, h in enumerate(self.headers)
        ]
        lines = [f"== {self.title}"]
        lines.append(" | ".join(h.ljust(w) for h, w in zip(self.headers, widths, strict=True)))
        lines.append("-+-".join("-" * w for w in widths))
        for row in self.rows:
            lines.append(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        lines.extend(self.notes)
        return "\n".join(lines) + "\n"

    def markdown(self) -> str:
        """A GitHub Markdown table (numbers right-aligned), with notes below."""

        def align(column: int) -> str:
            words = ("", "—", "skip", "n/i", "FAIL")
            cells = [
                r[column]
                for r in self.rows
                if r[column] not in words and not r[column].startswith("LOST")
            ]
            numeric = bool(cells) and all(c[:1].isdigit() or c[:1] in "<>≤≥~" for c in cells)
            return "---:" if numeric else "---"

        lines = [f"**{self.title}**", ""]
        lines.append("| " + " | ".join(self.headers) + " |")
        lines.append("|" + "|".join(align(i) for i in range(len(self.headers))) + "|")
        for row in self.rows:
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
        if self.notes:
            lines.append("")
            lines.extend(self.notes)
        return "\n".join(lines) + "\n"


def iter_samples(values: Sequence[float], ops: Sequence[int]) -> Iterator[float]:
    """Seconds per operation of each sample."""
    for value, count in zip(values, ops, strict=True):
        if count:
            yield value / count
