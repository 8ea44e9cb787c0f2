"""The server-side scripts of the Redis backend, and the namespace lock.

Every write is one Lua script (``WRITE``): Redis runs a script atomically,
and the script refuses to write while another client's transaction holds
the namespace lock, so writers of a namespace serialize on that lock exactly
as writers of a store directory serialize on its lock file. A script only
writes after every check passed, so a refused or failed write changes
nothing. The lock is a key holding a random token with an expiry (a holder
that dies lets go after ``lock_ttl``); a live holder renews it from a
thread. The token is the fencing token: a commit whose token is no longer
the lock's value (it expired and another client took it) writes nothing.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from .errors import LockTimeoutError

__all__ = [
    "ACQUIRE",
    "FENCED",
    "LOCKED",
    "LOST",
    "MISSING_CHUNK",
    "PUT_ONE",
    "RELEASE",
    "RENEW",
    "WRITE",
    "Lock",
]

#: ``WRITE`` statuses (first element of its reply).
OK = 0
LOCKED = -1  # another client's transaction holds the lock: wait and retry
LOST = -2  # this transaction's lock expired (another may have written)
MISSING_CHUNK = -3  # a new chunk expired before its pointer was committed
FENCED = -4  # a newer fencing token already wrote this key: the write is stale

# KEYS: lock, fence, the n value keys, then the new chunk keys.
# ARGV: token ('' outside a transaction), n, grace (ms) of old chunks, the
# chunk key prefix, expiry of what is written (ms since the epoch, '0':
# none), fencing token ('' none), then the n new records ('' deletes).
WRITE = """
local holder = redis.call('GET', KEYS[1])
if ARGV[1] ~= '' then
  if holder ~= ARGV[1] then return {-2, 0} end
elseif holder then
  return {-1, 0}
end
local fence = ARGV[6]
if fence ~= '' then
  local last = redis.call('GET', KEYS[2])
  if last and tonumber(last) > tonumber(fence) then return {-4, 0} end
end
local n = tonumber(ARGV[2])
for i = n + 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then return {-3, 0} end
end
local grace = tonumber(ARGV[3])
local expire = ARGV[5]
local deleted = 0
for i = 1, n do
  local key = KEYS[i + 2]
  local head = redis.call('GETRANGE', key, 0, 65)
  if #head == 66 and string.byte(head, 1) == 178 then
    local version = string.sub(head, 25, 56)
    local count = tonumber(string.sub(head, 57, 66))
    if count and count <= 1000000 then
      for c = 0, count - 1 do
        redis.call('PEXPIRE', ARGV[4] .. version .. ':' .. c, grace)
      end
    end
  end
  local value = ARGV[i + 6]
  if value == '' then
    deleted = deleted + redis.call('DEL', key)
  else
    redis.call('SET', key, value)
    if expire ~= '0' then redis.call('PEXPIREAT', key, expire) end
  end
end
for i = n + 3, #KEYS do
  if expire ~= '0' then
    redis.call('PEXPIREAT', KEYS[i], expire)
  else
    redis.call('PERSIST', KEYS[i])
  end
end
if fence ~= '' then
  redis.call('SET', KEYS[2], fence)
  if expire ~= '0' then redis.call('PEXPIREAT', KEYS[2], expire) end
end
return {0, deleted}
"""

# The common write: one small value, outside any transaction. KEYS: the
# lock, the value key. ARGV: the record. 0: the lock is held (write it with
# WRITE, which waits); 1: written. Old chunks get the grace WRITE gives them.
PUT_ONE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local head = redis.call('GETRANGE', KEYS[2], 0, 65)
if #head == 66 and string.byte(head, 1) == 178 then
  local prefix = string.sub(KEYS[1], 1, -5) .. 'c:' .. string.sub(head, 25, 56) .. ':'
  local count = tonumber(string.sub(head, 57, 66))
  if count and count <= 1000000 then
    for c = 0, count - 1 do redis.call('PEXPIRE', prefix .. c, 60000) end
  end
end
redis.call('SET', KEYS[2], ARGV[1])
return 1
"""

# KEYS: lock. ARGV: token, ttl (ms).
ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

#: Waits between attempts to take a held lock (seconds), doubling up to this.
_FIRST_WAIT = 0.001
_MAX_WAIT = 0.05


def wait_steps(timeout: float | None, what: str, where: str) -> Callable[[], None]:
    """A function to call each time a lock was found held: it sleeps a
    growing step, and raises :class:`LockTimeoutError` once ``timeout``
    seconds have passed since this was created (None: never)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    step = [_FIRST_WAIT]

    def wait() -> None:
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise LockTimeoutError(
                f"timed out after {timeout} s waiting for {what} of {where} "
                "(another client's transaction holds the namespace lock)"
            )
        pause = step[0] if deadline is None else min(step[0], deadline - now)
        time.sleep(max(pause, 0.0))
        step[0] = min(step[0] * 2, _MAX_WAIT)

    return wait


class Lock:
    """One holding of a lock key: taken by :meth:`acquire` or
    :meth:`try_acquire`, renewed every third of its ttl from a daemon
    thread, given up by :meth:`release`."""

    def __init__(self, run: Callable[[str, list[Any]], Any], ttl: float) -> None:
        #: ``run(script, [token, ...])`` evaluates a script on the lock key.
        self._run = run
        self._ttl_ms = max(int(ttl * 1000), 100)
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: False once a renewal found the lock gone (the commit will fail).
        self.held = False

    def _take(self) -> bool:
        """One attempt at the lock key (a subclass may take it differently)."""
        return bool(self._run(ACQUIRE, [self.token, self._ttl_ms]))

    def try_acquire(self) -> bool:
        """Take the lock if it is free; never wait."""
        if not self._take():
            return False
        self.held = True
        self._thread = threading.Thread(target=self._renew, name="logshelf-redis-lock", daemon=True)
        self._thread.start()
        return True

    def acquire(self, timeout: float | None, where: str) -> bool:
        """Take the lock, waiting up to ``timeout`` (None: as long as it
        takes); return whether it had to wait."""
        wait = wait_steps(timeout, "the lock", where)
        waited = False
        while not self.try_acquire():
            waited = True
            wait()
        return waited

    def _renew(self) -> None:
        while not self._stop.wait(self._ttl_ms / 3000):
            try:
                if not self._run(RENEW, [self.token, self._ttl_ms]):
                    self.held = False
                    return
            except Exception:
                pass  # unreachable for now: the next renewal or the commit tells

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.held:
            self.held = False
            self._run(RELEASE, [self.token])
