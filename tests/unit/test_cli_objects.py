"""``logshelf import | export | ls | get | stats`` and their exit codes."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

import logshelf
from logshelf.cli import main


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "db"
    with logshelf.open(path, "n", compression="zlib") as db:
        db["user:1"] = {"name": "ada"}
        db["user:2"] = {"name": "bob"}
        db["config"] = [1, "é"]
        db["tags"] = {"a", "b"}  # JSON cannot hold a set
        db["big"] = "x" * 10_000  # compressed: a codec to see in ls --long
    return path


def test_ls_lists_sorted_keys_and_filters_by_prefix(store, capsys):
    assert main(["ls", str(store)]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == ["big", "config", "tags", "user:1", "user:2"]
    assert "5 keys" in captured.err
    assert main(["ls", str(store), "--prefix", "user:"]) == 0
    assert capsys.readouterr().out.split() == ["user:1", "user:2"]


def test_ls_json_and_long(store, capsys):
    assert main(["ls", str(store), "--prefix", "user:", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["count"] == 2 and doc["keys"] == ["user:1", "user:2"]
    assert main(["ls", str(store), "--long", "--json"]) == 0
    rows = {row["key"]: row for row in json.loads(capsys.readouterr().out)["keys"]}
    with logshelf.open(store, "r") as db:
        segment, offset = db.locate("big")
    big = rows["big"]
    assert (big["segment"], big["offset"]) == (Path(segment).name, offset)
    assert big["codec"] == "zlib" and big["bytes"] < big["raw_bytes"]
    assert rows["user:1"]["codec"] == "none"
    assert rows["user:1"]["bytes"] == len(pickle.dumps({"name": "ada"}, logshelf.DEFAULT_PROTOCOL))
    assert main(["ls", str(store), "--long"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("big\t"))
    assert "\tzlib\t" in line


def test_get_prints_repr_or_json(store, capsys):
    assert main(["get", str(store), "config"]) == 0
    assert capsys.readouterr().out.strip() == repr([1, "é"])
    assert main(["get", str(store), "config", "--repr"]) == 0
    assert capsys.readouterr().out.strip() == repr([1, "é"])
    assert main(["get", str(store), "user:1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"name": "ada"}


def test_get_json_of_a_value_json_cannot_hold_fails_with_2(store, capsys):
    assert main(["get", str(store), "tags", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "'tags' is a set" in captured.err


def test_get_of_a_missing_key_fails_with_2(store, capsys):
    assert main(["get", str(store), "nope"]) == 2
    assert "no key 'nope'" in capsys.readouterr().err


def test_stats_json_and_info_agree(store, capsys):
    assert main(["stats", str(store), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["keys"] == 5 and doc["segments"] >= 1 and doc["segment_bytes"] > 0
    assert doc["file_bytes"] >= doc["segment_bytes"]
    assert main(["stats", str(store)]) == 0
    assert "keys           5" in capsys.readouterr().out
    assert main(["info", str(store)]) == 0
    assert "keys        5" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["ls", "{missing}"],
        ["get", "{missing}", "k"],
        ["stats", "{missing}"],
        ["export", "{missing}", "--format", "jsonl", "-o", "{out}"],
        ["import", "{missing}", "{out}"],
    ],
)
def test_a_missing_store_exits_2(tmp_path, capsys, argv):
    args = [a.format(missing=tmp_path / "missing", out=tmp_path / "out") for a in argv]
    assert main(args) == 2
    assert capsys.readouterr().err.startswith(f"logshelf {argv[0]}:")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["ls"],
        ["get", "path"],
        ["export", "path", "-o", "out"],  # --format is required
        ["export", "path", "--format", "csv", "-o", "out"],
        ["import", "src", "dst", "--kind", "zip"],
        ["get", "path", "k", "--json", "--repr"],
    ],
)
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_export_then_import_from_the_shell(store, tmp_path, capsys):
    out = tmp_path / "out.pkl"
    assert main(["export", str(store), "--format", "pickle", "-o", str(out)]) == 0
    assert "exported 5 keys" in capsys.readouterr().out
    assert main(["import", str(out), str(tmp_path / "copy")]) == 0
    assert "imported 5 keys" in capsys.readouterr().out
    with logshelf.open(store, "r") as a, logshelf.open(tmp_path / "copy", "r") as b:
        assert dict(a) == dict(b)
    # The destination now exists: a second import is refused.
    assert main(["import", str(out), str(tmp_path / "copy")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_export_jsonl_of_a_set_exits_2_and_leaves_nothing(store, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    assert main(["export", str(store), "--format", "jsonl", "-o", str(out)]) == 2
    assert "'tags' is a set" in capsys.readouterr().err
    assert not out.exists()


def test_import_with_a_bad_encoding_or_a_python2_shelf_exits_2(tmp_path, capsys):
    fixtures = Path(__file__).resolve().parents[1] / "fixtures"
    src = str(fixtures / "py2-p2")
    assert main(["import", src, str(tmp_path / "a")]) == 2
    assert "encoding='latin1'" in capsys.readouterr().err
    assert main(["import", src, str(tmp_path / "b"), "--encoding", "no-such-codec"]) == 2
    assert main(["import", src, str(tmp_path / "c"), "--encoding", "latin1"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
    assert main(["get", str(tmp_path / "c"), "bytes", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == "café"
