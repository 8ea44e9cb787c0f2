"""Fingerprints of a function's code and of the code it depends on, so that a
memoizing cache stops serving results an edit has made stale: ``fingerprint``
gives a 16-byte digest and a digest per dependency (``parts``); ``diff`` says
which dependency changed.

Hashed: the *normalized* code, never the source text.

* A code object is the stream of ``dis`` instructions (opname and resolved
  argument: constants by value, names by name, jumps by offset), its parameter
  names and counts, the varargs/generator/coroutine flags and, on 3.11+, the
  exception table. CACHE entries (3.11+, zeros in ``co_code``) are skipped;
  ``dis`` reads the de-specialized code, so running a function does not change
  its digest. ``co_firstlineno``, the line table and ``co_filename`` are never
  read: comments, blank lines and moving a function change nothing.
* The docstring needs no per-version rule: it is ``co_consts[0]`` on 3.10-3.13
  (None there when absent; on 3.14 only with CO_HAS_DOCSTRING), no instruction
  loads it, and only constants that instructions load are hashed. Nested code
  (inner functions, lambdas, comprehensions before 3.12 inlined them) is
  hashed the same way. Sets are hashed in sorted order: PYTHONHASHSEED-free.
* Per function also its defaults, keyword-only defaults and closure cell
  contents (by value); a wrapper with ``__wrapped__`` stands for the wrapped.
* Dependencies, recursively: globals the code loads, modules it imports in its
  body, attributes it reads of user modules (``helpers.scale`` follows
  ``scale``, not the rest of ``helpers``), the class owning a method. User
  functions and classes (methods, class-level values, bases) are hashed as
  above, module-level values by value. "User" means the module's file is
  outside the standard library and site-packages, or there is none
  (``__main__``, notebooks, ``exec``). Third-party modules count by
  distribution version ("numpy==2.1.0"), the standard library by name,
  builtins not at all (their names are in the bytecode). One part is the
  interpreter's major.minor ("cpython-3.12"): bytecode differs between
  versions, so a Python upgrade invalidates every entry.

Not tracked:

* A decorator (``@lru_cache(maxsize=8)``) and a wrapper's own state; a
  wrapper is followed to the function it wraps (``__wrapped__``, or its cells).
* What code reaches dynamically (``getattr``, ``eval``), methods of non-user
  classes called on ``self``, the state of ``self``, and values no encoder
  can hash (they are "opaque:<type>", content unseen).
* Edits to third-party or standard-library code that keep the version.
* Beyond ``MAX_DEPTH`` references or ``MAX_OBJECTS`` objects from the function
  (``parts["<truncated>"]`` then says so).
* A fingerprint is computed once per function object per process: a helper
  redefined later (a notebook cell run again, a reload) is seen after
  ``clear_cache()``; a redefined memoized function is a new object, so seen.
"""

from __future__ import annotations

import dis
import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import site
import sys
import sysconfig
import types
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

ValueHasher = Callable[[object], bytes]

#: Bounds of the walk: references followed from the function, and objects
#: visited in all; a walk into a large user library stops instead of hashing it.
MAX_DEPTH = 24
MAX_OBJECTS = 2000

#: Digest format version: bump it when the normalization changes, so that
#: entries written by an older logshelf are not served by mistake.
_FORMAT = b"logshelf.code_hash/1\0"
_PYTHON = f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}"

#: co_flags VARARGS, VARKEYWORDS, GENERATOR, COROUTINE, ITERABLE_COROUTINE and
#: ASYNC_GENERATOR; the others (CO_NESTED, 3.14's CO_HAS_DOCSTRING) are no behaviour.
_FLAG_MASK = 0x4 | 0x8 | 0x20 | 0x80 | 0x100 | 0x200
_GLOBAL_OPS = frozenset({"LOAD_GLOBAL", "LOAD_NAME"})
_ATTR_OPS = frozenset({"LOAD_ATTR", "LOAD_METHOD", "IMPORT_FROM", "LOAD_SUPER_ATTR"})
#: Class attributes that are bookkeeping, not behaviour (3.13 adds the last two).
_CLASS_SKIP = {"__dict__", "__doc__", "__module__", "__qualname__", "__weakref__"}
_CLASS_SKIP |= {"__firstlineno__", "__static_attributes__"}


