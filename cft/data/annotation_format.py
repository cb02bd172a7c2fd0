"""The annotation format, in one place: the parquet schema, mapping the scorer's verdicts to rows, part files written
atomically with their metadata, identity and weights fingerprints, summary statistics (overall and by token class),
reading rows back for training, and carrying critical tokens to another tokenizer through character spans.

Layout of an annotation directory (one per shard; `shard-XXXXX-of-YYYYY/` subdirectories when sharded):

    metadata.json          identity (scorer settings, model name/dtype, tokenizer fingerprint, data, shard),
                           weights_sha256, status (running/complete), counts (questions, kept, yield, skipped by
                           reason, response/scored/critical tokens, critical_fraction (critical / scored),
                           by_class (scored positions), kept_by_fallback (kept responses whose answer only the
                           last-number fallback found; tasks with a strict answer format never keep one), rollouts,
                           rollout_tokens, wall_s = compute seconds summed over parts and ranks, rollouts_per_s,
                           annotated_tokens_per_s), sessions (end-to-end elapsed time of each start)
    part-00000.parquet     one row per kept response (columns in `SCHEMA`); the processed question ids, skip
    part-00001.parquet     reasons, costs and tokenizer of that part travel in its schema metadata (key `cft`)

Per-token list columns (`critical`, `entropy`, `alternatives`, `rollouts_failed`, `rollouts_total`) are aligned
with `response_token_ids`, which has no EOS; readers for training append EOS to `response_ids`.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from transformers import PreTrainedTokenizerBase

from cft.errors import AnnotationError, DataError
from cft.io import atomic_path
from cft.lm.loading import tokenizer_fingerprint
from cft.tasks.templates import encode_prompt

# Why a question yields no annotated row (part info "skipped": {question id: reason}); the scorer's settings in
# metadata.json say the rest (e.g. the length limit behind "unfinished").
SkipReason = Literal[
    "unfinished",
    "empty",
    "no_answer",
    "incorrect",
    "unformatted",  # correct only by a looser reading than the task's answer format
    "reference_empty",
    "reference_no_answer",
    "reference_incorrect",
    "reference_unformatted",
]

__all__ = [
    "FORMAT",
    "SCHEMA",
    "TOKEN_CLASSES",
    "annotation_row",
    "char_spans",
    "critical_stats",
    "identity_diff",
    "identity_sha",
    "is_complete",
    "list_parts",
    "part_info",
    "project_char_spans",
    "project_row",
    "read_annotated_rows",
    "read_json",
    "read_part",
    "summarize",
    "token_class",
    "token_offsets",
    "tokens_of",
    "weights_fingerprint",
    "write_part",
]

FORMAT = "cft.annotations/1"
META_KEY = b"cft"
PART_GLOB = "part-*.parquet"
SHARD_GLOB = "shard-*-of-*"

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("question", pa.string()),
        ("answer", pa.string()),
        ("prompt", pa.string()),
        ("response", pa.string()),
        ("response_source", pa.string()),
        ("prompt_token_ids", pa.list_(pa.int32())),
        ("response_token_ids", pa.list_(pa.int32())),
        ("critical", pa.list_(pa.int8())),
        ("critical_char_spans", pa.list_(pa.list_(pa.int32()))),
        ("response_token_offsets", pa.list_(pa.int32())),
        ("n_scored", pa.int32()),
        ("entropy", pa.list_(pa.float32())),
        ("alternatives", pa.list_(pa.list_(pa.int32()))),
        ("rollouts_failed", pa.list_(pa.int16())),
        ("rollouts_total", pa.list_(pa.int16())),
        # Rollouts at that position cut by max_rollout_tokens (null in parts written before it was recorded).
        ("rollouts_truncated", pa.list_(pa.int16())),
    ]
)
_PER_TOKEN = ("critical", "entropy", "alternatives", "rollouts_failed", "rollouts_total")


# -- files (written whole or not at all, through cft.io) ------------------------------------------------------------
def read_json(path: str | os.PathLike) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: not valid JSON ({e})") from e


def write_part(path: str | os.PathLike, rows: Sequence[dict[str, Any]], info: dict[str, Any]) -> None:
    """Write one part atomically: the kept rows plus `info` (asked ids, skips, costs) in the schema metadata."""
    path = Path(path)
    table = pa.Table.from_pylist(list(rows), schema=SCHEMA)
    table = table.replace_schema_metadata({META_KEY: json.dumps(info, sort_keys=True).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def is_complete(directory: str | os.PathLike) -> bool:
    """Whether `directory` holds a finished annotation (metadata.json with status "complete", written last)."""
    meta = Path(directory) / "metadata.json"
    return meta.is_file() and read_json(meta).get("status") == "complete"


def read_part(path: str | os.PathLike, columns: Sequence[str] | None = None) -> pa.Table:
    """A part file's table (all or some columns); a file that is not readable parquet is an AnnotationError."""
    try:
        return pq.read_table(path, columns=list(columns) if columns is not None else None)
    except (pa.ArrowException, OSError) as e:
        raise AnnotationError(f"{path}: not a readable parquet part file ({e})") from e


