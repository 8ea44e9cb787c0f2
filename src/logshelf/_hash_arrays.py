"""numpy and pandas for :mod:`logshelf._hashing`, and the array memo.

* the encoders of numpy arrays and scalars and of pandas objects. numpy and
  pandas are never imported here: an argument of their types can only exist
  once the program imported them, so they are looked up in ``sys.modules``;
* the array memo behind :func:`remember` and :func:`freeze` (why it is safe,
  and when it applies, is in :mod:`logshelf._hashing`'s docstring).

Encoders write into a :class:`~logshelf._hash_types.Sink` (the encoder of
``_hashing``) and recurse through its ``encode`` method, which keeps the
imports one way. The buffer hasher is called as ``_hash_types.tree_digest``
so that a test can count its calls.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from typing import Any

from logshelf import _hash_types
from logshelf._hash_types import LEN, TAG_LEN, TREE_MIN, Refused, Sink, feed_buffer

# -- the array memo -----------------------------------------------------------


class _Memo:
    """A remembered array: a weak reference, what its bytes depend on, its digest."""

    __slots__ = ("digest", "fingerprint", "ref")

    def __init__(self, ref: weakref.ref[Any], fingerprint: tuple[object, ...]) -> None:
        self.ref = ref
        self.fingerprint = fingerprint
        self.digest: bytes | None = None


_memo: dict[int, _Memo] = {}


def _fingerprint(arr: Any) -> tuple[object, ...]:
    # Everything the C-order bytes of an array with immutable memory depend on:
    # shape, strides and dtype can be reassigned in place on the same object.
    return (arr.__array_interface__["data"][0], arr.shape, arr.strides, arr.dtype.str)


def immutable_root(arr: Any) -> bool:
    """True when ``arr``'s memory provably cannot change: it is read-only, holds
    no object references, and its base chain (arrays, memoryviews) ends in a
    ``bytes`` object. numpy refuses to make any array over ``bytes`` writeable,
    and no writable view of that memory can exist."""
    if arr.flags.writeable or arr.dtype.hasobject or arr.dtype.kind == "T":
        return False
    np = sys.modules["numpy"]
    base: object = arr.base
    while base is not None:
        if type(base) is bytes:
            return True
        if isinstance(base, np.ndarray):
            base = base.base
        elif isinstance(base, memoryview):
            base = base.obj
        else:
            return False
    return False  # owns its data: the writeable flag can be set back to True


def _register(arr: Any) -> _Memo:
    key = id(arr)

    def drop(ref: weakref.ref[Any], key: int = key) -> None:
        entry = _memo.get(key)
        if entry is not None and entry.ref is ref:
            del _memo[key]

    entry = _Memo(weakref.ref(arr, drop), _fingerprint(arr))
    _memo[key] = entry
    return entry


def _memo_for(arr: Any) -> _Memo | None:
    """The valid memo entry of ``arr`` (created if it qualifies), else None."""
    entry = _memo.get(id(arr))
    if entry is not None and entry.ref() is arr and entry.fingerprint == _fingerprint(arr):
        return entry
    return _register(arr) if immutable_root(arr) else None


def remember(value: object, _depth: int = 0) -> object:
    """Register the provably immutable arrays in ``value`` (itself, or inside
    lists, tuples and dict values) so that hashing them again reuses the first
    digest. Other values are left alone; ``value`` is returned unchanged."""
    np = sys.modules.get("numpy")
    if np is not None and type(value) is np.ndarray:
        arr: Any = value
        if arr.nbytes >= TREE_MIN and arr.base is not None:
            _memo_for(arr)
    elif _depth < 8 and isinstance(value, (list, tuple)):
        for item in value:
            remember(item, _depth + 1)
    elif _depth < 8 and isinstance(value, dict):
        for item in value.values():
            remember(item, _depth + 1)
    return value


def freeze(value: object) -> object:
    """A copy of ``value`` whose numpy arrays (itself, or inside lists, tuples
    and dict values) live on immutable ``bytes``: read-only, rememberable.
    Costs one memory copy per array that is not already frozen."""
    np = sys.modules.get("numpy")
    if np is not None and type(value) is np.ndarray:
        arr: Any = value
        if arr.dtype.hasobject or arr.dtype.kind == "T" or immutable_root(arr):
            return arr  # object arrays hold references: copying bytes cannot freeze them
        return np.frombuffer(arr.tobytes(), dtype=arr.dtype).reshape(arr.shape)
    if type(value) is list:
        return [freeze(item) for item in value]
    if type(value) is tuple:
        return tuple(freeze(item) for item in value)
    if type(value) is dict:
        return {key: freeze(item) for key, item in value.items()}
    return value


# -- numpy ----------------------------------------------------------------------


def _enc_shape(out: bytearray, shape: tuple[int, ...]) -> None:
    out += LEN(len(shape))
    for dim in shape:
        out += LEN(dim)


def enc_ndarray(sink: Sink, arr: Any) -> None:
    """dtype, shape, then the C-order content: raw bytes (never a pickle), or
    element by element for dtypes whose bytes are pointers (object, StringDType)."""
    out = sink.out
    dtype = arr.dtype
    out += b"n"
    if dtype.names is None:
        sink.encode(dtype.str)
    else:  # structured: dtype.str ("|V16") would drop the field names
        sink.encode(dtype.descr)
    _enc_shape(out, arr.shape)
    if dtype.hasobject or dtype.kind == "T":
        out += b"O"
        for i, item in enumerate(arr.ravel().tolist() if dtype.kind == "T" else arr.ravel()):
            try:
                sink.encode(item)
            except Refused as exc:
                exc.parts.append(f"[{i}]" if arr.ndim == 1 else f".flat[{i}]")
                raise
        return
    entry = _memo_for(arr) if arr.nbytes >= TREE_MIN and arr.base is not None else None
    if entry is not None and entry.digest is not None:
        out += TAG_LEN(b"B", arr.nbytes)
        out += entry.digest
        return
    np = sys.modules["numpy"]
    flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    if entry is not None:
        entry.digest = _hash_types.tree_digest(memoryview(flat))
        feed_buffer(sink, flat, entry.digest)
    else:
        feed_buffer(sink, flat)


def enc_numpy_scalar(sink: Sink, value: Any) -> None:
    """Numeric numpy scalars hash like the Python number they equal (as
    ``hash()`` and lru_cache treat them); other scalars as 0-d arrays."""
    np = sys.modules["numpy"]
    if isinstance(value, (np.integer, np.bool_)):
        sink.encode(int(value))
    elif isinstance(value, np.floating):
        if value.dtype.itemsize <= 8:
            sink.encode(float(value))
        elif np.isfinite(value):  # long double: exact, whatever its padding bytes
            sink.encode(_fraction(*value.as_integer_ratio()))
        else:
            sink.encode(float(value))
    elif isinstance(value, np.complexfloating):
        real, imag = value.real, value.imag
        sink.encode(complex(float(real), float(imag)) if imag else real)
    elif isinstance(value, np.str_):
        sink.encode(str(value))
    elif isinstance(value, np.bytes_):
        sink.encode(bytes(value))
    else:  # datetime64, timedelta64, void
        sink.out += b"v"
        enc_ndarray(sink, np.asarray(value))


def _fraction(numerator: int, denominator: int) -> object:
    from fractions import Fraction

    return Fraction(numerator, denominator)


# -- pandas -----------------------------------------------------------------------


def _enc_values(sink: Sink, values: Any) -> None:
    """A column's or an index's values: numpy-backed through the array encoder;
    extension arrays by their dtype and backing arrays (element-wise last)."""
    np, pd = sys.modules["numpy"], sys.modules["pandas"]
    # .array wraps a plain ndarray in NumpyExtensionArray (PandasArray before 2.1).
    wrapper = getattr(pd.arrays, "NumpyExtensionArray", None) or pd.arrays.PandasArray
    if isinstance(values, (np.ndarray, wrapper)):
        enc_ndarray(sink, np.asarray(values))
        return
    dtype = values.dtype
    sink.out += b"j"
    sink.encode(dtype)
    backing = getattr(values, "_ndarray", None)  # datetimes, categoricals, strings
    if isinstance(backing, np.ndarray):
        enc_ndarray(sink, backing)
        return
    data, mask = getattr(values, "_data", None), getattr(values, "_mask", None)
    if isinstance(data, np.ndarray) and isinstance(mask, np.ndarray):  # nullable ints
        enc_ndarray(sink, data)
        enc_ndarray(sink, mask)
        return
    enc_ndarray(sink, np.asarray(values, dtype=object))


def enc_index(sink: Sink, index: Any) -> None:
    """Names and values of an Index; a RangeIndex by its range (no values made),
    a MultiIndex level by level (codes depend on how it was built)."""
    pd = sys.modules["pandas"]
    out = sink.out
    out += b"X"
    sink.encode(list(index.names))
    if isinstance(index, pd.RangeIndex):
        sink.encode(range(index.start, index.stop, index.step))
    elif isinstance(index, pd.MultiIndex):
        out += TAG_LEN(b"K", index.nlevels)
        for level in range(index.nlevels):
            _enc_values(sink, index.get_level_values(level).array)
    else:
        _enc_values(sink, index.array)


def enc_series(sink: Sink, series: Any) -> None:
    sink.out += b"Q"
    sink.encode(series.name)
    enc_index(sink, series.index)
    _enc_values(sink, series.array)


def enc_dataframe(sink: Sink, frame: Any) -> None:
    """Index, columns, then each column's dtype and values, column by column:
    the block layout (which depends on how the frame was built) never shows."""
    out = sink.out
    out += b"P"
    try:
        enc_index(sink, frame.index)
    except Refused as exc:
        exc.parts.append(".index")
        raise
    enc_index(sink, frame.columns)
    out += LEN(frame.shape[1])
    for position, (label, column) in enumerate(frame.items()):
        try:
            _enc_values(sink, column.array)
        except Refused as exc:
            exc.parts.append(f".iloc[:, {position}]  (column {label!r})")
            raise


def resolve(cls: type) -> Callable[[Sink, Any], None] | None:
    """The encoder of a numpy or pandas type, or None for any other type."""
    module = cls.__module__ or ""
    np = sys.modules.get("numpy")
    if np is not None and module.startswith("numpy"):
        if cls is np.ndarray:
            return enc_ndarray
        if issubclass(cls, np.generic):
            return enc_numpy_scalar
    pd = sys.modules.get("pandas")
    if pd is not None and module.startswith("pandas"):
        if issubclass(cls, pd.DataFrame):
            return enc_dataframe
        if issubclass(cls, pd.Series):
            return enc_series
        if issubclass(cls, pd.Index):
            return enc_index
    return None
