"""Annotation outputs from the command line:

    python -m cft.annotation_cli merge DIR [--out OUT] [--allow-incomplete]   combine shard-*/ of an array job
    python -m cft.annotation_cli show PATH [-n 5] [--html FILE] [--tokenizer NAME]   critical tokens, highlighted
    python -m cft.annotation_cli stats PATH [--json]                          counts, yield, critical fraction by class

PATH is an annotation dir, a dir of shards, a glob, or a part file.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from cft.data.annotation_format import (
    FORMAT,
    PART_GLOB,
    SHARD_GLOB,
    critical_stats,
    identity_diff,
    identity_sha,
    list_parts,
    part_info,
    read_json,
    read_part,
    summarize,
    write_part,
)
from cft.errors import AnnotationError, CFTError, error_line
from cft.io import atomic_write_json
from cft.viz import render_html, render_terminal, stats_table

__all__ = ["load_rows", "main", "merge"]


def load_rows(path: str | Path) -> list[dict[str, Any]]:
    """All rows of the parts under `path`, as stored (no tokenizer needed)."""
    parts = list_parts(path)
    if not parts:
        raise AnnotationError(f"{path}: no part-*.parquet files found")
    return [row for part in parts for row in read_part(part).to_pylist()]


def merge(root: str | Path, out: str | Path | None = None, allow_incomplete: bool = False) -> dict[str, Any]:
    """Combine the `shard-i-of-n/` dirs under `root` into `out` (default `root`): parts renumbered in shard order,
    metadata.json with the statistics recomputed over all rows. Refuses shards of different runs, missing or
    unfinished shards (unless `allow_incomplete`), duplicate ids, and an `out` that already holds parts."""
    root = Path(root)
    out = Path(out) if out else root
    shards = sorted(root.glob(SHARD_GLOB))
    if not shards:
        raise AnnotationError(f"{root}: no shard-*-of-* directories to merge")
    if any(out.glob(PART_GLOB)):
        raise AnnotationError(f"{out}: already holds part files (merged before?); choose another --out")
    metas, counts = {}, set()
    for d in shards:
        m = re.fullmatch(r"shard-(\d+)-of-(\d+)", d.name)
        if not m or not (d / "metadata.json").is_file():
            raise AnnotationError(f"{d}: not a shard directory with metadata.json")
        metas[int(m.group(1))] = (d, read_json(d / "metadata.json"))
        counts.add(int(m.group(2)))
    if len(counts) != 1:
        raise AnnotationError(f"{root}: shards of different array sizes {sorted(counts)}; merge one run at a time")
    n = counts.pop()
    missing = [i for i in range(n) if i not in metas]
    unfinished = [str(d) for d, meta in metas.values() if meta.get("status") != "complete"]
    if (missing or unfinished) and not allow_incomplete:
        raise AnnotationError(
            f"{root}: cannot merge: missing shards {missing}, unfinished shards {unfinished} "
            "(rerun those array tasks, or pass --allow-incomplete)"
        )
    first_dir, first = metas[min(metas)]
    for d, meta in (metas[i] for i in sorted(metas)):
        diff = [line for line in identity_diff(first["identity"], meta["identity"]) if not line.startswith("shard.")]
        if diff or meta.get("weights_sha256") != first.get("weights_sha256"):
            raise AnnotationError(f"{d}: annotated with other settings than {first_dir}: {diff or ['model weights']}")
    identity = {**first["identity"], "shard": {"merged": sorted(metas), "count": n}}
    out.mkdir(parents=True, exist_ok=True)
    seen: dict[str, Path] = {}
    k = 0
    for d, _ in (metas[i] for i in sorted(metas)):
        for part in sorted(d.glob(PART_GLOB)):
            info = {**part_info(part), "identity_sha": identity_sha(identity), "merged_from": f"{d.name}/{part.name}"}
            rows = read_part(part).to_pylist()
            for row in rows:
                if row["id"] in seen:
                    raise AnnotationError(f"{part}: id {row['id']!r} also in {seen[row['id']]}")
                seen[row["id"]] = part
            write_part(out / f"part-{k:05d}.parquet", rows, info)
            k += 1
    parts = sorted(out.glob(PART_GLOB))
    meta = {
        "format": FORMAT,
        "identity": identity,
        "identity_sha": identity_sha(identity),
        "weights_sha256": first.get("weights_sha256"),
        "status": "complete" if not (missing or unfinished) else "partial",
        "counts": summarize(parts),
        "parts": [p.name for p in parts],
        "merged_from": [str(d) for d in shards],
        "updated": time.time(),
    }
    atomic_write_json(out / "metadata.json", meta)
    return meta


def _metadata_of(path: Path) -> dict[str, Any] | None:
    meta = path / "metadata.json" if path.is_dir() else path.parent / "metadata.json"
    return read_json(meta) if meta.is_file() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cft.annotation_cli", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("merge", help="combine shard-*/ dirs and recompute the statistics")
    p.add_argument("dir")
    p.add_argument("--out", default=None, help="output dir (default: DIR itself)")
    p.add_argument("--allow-incomplete", action="store_true", help="merge even with missing or unfinished shards")
    p = sub.add_parser("show", help="responses with critical tokens highlighted, and statistics")
    p.add_argument("path")
    p.add_argument("-n", type=int, default=5, help="responses to show")
    p.add_argument("--html", default=None, help="also write an HTML page here")
    p.add_argument("--tokenizer", default=None, help="model/tokenizer name to decode alternatives in the HTML")
    p = sub.add_parser("stats", help="counts, yield, rollouts/s and critical fraction by token class")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "merge":
            meta = merge(args.dir, args.out, args.allow_incomplete)
            c = meta["counts"]
            print(
                f"merged {len(meta['merged_from'])} shards: {c['kept']}/{c['questions']} kept, "
                f"critical fraction {c['critical_fraction']:.1%}, {c['rollouts']} rollouts -> {args.out or args.dir}"
            )
        elif args.cmd == "show":
            rows = load_rows(args.path)
            render_terminal(rows, limit=args.n)
            if args.html:
                tok = None
                if args.tokenizer:
                    from cft.lm.loading import ModelConfig, load_tokenizer

                    tok = load_tokenizer(ModelConfig(name_or_path=args.tokenizer))
                print(f"wrote {render_html(rows, args.html, tokenizer=tok, title=str(args.path))}")
        else:
            path = Path(args.path)
            meta = _metadata_of(path) if path.exists() else None
            stats = critical_stats(load_rows(path))
            if args.json:
                print(json.dumps({"metadata_counts": (meta or {}).get("counts"), "tokens": stats}, indent=2))
            else:
                from rich.console import Console

                console = Console()
                if meta and meta.get("counts"):
                    c = meta["counts"]
                    console.print(
                        f"{c['kept']}/{c['questions']} questions kept (yield {c['yield']:.1%}); skipped {c['skipped']}; "
                        f"{c['rollouts']} rollouts in {c['wall_s']:.0f}s ({c['rollouts_per_s']:.0f}/s, "
                        f"{c['annotated_tokens_per_s']:.1f} annotated tokens/s); status {meta.get('status')}"
                    )
                console.print(stats_table(stats))
    except CFTError as e:
        print(error_line(e), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