@dataclass(frozen=True)
class Fingerprint:
    """The code identity of a function: ``digest`` goes into cache keys,
    ``parts`` (dependency name -> short hex digest, "name==version" or
    "stdlib") is stored with entries so a miss can be explained with ``diff``.
    ``digest`` is a function of ``parts``. ``parts`` is a plain dict (picklable),
    shared by every caller of the cached fingerprint: copy it to change it."""

    digest: bytes
    parts: Mapping[str, str] = field(hash=False)


def diff(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """Human-readable differences between two ``Fingerprint.parts``: one line
    per dependency, "changed: mod.helper", "added: ...", "removed: ...".
    Versions and other non-digest values are shown as "(old -> new)"."""
    lines: list[str] = []
    for name in sorted(old.keys() & new.keys()):
        if old[name] != new[name]:
            detail = "" if _is_digest(old[name]) else f" ({old[name]} -> {new[name]})"
            lines.append(f"changed: {name}{detail}")
    lines += [f"added: {name}" for name in sorted(new.keys() - old.keys())]
    lines += [f"removed: {name}" for name in sorted(old.keys() - new.keys())]
    return lines


def _is_digest(text: str) -> bool:
    return len(text) == 16 and all(c in "0123456789abcdef" for c in text)


# -- the per-process cache ---------------------------------------------------

#: id(function) -> (weak reference, its __code__, value_hasher, fingerprint).
#: A plain dict keyed by id keeps the repeat lookup near 100 ns (a
#: WeakKeyDictionary costs a weakref per lookup); the weak reference and the
#: identity checks guard against a reused id and a reassigned ``__code__``.
_CACHE: dict[int, tuple[weakref.ref[Any], object, object, Fingerprint]] = {}


def clear_cache() -> None:
    """Forget every computed fingerprint, e.g. after redefining helpers in a
    notebook or reloading modules, so the next call walks the code again."""
    _CACHE.clear()


def fingerprint(
    func: Callable[..., Any], *, value_hasher: ValueHasher | None = None
) -> Fingerprint:
    """The fingerprint of ``func`` (a function, lambda, async function, bound
    method, staticmethod/classmethod object, ``functools.partial``, class or
    callable instance) and of the code and values it depends on.

    ``value_hasher`` hashes values the local encoder cannot (it handles plain
    literals and containers of them); it defaults to
    ``logshelf._hashing.hash_value`` when that module exists. A value it
    raises on counts as "opaque:<type>". Computed once per process per
    function object and then served from a dict (see ``clear_cache``)."""
    hit = _CACHE.get(id(func))
    code = getattr(func, "__code__", None)  # it can be assigned: checked too
    if hit is not None and hit[0]() is func and hit[1] is code and hit[2] is value_hasher:
        return hit[3]
    target: Any = func
    if isinstance(target, (types.MethodType, staticmethod, classmethod)):
        # A bound method is a new object on each attribute access: the
        # function behind it is what is cached.
        return fingerprint(target.__func__, value_hasher=value_hasher)
    walker = _Walker(value_hasher if value_hasher is not None else _default_value_hasher())
    result = walker.run(target)
    _remember(target, value_hasher, result)
    return result


def _remember(target: object, value_hasher: object, result: Fingerprint) -> None:
    key = id(target)

    def forget(ref: weakref.ref[Any]) -> None:
        if _CACHE.get(key, (None,))[0] is ref:  # not a newer entry of a reused id
            del _CACHE[key]

    try:
        ref = weakref.ref(target, forget)
    except TypeError:  # not weakly referenceable: computed again next time
        return
    _CACHE[key] = (ref, getattr(target, "__code__", None), value_hasher, result)


def _default_value_hasher() -> ValueHasher:
    """``logshelf._hashing.hash_value`` if present (written separately), else
    a hasher that declares every value opaque."""
    try:
        module = importlib.import_module("._hashing", __package__)
    except ImportError:
        return _opaque_value
    hasher: ValueHasher = module.hash_value
    return hasher


def _opaque_value(value: object) -> bytes:
    raise TypeError(f"no structural hash for {type(value).__qualname__}")


# -- where a module comes from -----------------------------------------------


@functools.lru_cache(maxsize=1)
def _path_roots() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(site-packages directories, standard-library directories), real paths
    with a trailing separator. site-packages is checked first: it lies inside
    the standard library directory of a non-venv interpreter."""
    paths = sysconfig.get_paths()
    third = {paths["purelib"], paths["platlib"]}
    third.update(getattr(site, "getsitepackages", list)())  # absent in some embedded sites
    if isinstance(user_site := site.getusersitepackages(), str):
        third.add(user_site)
    stdlib = {paths["stdlib"], paths["platstdlib"]}

    def norm(dirs: set[str]) -> tuple[str, ...]:
        return tuple(sorted({os.path.join(os.path.realpath(d), "") for d in dirs if d}))

    return norm(third), norm(stdlib)


@functools.lru_cache(maxsize=4096)
def _kind(module_name: str) -> str:
    """ "user", "stdlib" or "third" for a module name, from where its file is."""
    top = module_name.partition(".")[0]
    if top in sys.stdlib_module_names or top == "builtins":
        return "stdlib"
    if module_name == "__main__":
        return "user"  # a script or a notebook, even run through a tool in site-packages
    module = sys.modules.get(module_name) or sys.modules.get(top)
    where = getattr(module, "__file__", None)
    if where is None:  # a namespace package: look at where its parts are
        where = next(iter(getattr(module, "__path__", None) or ()), None)
    if not isinstance(where, str):
        return "user"  # __main__ of a notebook, exec'd code, a module built in memory
    where = os.path.realpath(where)
    third, stdlib = _path_roots()
    if where.startswith(third) or f"{os.sep}site-packages{os.sep}" in where:
        return "third"
    if where.startswith(stdlib):
        return "stdlib"
    return "user"


@functools.lru_cache(maxsize=1024)
def _version(top: str) -> str:
    """ "dist==version" for a top-level import name (the distribution often
    has the same name; else ask packages_distributions, which scans every
    installed distribution once, about 50 ms, so it is the fallback)."""
    try:
        return f"{top}=={importlib.metadata.version(top)}"
    except importlib.metadata.PackageNotFoundError:
        pass
    dists = sorted(set(_packages_distributions().get(top, ())))
    if dists:
        return ",".join(f"{d}=={importlib.metadata.version(d)}" for d in dists)
    return f"{top}=={getattr(sys.modules.get(top), '__version__', '?')}"


_packages_distributions = functools.cache(importlib.metadata.packages_distributions)


def _module_of(obj: object) -> str:
    name = getattr(obj, "__module__", None)
    if not isinstance(name, str):
        name = getattr(type(obj), "__module__", None)
    return name if isinstance(name, str) else "builtins"


def _name_of(obj: object) -> str:
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    return f"{_module_of(obj)}.{qualname or type(obj).__qualname__}"


# -- encoding ----------------------------------------------------------------


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def _frame(data: bytes) -> bytes:
    """Length-prefixed, so that concatenations cannot collide."""
    return len(data).to_bytes(8, "little") + data


class _Uses:
    """What some code refers to: global names it loads, attribute names it
    reads (followed on user modules), modules it imports ("." for level)."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.attrs: set[str] = set()
        self.imports: set[str] = set()


_CONTAINERS: dict[type, bytes] = {tuple: b"t", list: b"l", set: b"S", frozenset: b"F", dict: b"d"}


class _Walker:
    """One walk from a function through what it refers to, breadth-first in
    a sorted, hence reproducible, order."""

    def __init__(self, value_hasher: ValueHasher) -> None:
        self.value_hasher = value_hasher
        self.parts: dict[str, str] = {"python": _PYTHON}
        self.queue: deque[tuple[object, str | None, int, frozenset[str]]] = deque()
        self.seen: set[tuple[int, str | None]] = set()
        #: Keeps every visited object alive for the walk, so an id in
        #: ``seen`` cannot be reused by a new object meanwhile.
        self.keep: list[object] = []
        self.visited = 0

    def run(self, root: object) -> Fingerprint:
        self.enqueue(root, None, 0, frozenset(), force=True)
        while self.queue:
            obj, hint, depth, attrs = self.queue.popleft()
            if self.visited >= MAX_OBJECTS:
                self.parts["<truncated>"] = f"after {MAX_OBJECTS} objects"
                break
            self.visited += 1
            self.visit(obj, hint, depth, attrs)
        hasher = hashlib.blake2b(_FORMAT, digest_size=16)
        for name in sorted(self.parts):
            hasher.update(_frame(name.encode()) + _frame(self.parts[name].encode()))
        return Fingerprint(hasher.digest(), self.parts)

    def enqueue(
        self,
        obj: object,
        hint: str | None,
        depth: int,
        attrs: frozenset[str],
        force: bool = False,
    ) -> None:
        if not isinstance(obj, types.ModuleType):
            # Modules are visited once per reference (each time for the
            # attributes read then; MAX_OBJECTS bounds it). Values are told
            # apart by name too: small ints and interned strings are shared,
            # and `A = 3` in two modules are two dependencies.
            key = (id(obj), None if callable(obj) else hint)
            if key in self.seen:
                return
            self.seen.add(key)
        if depth > MAX_DEPTH:
            self.parts["<truncated>"] = f"beyond depth {MAX_DEPTH}"
            return
        self.keep.append(obj)
        if force:  # the function itself: its code is hashed wherever it lives
            self.visit(obj, hint, depth, attrs, force=True)
        else:
            self.queue.append((obj, hint, depth, attrs))

    def add_part(self, name: str, value: str) -> None:
        """Record a part; a second, different object of the same name (two
        lambdas of one module) gets "#2", in the walk's reproducible order."""
        key, n = name, 1
        while key in self.parts and self.parts[key] != value:
            n += 1
            key = f"{name}#{n}"
        self.parts[key] = value

    # -- visiting one object --------------------------------------------------

    def visit(
        self, obj: object, hint: str | None, depth: int, attrs: frozenset[str], force: bool = False
    ) -> None:
        if isinstance(obj, types.ModuleType):
            self.visit_module(obj, depth, attrs)
        elif isinstance(obj, (types.MethodType, staticmethod, classmethod)):
            self.enqueue(obj.__func__, hint, depth, attrs, force)
            if isinstance(obj, types.MethodType) and isinstance(obj.__self__, type):
                self.enqueue(obj.__self__, None, depth + 1, frozenset())  # a bound classmethod
        elif isinstance(obj, functools.partial):
            refs: list[object] = [obj.func]
            data = _frame(self.encode(obj.args, refs)) + _frame(self.encode(obj.keywords, refs))
            self.add_part(f"functools.partial({_name_of(obj.func)})", _digest(data))
            self.follow(refs, depth)
        elif isinstance(obj, (types.FunctionType, type)):
            kind = "user" if force else _kind(_module_of(obj))
            if kind != "user":
                self.library_part(kind, _module_of(obj), _name_of(obj))
            elif isinstance(obj, type):
                self.visit_class(obj, depth)
            else:
                self.visit_function(obj, depth)
        elif force and callable(obj):  # a callable instance: its class has __call__
            self.enqueue(type(obj), None, depth, frozenset(), force=True)
        elif callable(obj) and (kind := _kind(_module_of(obj))) != "user":
            self.library_part(kind, _module_of(obj), _name_of(obj))  # a builtin, a ufunc...
        else:  # a value: by value, and its class (its methods may be called)
            refs = []
            self.add_part(hint or _name_of(obj), _digest(self.encode(obj, refs)))
            self.follow([*refs, type(obj)], depth)

    def library_part(self, kind: str, module: str, name: str) -> None:
        """Third-party code by distribution version, the standard library by
        name, builtins not at all."""
        if kind == "third":
            top = module.partition(".")[0]
            self.add_part(top, _version(top))
        elif module != "builtins":
            self.add_part(name, "stdlib")

    def visit_module(self, module: types.ModuleType, depth: int, attrs: frozenset[str]) -> None:
        name = module.__name__
        if (kind := _kind(name)) != "user":
            self.library_part(kind, name, name)
        else:
            # Only what the code reads: `helpers.scale(x)` follows scale; the
            # rest of a user module may change freely. __dict__, not getattr:
            # no module __getattr__ runs.
            namespace = vars(module)
            for attr in sorted(attrs):
                if attr in namespace:
                    self.enqueue(namespace[attr], f"{name}.{attr}", depth + 1, attrs)

    def visit_function(self, func: types.FunctionType, depth: int) -> None:
        refs: list[object] = []
        uses = _Uses()
        name, code = _name_of(func), func.__code__
        if "__wrapped__" in vars(func):  # wraps() gave it the wrapped one's name
            name = f"{_module_of(func)}.{getattr(code, 'co_qualname', code.co_name)}"
        self.add_part(name, _digest(self.function(func, uses, refs)))
        self.follow(refs, depth)
        self.follow_uses(func.__globals__, uses, depth)
        owner = self.owner_class(func)
        if owner is not None:  # `self.other()` in a method: the class has `other`
            self.enqueue(owner, None, depth + 1, frozenset())

    def function(self, func: types.FunctionType, uses: _Uses, refs: list[object]) -> bytes:
        """A function's normalized code, defaults, closure values and
        ``__wrapped__``; references among them are appended to ``refs``.

        A wrapper (``functools.wraps`` set ``__wrapped__``) stands for the
        function it wraps: its own closure holds the decorator's state (a
        memoized function's cache and hit counts), which is no part of what
        the function computes and would change the digest at every call."""
        wrapped = vars(func).get("__wrapped__")
        if wrapped is not None:
            return b"w" + self.encode(wrapped, refs)
        pieces = [self.code(func.__code__, uses), self.encode(func.__defaults__, refs)]
        pieces.append(self.encode(func.__kwdefaults__, refs))
        for cell in func.__closure__ or ():
            try:
                pieces.append(self.encode(cell.cell_contents, refs))
            except ValueError:  # an empty cell (a name assigned after the def)
                pieces.append(b"<empty cell>")
        return b"".join(_frame(p) for p in pieces)

    def visit_class(self, cls: type, depth: int) -> None:
        """Bases, metaclass, and each class attribute by name: methods defined
        in this class body by their code, other values by value."""
        refs: list[object] = []
        pieces = [self.encode(cls.__bases__, refs), self.encode(type(cls), refs)]
        module = sys.modules.get(cls.__module__)
        namespace: Mapping[str, Any] = vars(module) if module is not None else {}
        uses = _Uses()
        for attr, value in sorted(vars(cls).items()):
            if attr in _CLASS_SKIP:
                continue
            inner = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
            accessors = (
                [inner.fget, inner.fset, inner.fdel] if isinstance(inner, property) else [inner]
            )
            piece = [attr.encode(), type(value).__name__.encode()]
            for acc in accessors:
                if isinstance(acc, types.FunctionType) and acc.__qualname__.startswith(
                    cls.__qualname__ + "."
                ):
                    piece.append(self.function(acc, uses, refs))
                    namespace = acc.__globals__  # the module's, also for a class built by exec
                else:
                    piece.append(self.encode(acc, refs))
            pieces.append(b"".join(_frame(p) for p in piece))
        self.add_part(_name_of(cls), _digest(b"".join(_frame(p) for p in pieces)))
        self.follow(refs, depth)
        self.follow_uses(namespace, uses, depth)

    @staticmethod
    def owner_class(func: types.FunctionType) -> type | None:
        """The class a method was defined in, found through its qualified name
        ("Model.predict" -> Model) unless it was defined inside a function."""
        path = func.__qualname__.split(".")[:-1]
        if not path or "<locals>" in path:
            return None
        current: Any = func.__globals__.get(path[0])
        for part in path[1:]:
            current = vars(current).get(part) if isinstance(current, type) else None
        return current if isinstance(current, type) else None

    def follow(self, refs: list[object], depth: int) -> None:
        for obj in refs:
            self.enqueue(obj, None, depth + 1, frozenset())

    def follow_uses(self, namespace: Mapping[str, Any], uses: _Uses, depth: int) -> None:
        """Enqueue what the global names and imports of some code resolve to,
        in sorted order. Names not in ``namespace`` are builtins (their names
        are in the bytecode) or not defined yet: skipped."""
        read = frozenset(uses.attrs)
        module_name = namespace.get("__name__", "?")
        for name in sorted(uses.names):
            if name in namespace:
                self.enqueue(namespace[name], f"{module_name}.{name}", depth + 1, read)
        for spec in sorted(uses.imports):
            try:
                absolute = importlib.util.resolve_name(spec, namespace.get("__package__") or "")
            except (ImportError, ValueError):  # a relative import outside a package
                continue
            if (imported := sys.modules.get(absolute)) is not None:
                self.enqueue(imported, None, depth + 1, read)

    # -- normalized code --------------------------------------------------------

    def code(self, code: types.CodeType, uses: _Uses) -> bytes:
        """The normalized form of a code object (see the module docstring),
        collecting the global names, attribute names and imports it uses."""
        nparams = code.co_argcount + code.co_kwonlyargcount
        nparams += bool(code.co_flags & 0x4) + bool(code.co_flags & 0x8)  # *args, **kwargs
        head = (
            code.co_name,
            code.co_flags & _FLAG_MASK,
            code.co_argcount,
            code.co_posonlyargcount,
            code.co_kwonlyargcount,
            code.co_varnames[:nparams],
            code.co_freevars,
        )
        out = [self.literal(head, [], 0, strict=True)]
        previous: list[object] = [None, None]  # the two last argvals: IMPORT_NAME's level
        for ins in dis.get_instructions(code):
            op, value = ins.opname, ins.argval
            if op == "CACHE":
                continue
            if op in _GLOBAL_OPS:
                uses.names.add(value)
            elif op in _ATTR_OPS:
                uses.attrs.add(value)
            elif op == "IMPORT_NAME":
                level = previous[0] if isinstance(previous[0], int) else 0
                uses.imports.add("." * level + value)
                uses.attrs.update(value.split("."))
            if isinstance(value, types.CodeType):
                piece = self.code(value, uses)
            else:
                piece = self.literal(value, [], 0, strict=True)
            out.append(_frame(op.encode()) + _frame(piece))
            previous = [previous[1], value]
        # 3.11+: which ranges are guarded and where handlers start (offsets
        # only, no line numbers). Absent before 3.11: SETUP_* ops carry it.
        out.append(_frame(getattr(code, "co_exceptiontable", b"")))
        return hashlib.blake2b(b"".join(out), digest_size=16).digest()

    # -- values -----------------------------------------------------------------

    def encode(self, value: object, refs: list[object]) -> bytes:
        """A value: literals and containers structurally; functions, classes,
        modules by name (and appended to ``refs`` to be followed); anything
        else through the value hasher, else opaque by type name."""
        return self.literal(value, refs, 0, strict=False)

    def leaf(self, value: object, refs: list[object]) -> bytes:
        try:
            return b"v" + self.value_hasher(value)
        except Exception:  # any failure of a foreign hasher means: cannot hash
            refs.append(type(value))  # still follow its class (methods, version)
            return f"opaque:{_module_of(type(value))}.{type(value).__qualname__}".encode()

    def literal(self, value: object, refs: list[object], depth: int, strict: bool) -> bytes:
        """Tagged encodings; containers length-framed, sets and dicts in the
        sorted order of their encodings (so free of PYTHONHASHSEED). ``strict``
        is for code constants (what ``dis`` resolves an argument to)."""
        if value is None or value is Ellipsis or isinstance(value, bool):
            return repr(value).encode()
        if isinstance(value, int):
            return b"i" + hex(value).encode()  # str() refuses > 4300 digits (3.11+)
        if isinstance(value, float):
            return b"f" + value.hex().encode()  # exact, and tells -0.0 from 0.0
        if isinstance(value, complex):
            return b"j" + value.real.hex().encode() + b"," + value.imag.hex().encode()
        if isinstance(value, str):
            return b"s" + value.encode("utf-8", "surrogatepass")
        if isinstance(value, (bytes, bytearray)):
            return b"b" + bytes(value)
        if isinstance(value, range):
            return b"r" + f"{value.start},{value.stop},{value.step}".encode()
        if isinstance(value, types.CodeType):
            return b"c" + self.code(value, _Uses())
        tag = _CONTAINERS.get(type(value))
        if tag is not None and depth < 32:  # deeper: a list that holds itself
            if isinstance(value, dict):
                items = [
                    _frame(self.literal(k, refs, depth + 1, strict))
                    + _frame(self.literal(v, refs, depth + 1, strict))
                    for k, v in value.items()
                ]
            else:
                assert isinstance(value, (tuple, list, set, frozenset))
                items = [self.literal(v, refs, depth + 1, strict) for v in value]
            if tag in b"SFd":
                items.sort()
            return tag + b"".join(_frame(item) for item in items)
        if strict:  # a code constant, from an AST built by hand: by type, not repr (ids)
            return b"?" + type(value).__qualname__.encode()
        if callable(value) or isinstance(value, (types.ModuleType, classmethod, property)):
            refs.append(value)  # code: followed as a dependency of its own
            return b"@" + _name_of(value).encode()
        return self.leaf(value, refs)
