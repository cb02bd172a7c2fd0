"""Files written whole or not at all, and JSON Lines read strictly: the one home of both.

Files the framework writes (metadata, part files, metrics, predictions, tables) go through `atomic_path` (directly or
via `atomic_write_text` / `atomic_write_json`; HF exports and the world-tokenizer cache swap whole directories the
same way in `cft.lm`): each is written under a temporary sibling name `.<name>.tmp-<pid>-<random>` and renamed into
place, so a reader (or a resumed run) sees the old version or the new one, never half of one. Temporary names are
created with the process umask (not mkstemp's 0600), so shared run directories stay readable by the group.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cft.errors import DataError

__all__ = [
    "TMP_GLOB",
    "atomic_path",
    "atomic_write_json",
    "atomic_write_text",
    "read_json_rows",
    "read_jsonl",
    "temp_path",
]

TMP_GLOB = ".*.tmp-*"
"""Glob of the temporary names `temp_path` gives: a killed writer's leftovers, never read, safe to delete."""


def temp_path(path: str | os.PathLike) -> Path:
    """A fresh temporary sibling of `path` (same directory, so the final rename stays on one file system)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike, keep_existing: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write a file or a directory to; on success it is renamed to `path`.

    A directory replaces an existing `path` by two renames (the old one is moved aside first and deleted after), so
    `path` is never a mix of both. With `keep_existing`, an existing `path` wins and the new one is discarded (for
    caches that several processes may fill at once with the same content). On error the temporary is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        if keep_existing:
            if not path.exists():
                try:
                    os.replace(tmp, path)
                except OSError:  # another process renamed its copy into place first
                    if not path.exists():
                        raise
            return
        if tmp.is_dir() and path.is_dir():
            old = temp_path(path)
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            _remove(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` whole or not at all."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2, sort_keys: bool = True) -> None:
    """Write `obj` as JSON to `path` whole or not at all."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


def read_json_rows(path: str | os.PathLike) -> list[tuple[str, dict[str, Any]]]:
    """`(where, row)` for each row of a JSON Lines file (blank lines skipped; where = "line N", from 1) or of a `.json`
    file holding a list of objects (where = "item N", from 0), so later errors can name the row.

    Raises DataError naming the file and the line for a line that is not valid JSON or not an object.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{str(path)!r}: cannot be read ({e})") from e
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{str(path)!r}: not valid JSON ({e})") from e
        if not isinstance(data, list):
            raise DataError(f"{str(path)!r}: expected a JSON list of objects, got {type(data).__name__}")
        items = [(f"item {k}", row) for k, row in enumerate(data)]
    else:
        items = []
        for k, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append((f"line {k}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataError(f"{str(path)!r} line {k}: not valid JSON ({e.msg} at column {e.colno})") from e
    for where, row in items:
        if not isinstance(row, dict):
            raise DataError(f"{str(path)!r} {where}: expected a JSON object, got {type(row).__name__}")
    return items


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a JSON Lines (or `.json` list) file; see `read_json_rows` for what is refused."""
    return [row for _, row in read_json_rows(path)]