def part_info(path: str | os.PathLike) -> dict[str, Any]:
    """The `info` a part was written with (read from the footer only)."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError) as e:
        raise AnnotationError(f"{path}: not a readable parquet part file ({e})") from e
    if META_KEY not in meta:
        raise AnnotationError(f"{path}: not a cft annotation part (no '{META_KEY.decode()}' schema metadata)")
    return json.loads(meta[META_KEY])


def list_parts(path: str | os.PathLike) -> list[Path]:
    """Part files under `path`: a part file, a glob, an annotation dir, or a dir of `shard-*` dirs (all shards)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        parts = sorted(p.glob(PART_GLOB))
        if not parts:
            parts = sorted(q for d in sorted(p.glob(SHARD_GLOB)) for q in d.glob(PART_GLOB))
        return parts
    return sorted(Path(q) for q in glob.glob(str(path)) if Path(q).name.endswith(".parquet"))


def identity_sha(identity: dict[str, Any]) -> str:
    """Hash of what defines an annotation (settings, model, tokenizer, shard); parts carry it to be recognised."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def identity_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """`key: old -> new` lines for every setting that differs (nested keys dotted)."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += identity_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


# -- tokenizer identity and character offsets ---------------------------------------------------------------------
def token_offsets(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], text: str) -> list[int]:
    """Character boundaries of `ids` in `text` (= their decoding): len(ids)+1 non-decreasing offsets.

    A token that is only part of a character (byte-level BPE) or decodes to nothing gets an empty range; the token
    completing the character gets the whole of it.
    """
    offsets = [0]
    for k in range(1, len(ids) + 1):
        prefix = tokenizer.decode(list(ids[:k]), skip_special_tokens=True)
        offsets.append(len(prefix) if text.startswith(prefix) and len(prefix) >= offsets[-1] else offsets[-1])
    offsets[-1] = len(text)
    return offsets


def char_spans(offsets: Sequence[int], critical: Sequence[int]) -> list[list[int]]:
    """[start, end) character spans of the critical tokens; an empty token borrows the next non-empty token's end."""
    spans = []
    for k, c in enumerate(critical):
        if not c:
            continue
        start, end = offsets[k], offsets[k + 1]
        j = k + 1
        while end == start and j < len(offsets) - 1:
            j += 1
            end = offsets[j]
        if end > start:
            spans.append([start, end])
    return spans


def project_char_spans(
    response: str, spans: Sequence[Sequence[int]], tokenizer: PreTrainedTokenizerBase
) -> tuple[list[int], list[int]]:
    """Tokenize `response` with `tokenizer` and mark each token overlapping a critical span: (token ids, 0/1 mask)."""
    if not getattr(tokenizer, "is_fast", False):
        raise AnnotationError(
            f"projecting critical spans needs a fast tokenizer (offsets); got {type(tokenizer).__name__}"
        )
    enc = tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(s < e2 and e > s2 for s2, e2 in spans)) for s, e in enc["offset_mapping"]]
    return list(enc["input_ids"]), mask


