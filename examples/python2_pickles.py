"""Read data pickled by Python 2: a shelf, a pickle file, values in a store.

Run:  python examples/python2_pickles.py [FOLDER]

Writes under FOLDER (default: $LOGSHELF_EXAMPLES_DIR, else the current
directory); each run starts from empty. The pickles below are real Python 2
output (from tests/fixtures/py2_pickles.json), so no Python 2 is needed.
How-to: docs/how-to/python2-pickles.md.
"""

from __future__ import annotations

import dbm.dumb
import os
import pickle
import shutil
import sys
from pathlib import Path

import logshelf

HERE = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("LOGSHELF_EXAMPLES_DIR", "."))
HERE.mkdir(parents=True, exist_ok=True)
for leftover in ("imported.db", "imported-bytes.db"):
    shutil.rmtree(HERE / leftover, ignore_errors=True)

#: What Python 2.7 wrote with pickle.dumps(value, 2) for three values: the
#: 8-bit str "caf\xe9 cr\xe8me" (Latin-1 bytes), a datetime, and the numpy
#: array [1.5, -2.0, 3.25].
PY2 = {
    "title": "8002550a636166e9206372e86d6571002e",
    "updated": "8002636461746574696d650a6461746574696d650a7100550a07e805110c1e2d01e2"
    "4071018571025271032e",
    "weights": "8002636e756d70792e636f72652e6d756c746961727261790a5f7265636f6e737472"
    "7563740a7100636e756d70790a6e6461727261790a71014b00857102550162877103527104284b01"
    "4b03857105636e756d70790a64747970650a7106550266384b004b01877107527108284b0355013c"
    "4e4e4e4affffffff4affffffff4b0074710962895518000000000000f83f00000000000000c00000"
    "000000000a40710a74710b622e",
}

# A shelf as a Python 2 program left it: shelve over dbm.dumb, whose file
# format is the same in Python 2 and 3.
with dbm.dumb.open(str(HERE / "legacy-py2"), "n") as old:
    for key, hex_pickle in PY2.items():
        old[key.encode()] = bytes.fromhex(hex_pickle)

# --8<-- [start:fail]
# Python 3 reads a Python 2 str as ASCII text by default, and this one is not:
try:
    pickle.loads(bytes.fromhex(PY2["title"]))
except UnicodeDecodeError as exc:
    print("default encoding:", type(exc).__name__)
# --8<-- [end:fail]

# --8<-- [start:import]
# latin1 turns every Python 2 str into a str, byte for byte; it is also what
# numpy arrays and datetimes pickled by Python 2 need.
report = logshelf.import_from(HERE / "legacy-py2", HERE / "imported.db", encoding="latin1")
print(report)
with logshelf.open(HERE / "imported.db", "r") as db:
    print("title:", db["title"])
    print("updated:", db["updated"].isoformat())
    print("weights:", db["weights"].tolist(), db["weights"].dtype)
# --8<-- [end:import]

# --8<-- [start:bytes]
# "bytes" keeps 8-bit strs as bytes: right for binary data that was never text.
logshelf.import_from(HERE / "legacy-py2", HERE / "imported-bytes.db", encoding="bytes")
with logshelf.open(HERE / "imported-bytes.db", "r") as db:
    print("title as bytes:", db["title"])
# --8<-- [end:bytes]

# --8<-- [start:file]
# One pickle file written by Python 2: pickle.load takes the same encoding=.
(HERE / "title-py2.pkl").write_bytes(bytes.fromhex(PY2["title"]))
with open(HERE / "title-py2.pkl", "rb") as f:
    print("pickle file:", pickle.load(f, encoding="latin1"))
# --8<-- [end:file]
