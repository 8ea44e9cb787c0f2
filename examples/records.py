"""Records as a tiny database: prefixes, scans, transactions, import, export.

Run:  python examples/records.py [FOLDER]

Writes FOLDER/shop.db and a few files beside it (default FOLDER:
$LOGSHELF_EXAMPLES_DIR, else the current directory); each run starts from
empty. How-to: docs/how-to/records.md.
"""

from __future__ import annotations

import os
import pickle
import shelve
import shutil
import sys
from pathlib import Path

import logshelf

HERE = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("LOGSHELF_EXAMPLES_DIR", "."))
HERE.mkdir(parents=True, exist_ok=True)
for leftover in ("shop.db", "from-shelve.db", "from-pickle.db", "shop.jsonl"):
    if (HERE / leftover).is_dir():
        shutil.rmtree(HERE / leftover)
    elif (HERE / leftover).exists():
        (HERE / leftover).unlink()

# --8<-- [start:prefixes]
with logshelf.open(HERE / "shop.db", "n") as db:
    db.update(  # one atomic batch
        {
            "user:ada": {"name": "Ada", "balance": 100},
            "user:bob": {"name": "Bob", "balance": 20},
            "order:1": {"user": "ada", "item": "lamp", "price": 30},
            "order:2": {"user": "bob", "item": "book", "price": 12},
            "order:3": {"user": "ada", "item": "desk", "price": 80},
        }
    )
    print("users:", sorted(db.keys("user:")))
    spent = sum(order["price"] for order in db.values("order:") if order["user"] == "ada")
    print("ada spent:", spent)
    # --8<-- [end:prefixes]

    # --8<-- [start:transaction]
    def transfer(db: logshelf.Shelf, src: str, dst: str, amount: int) -> None:
        """Move money between two users: both writes or neither."""
        with db.transaction():  # holds the writer lock: no other writer in between
            payer, payee = db[f"user:{src}"], db[f"user:{dst}"]
            payer["balance"] -= amount
            payee["balance"] += amount
            db[f"user:{src}"], db[f"user:{dst}"] = payer, payee
            if payer["balance"] < 0:  # an exception: neither write happens
                raise ValueError(f"{src} cannot pay {amount}")

    transfer(db, "ada", "bob", 30)
    try:
        transfer(db, "bob", "ada", 500)
    except ValueError as exc:
        print("refused:", exc)
    print("balances:", {key: user["balance"] for key, user in sorted(db.items("user:"))})
    # --8<-- [end:transaction]

# --8<-- [start:import]
# An old shelve file and a pickle file, as an older program left them.
with shelve.open(str(HERE / "legacy")) as old:
    old["user:cyd"] = {"name": "Cyd", "balance": 5}
with open(HERE / "orders.pkl", "wb") as f:
    pickle.dump({"order:9": {"user": "cyd", "item": "pen", "price": 2}}, f)

report = logshelf.import_from(HERE / "legacy", HERE / "from-shelve.db")
print(report.kind, "import:", report.keys, "keys")
report = logshelf.import_from(HERE / "orders.pkl", HERE / "from-pickle.db")
print(report.kind, "import:", report.keys, "keys")

# Copy them into the shop in one batch, then export everything as JSON Lines.
with logshelf.open(HERE / "shop.db") as db:
    for imported in ("from-shelve.db", "from-pickle.db"):
        with logshelf.open(HERE / imported, "r") as src:
            db.update(src.items(""))
    print("shop now holds", len(db), "records")
print("exported", logshelf.export(HERE / "shop.db", HERE / "shop.jsonl"), "records to shop.jsonl")
# --8<-- [end:import]