def project_row(row: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """A training row for another tokenizer: prompt and response re-tokenized, critical carried by character spans.

    Per-token fields of the source tokenizer (entropy, alternatives) do not carry over and are dropped. The prompt
    text is kept as is: re-render it with the target model's template first if the two models' formats differ.
    """
    ids, crit = project_char_spans(row["response"], row["critical_char_spans"], tokenizer)
    out = {k: row[k] for k in ("id", "question", "answer", "prompt", "response") if k in row}
    out["prompt_ids"] = encode_prompt(tokenizer, row["prompt"])
    out["response_ids"] = ids + [tokenizer.eos_token_id]
    out["critical"] = crit
    return out


# -- rows, fingerprints and statistics ------------------------------------------------------------------------
def annotation_row(
    tokenizer: PreTrainedTokenizerBase,
    example: dict[str, Any],
    *,
    critical: Sequence[int],
    n_scored: int,
    entropy: Sequence[float],
    alternatives: Sequence[Sequence[int]],
    rollouts_failed: Sequence[int],
    rollouts_total: Sequence[int],
    rollouts_truncated: Sequence[int] | None = None,
) -> dict[str, Any]:
    """One part-file row (columns in `SCHEMA`) from a kept example and the scorer's per-token verdicts."""
    offsets = token_offsets(tokenizer, example["response_ids"], example["response"])
    return {
        "id": example["id"],
        "question": example["question"],
        "answer": example["answer"],
        "prompt": example["prompt"],
        "response": example["response"],
        "response_source": example["response_source"],
        "prompt_token_ids": list(example["prompt_ids"]),
        "response_token_ids": list(example["response_ids"]),
        "critical": list(critical),
        "critical_char_spans": char_spans(offsets, critical),
        "response_token_offsets": offsets,
        "n_scored": n_scored,
        "entropy": [float(x) for x in entropy],
        "alternatives": [list(a) for a in alternatives],
        "rollouts_failed": list(rollouts_failed),
        "rollouts_total": list(rollouts_total),
        "rollouts_truncated": None if rollouts_truncated is None else list(rollouts_truncated),
    }


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A cheap, device-independent hash of the weights: names, shapes, dtypes and ~1k exact values per tensor."""
    h = hashlib.sha256()
    for name, p in model.state_dict().items():
        flat = p.detach().reshape(-1)
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
        if flat.numel():
            sample = flat[:: max(1, flat.numel() // 1024)][:1024]
            h.update(torch.cat([sample, flat[-8:]]).float().cpu().numpy().tobytes())
    return h.hexdigest()


TOKEN_CLASSES = ("digits", "operators", "words", "punctuation", "whitespace", "mixed")
_OPERATOR_CHARS = set("+-*/=×÷^%<>()−·")
_PUNCTUATION_CHARS = set(".,:;!?'\"#$&@_[]{}|~`")


def token_class(text: str) -> str:
    """ "digits" (a number piece like `3`, `12`, `.5`), "operators" (`+ - * / = ( )`...), "words" (letters only),
    "punctuation" (`.`, `,`, `####`...), "whitespace" (spaces, newlines, the empty text of a special token) or
    "mixed" (letters with digits or symbols, e.g. `x2`), judged on the token's text without surrounding spaces."""
    s = text.strip()
    if not s:
        return "whitespace"
    if re.fullmatch(r"[\d.,]+", s) and any(c.isdigit() for c in s):
        return "digits"
    if all(c in _OPERATOR_CHARS for c in s):
        return "operators"
    if s.isalpha():
        return "words"
    if all(c in _PUNCTUATION_CHARS for c in s):
        return "punctuation"
    return "mixed"


def tokens_of(row: dict[str, Any]) -> list[str]:
    """The text of each response token, cut from `response` by `response_token_offsets`."""
    off, text = row["response_token_offsets"], row["response"]
    return [text[off[k] : off[k + 1]] for k in range(len(off) - 1)]


def critical_stats(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Critical fraction overall and per token class, and each class's share of all critical tokens.

    Only scored positions count (the first `n_scored` of a row): positions after the response's own answer were
    never perturbed, so counting them as non-critical would dilute every fraction. Rows with an `entropy` field
    also give each class's `mean_entropy`: the model's next-token entropy where it wrote a token of that class.
    """
    by = {c: {"tokens": 0, "critical": 0, "entropy_sum": 0.0} for c in TOKEN_CLASSES}
    has_entropy = bool(rows) and all(row.get("entropy") is not None for row in rows)
    for row in rows:
        n = row.get("n_scored")
        n = len(row["critical"]) if n is None else n
        ent = row["entropy"] if has_entropy else [0.0] * len(row["critical"])
        for tok, crit, h in list(zip(tokens_of(row), row["critical"], ent))[:n]:
            cls = by[token_class(tok)]
            cls["tokens"] += 1
            cls["critical"] += int(crit)
            cls["entropy_sum"] += float(h)
    n = sum(c["tokens"] for c in by.values())
    k = sum(c["critical"] for c in by.values())
    for c in by.values():
        c["critical_fraction"] = c["critical"] / c["tokens"] if c["tokens"] else 0.0
        c["share_of_critical"] = c["critical"] / k if k else 0.0
        total = c.pop("entropy_sum")
        if has_entropy:
            c["mean_entropy"] = total / c["tokens"] if c["tokens"] else 0.0
    return {"rows": len(rows), "tokens": n, "critical": k, "critical_fraction": k / n if n else 0.0, "by_class": by}


def summarize(parts: list[Path]) -> dict[str, Any]:
    """Counts over part files, recomputed from their rows and infos (used at the end of a run and by merge)."""
    counts: dict[str, Any] = dict(
        questions=0,
        kept=0,
        response_tokens=0,
        scored_tokens=0,
        critical_tokens=0,
        rollouts=0,
        rollout_tokens=0,
        rollouts_truncated=0,
        kept_by_fallback=0,
        wall_s=0.0,
    )
    skipped: dict[str, int] = {}
    reasons: dict[str, int] = {}  # why rollouts ended (cft.lm.stopping): eos, answer, length, alt_eos, ...
    by_class = {c: {"tokens": 0, "critical": 0} for c in TOKEN_CLASSES}
    for part in parts:
        info = part_info(part)
        counts["questions"] += len(info["asked"])
        for reason in info["skipped"].values():
            skipped[reason] = skipped.get(reason, 0) + 1
        for key in ("rollouts", "rollout_tokens", "kept_by_fallback", "wall_s"):
            counts[key] += info.get(key, 0)
        for reason, n in (info.get("rollout_reasons") or {}).items():
            reasons[reason] = reasons.get(reason, 0) + n
        counts["rollouts_truncated"] += (info.get("rollout_reasons") or {}).get("length", 0)
        rows = read_part(part, columns=["response", "response_token_offsets", "critical", "n_scored"]).to_pylist()
        counts["kept"] += len(rows)
        for row in rows:
            counts["response_tokens"] += len(row["critical"])
            counts["critical_tokens"] += sum(row["critical"])
            counts["scored_tokens"] += row["n_scored"]
        for name, c in critical_stats(rows)["by_class"].items():
            by_class[name]["tokens"] += c["tokens"]
            by_class[name]["critical"] += c["critical"]
    wall = counts["wall_s"]
    counts["yield"] = counts["kept"] / counts["questions"] if counts["questions"] else 0.0
    counts.update(
        # Over scored positions only: those after the response's own answer were never perturbed.
        critical_fraction=counts["critical_tokens"] / counts["scored_tokens"] if counts["scored_tokens"] else 0.0,
        rollouts_per_s=counts["rollouts"] / wall if wall else 0.0,
        rollout_tokens_per_s=counts["rollout_tokens"] / wall if wall else 0.0,
        annotated_tokens_per_s=counts["scored_tokens"] / wall if wall else 0.0,
        skipped=skipped,
        rollout_reasons=dict(sorted(reasons.items())),
        by_class={
            name: {**c, "critical_fraction": c["critical"] / c["tokens"] if c["tokens"] else 0.0}
            for name, c in by_class.items()
        },
    )
    return counts


def _check_values(rec: dict[str, Any], where: str, vocab_size: int) -> None:
    """Values that would train silently wrong: token ids the model has no embedding for (an IndexError deep in the
    forward pass), `critical` flags other than 0/1 (a weight of -1 is gradient ascent), non-finite entropies."""
    for field in ("prompt_token_ids", "response_token_ids"):
        for k, t in enumerate(rec[field]):
            if not 0 <= t < vocab_size:
                raise DataError(
                    f"{where}: {field}[{k}] = {t} is outside the tokenizer's vocabulary (0..{vocab_size - 1})"
                )
    for k, alts in enumerate(rec.get("alternatives") or []):
        bad = [t for t in alts or [] if not 0 <= t < vocab_size]
        if bad:
            raise DataError(f"{where}: alternatives[{k}] holds {bad[0]}, outside the vocabulary (0..{vocab_size - 1})")
    for k, c in enumerate(rec.get("critical") or []):
        if c not in (0, 1):
            raise DataError(f"{where}: critical[{k}] = {c}; critical flags must be 0 or 1")
    for k, h in enumerate(rec.get("entropy") or []):
        if h is None or not math.isfinite(h) or h < 0:
            raise DataError(f"{where}: entropy[{k}] = {h}; entropies must be finite and >= 0")


# -- reading for training -----------------------------------------------------------------------------------------
def read_annotated_rows(
    path: str | os.PathLike,
    tokenizer: PreTrainedTokenizerBase,
    required: Sequence[str] = (),
    project: bool = False,
) -> list[dict[str, Any]]:
    """Training rows from annotated shards: `id, question, prompt, response, answer, prompt_ids, response_ids`
    (response token ids + EOS), `critical` and the other per-token fields, aligned with the response without EOS.

    Raises AnnotationError when a part was annotated with another tokenizer (unless `project`, which carries the
    critical tokens over by character spans instead), DataError naming file/row/field for a missing or misaligned
    field, and for an id found twice.
    """
    parts = list_parts(path)
    if not parts:
        raise DataError(f"annotations {str(path)!r}: no part-*.parquet files found (dir, glob or file expected)")
    want = tokenizer_fingerprint(tokenizer)
    rows: list[dict[str, Any]] = []
    seen: dict[str, Path] = {}
    for part in parts:
        info = part_info(part)
        have = info.get("tokenizer", {})
        mismatch = have.get("vocab_sha256") != want["vocab_sha256"] or have.get("vocab_size") != want["vocab_size"]
        if mismatch and not project:
            raise AnnotationError(
                f"{part}: annotated with another tokenizer (vocab size {have.get('vocab_size')}, "
                f"sha {str(have.get('vocab_sha256'))[:12]}) than the one given (vocab size {want['vocab_size']}, "
                f"sha {want['vocab_sha256'][:12]}); token ids would be misread. Use the annotating model's "
                "tokenizer, or project the critical spans (read_annotated_rows(..., project=True))"
            )
        table = read_part(part)
        columns = set(table.column_names)
        for field in ("id", "prompt", "response", "answer", "prompt_token_ids", "response_token_ids", *required):
            if field not in columns:
                raise DataError(f"{part}: column {field!r} is missing (needed by the training rows or the selector)")
        for i, rec in enumerate(table.to_pylist()):
            where = f"{part} row {i} (id {rec.get('id')!r})"
            if rec["id"] in seen:
                raise DataError(f"{where}: id also in {seen[rec['id']]}; merge shards once, or read a single output")
            seen[rec["id"]] = part
            for field in ("prompt_token_ids", "response_token_ids", *required):
                if rec.get(field) is None:
                    raise DataError(f"{where}: field {field!r} is null")
            if mismatch:
                rows.append(project_row(rec, tokenizer))
                continue
            n = len(rec["response_token_ids"])
            for field in _PER_TOKEN:
                if rec.get(field) is not None and len(rec[field]) != n:
                    raise DataError(f"{where}: field {field!r} has {len(rec[field])} entries for {n} response tokens")
            _check_values(rec, where, want["vocab_size"])
            # n_scored: count-matched controls draw only from the positions the scorer perturbed.
            row = {k: rec.get(k) for k in ("id", "question", "answer", "prompt", "response", "n_scored", *_PER_TOKEN)}
            row["prompt_ids"] = list(rec["prompt_token_ids"])
            row["response_ids"] = list(rec["response_token_ids"]) + [tokenizer.eos_token_id]
            rows.append(row)
    if not rows:
        raise DataError(f"annotations {str(path)!r}: {len(parts)} part file(s) but no kept responses in them")
    return rows
