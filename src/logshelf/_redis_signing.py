"""Signed namespaces on Redis (docs/security.md): the identity and key check
that a signed store keeps in its ``SIGNED`` file (``_signing``) are fields
``identity`` and ``keycheck`` of the namespace's meta hash (docs/format.md
§9.1). Records are signed and checked as on disk."""

from __future__ import annotations

import os
from typing import Any

from . import _redis_format as rfmt
from ._signing import Signer, key_check
from .errors import SigningError

__all__ = ["open_signer"]


def open_signer(
    client: Any, keys: rfmt.Keys, path: str, flag: str, given: tuple[bytes, ...], count: int
) -> Signer | None:
    """The signer of a namespace opened with keys ``given`` (None: unsigned),
    as ``_signing.open_signer`` does for a directory: a namespace without
    data becomes signed, flag "n" gives it a new identity (or, without keys,
    makes it unsigned), and a rotation moves the key check to the newest key.

    Raises:
        SigningError: a signed namespace without keys, an unsigned one
            holding data with keys, or keys none of which fits.
    """
    meta = keys.meta
    writable = flag != "r"
    identity, check = client.hmget(meta, "identity", "keycheck")
    if not given:
        if identity is None:
            return None
        if flag == "n":  # emptied: unsigned from now on
            client.hdel(meta, "identity", "keycheck")
            return None
        raise SigningError(f"{path} is a signed namespace: open it with key= (its key)")
    if identity is None or flag == "n":
        values = client.scan_iter(match=keys.value_pattern(), count=count)
        if identity is None and (not writable or next(iter(values), None) is not None):
            raise SigningError(f"{path} is not a signed namespace, and key= reads signed ones only")
        identity = os.urandom(16)
        check = key_check(given[0], identity)
        client.hset(meta, mapping={"identity": identity, "keycheck": check})
    signer = Signer(given, identity, check, path)
    if signer.stale_check and writable:
        client.hset(meta, "keycheck", key_check(given[0], identity))
    return signer
