"""cft.io: files written whole or not at all (temporary sibling, rename), and JSON Lines read strictly."""

from __future__ import annotations

import os
import stat

import pytest

from cft.errors import DataError
from cft.io import atomic_path, atomic_write_json, atomic_write_text, read_jsonl


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    atomic_write_json(path, {"b": 1, "a": 2})
    assert path.read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'
    atomic_write_text(path, "new\n")
    assert path.read_text() == "new\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "summary.md"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.md"]


def test_directories_are_swapped_whole(tmp_path):
    path = tmp_path / "export"
    for version in ("1", "2"):
        with atomic_path(path) as tmp:
            tmp.mkdir()
            (tmp / "weights").write_text(version)
    assert (path / "weights").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["export"]
    with atomic_path(path, keep_existing=True) as tmp:  # a cache another process filled first wins
        tmp.mkdir()
        (tmp / "weights").write_text("3")
    assert (path / "weights").read_text() == "2"


def test_files_get_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "f", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o644  # mkstemp would give 0600


@pytest.mark.parametrize(
    "name,text,message",
    [
        ("a.jsonl", '{"q": 1}\n\n{"q": \n', r"a\.jsonl' line 3: not valid JSON"),
        ("b.jsonl", '{"q": 1}\n[1, 2]\n', r"b\.jsonl' line 2: expected a JSON object, got list"),
        ("c.json", '{"q": 1}', r"c\.json': expected a JSON list of objects, got dict"),
        ("d.json", '[{"q": 1}, 3]', r"d\.json' item 1: expected a JSON object, got int"),
    ],
)
def test_read_jsonl_names_the_bad_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=message):
        read_jsonl(tmp_path / name)


def test_read_jsonl_rows(tmp_path):
    (tmp_path / "ok.jsonl").write_text('{"q": 1}\n\n{"q": 2, "a": "x"}\n')
    assert read_jsonl(tmp_path / "ok.jsonl") == [{"q": 1}, {"q": 2, "a": "x"}]
