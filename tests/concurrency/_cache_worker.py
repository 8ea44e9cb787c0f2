"""Child side of the cache's single-flight tests: ``python _cache_worker.py JSON``.

The JSON gives ``cache`` (directory), ``counter`` (a file every computation
appends a line to), ``go`` (a file to wait for: the start barrier), ``sleep``
(seconds the computation takes) and ``x`` (the argument). The worker prints
``ready``, waits for the go file, calls the memoized function once and
prints ``result <json>`` with the value and the wall-clock time it returned.
"""

from __future__ import annotations

import json
import os
import sys
import time

import logshelf

args = json.loads(sys.argv[1])
os.environ["CACHE_TEST_COUNTER"] = args["counter"]
os.environ["CACHE_TEST_SLEEP"] = str(args["sleep"])
cache = logshelf.Cache(args["cache"])


@cache.memoize()
def compute(x):
    # Read from the environment, not from ``args``: a module-level value the
    # function reads is part of its code fingerprint, and workers with other
    # sleeps would then compute other keys.
    with open(os.environ["CACHE_TEST_COUNTER"], "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(float(os.environ["CACHE_TEST_SLEEP"]))
    return {"x": x, "by": os.getpid()}


print("ready", flush=True)
while not os.path.exists(args["go"]):
    time.sleep(0.001)
value = compute(args["x"])
print("result " + json.dumps({"value": value, "returned": time.time()}), flush=True)
cache.close()
