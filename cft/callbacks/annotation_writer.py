"""Writes the scorer's rows as parquet parts and keeps metadata.json; resumes a killed annotation where it stopped.

Parts are written atomically (temporary name, then rename) every `examples_per_part` questions, with the question
ids they cover; a restart with the same command skips those ids, so no row is lost or duplicated. metadata.json
records what defines the annotation; a restart with a different model, tokenizer or settings is refused.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cft.data.annotation_format import (
    FORMAT,
    PART_GLOB,
    identity_diff,
    identity_sha,
    part_info,
    read_json,
    summarize,
    weights_fingerprint,
    write_part,
)
from cft.errors import AnnotationError, ConfigError
from cft.io import atomic_write_json
from cft.lm.loading import tokenizer_fingerprint

__all__ = ["AnnotationWriter"]


class AnnotationWriter(L.Callback):
    """Parquet parts + metadata.json for the PerturbationScorer, resumable.

    Args:
        output_dir: where to write (default: `<run dir>/annotations`); a `shard-i-of-n` subdir when sharded.
        examples_per_part: questions per part file (a killed run loses at most this much work per rank).
        overwrite: delete earlier output in the directory instead of resuming it.
    """

    def __init__(self, output_dir: str | None = None, examples_per_part: int = 256, overwrite: bool = False) -> None:
        if examples_per_part < 1:
            raise ConfigError(f"examples_per_part={examples_per_part}: expected >= 1")
        self.output_dir, self.examples_per_part, self.overwrite = output_dir, examples_per_part, overwrite
        self.dir: Path | None = None
        self.meta: dict[str, Any] = {}
        self._pending: list[dict[str, Any]] = []
        self._next_part = 0
        self._t0 = 0.0

    # -- identity -------------------------------------------------------------------------------------------------
    def _identity(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        dm = trainer.datamodule
        if not hasattr(dm, "describe") or not hasattr(pl_module, "describe"):
            raise AnnotationError("AnnotationWriter needs the PerturbationScorer and the AnnotationDataModule")
        ident = pl_module.describe()
        ident["data"] = dm.describe()
        ident["tokenizer"] = tokenizer_fingerprint(pl_module.tokenizer)
        ident["shard"] = {"index": dm.shard_index, "count": dm.shard_count}
        return ident

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        dm = trainer.datamodule
        root = Path(self.output_dir) if self.output_dir else Path(trainer.default_root_dir) / "annotations"
        self.dir = root / f"shard-{dm.shard_index:05d}-of-{dm.shard_count:05d}" if dm.shard_count > 1 else root
        ident = self._identity(trainer, pl_module)
        if trainer.is_global_zero:
            self.dir.mkdir(parents=True, exist_ok=True)
            if self.overwrite:
                for p in [*self.dir.glob(PART_GLOB), self.dir / "metadata.json"]:
                    p.unlink(missing_ok=True)
            for tmp in self.dir.glob(".*.tmp-*"):  # a killed writer's unfinished file; never renamed, never read
                tmp.unlink() if tmp.is_file() else shutil.rmtree(tmp, ignore_errors=True)
        trainer.strategy.barrier("annotation-writer-setup")
        meta_path = self.dir / "metadata.json"
        parts = sorted(self.dir.glob(PART_GLOB))
        if meta_path.is_file():
            old = read_json(meta_path)
            diff = identity_diff(old.get("identity", {}), ident)
            if diff:
                raise AnnotationError(
                    f"{self.dir}: holds an annotation with other settings, so it cannot be resumed:\n  "
                    + "\n  ".join(diff)
                    + "\nUse another output_dir, or overwrite: true to start over."
                )
        elif parts:
            raise AnnotationError(f"{self.dir}: part files without metadata.json; not written by this writer?")
        done: set[str] = set()
        for part in parts:
            info = part_info(part)
            if info.get("identity_sha") != identity_sha(ident):
                raise AnnotationError(f"{part}: written with other settings than {meta_path}; remove it or start over")
            done.update(info["asked"])
        dm.exclude(done)
        numbers = [int(m.group(1)) for p in parts if (m := re.match(r"part-(\d+)", p.name))]
        self._next_part = max(numbers, default=-1) + 1
        self.meta = {"format": FORMAT, "identity": ident, "identity_sha": identity_sha(ident), "status": "running"}
        if done:
            print(
                f"[cft] resuming {self.dir}: {len(done)} questions already annotated in {len(parts)} parts", flush=True
            )

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        weights = weights_fingerprint(pl_module.model)
        meta_path = self.dir / "metadata.json"
        old = read_json(meta_path) if meta_path.is_file() else {}
        if old.get("weights_sha256", weights) != weights:
            raise AnnotationError(
                f"{self.dir}: annotated by a model with other weights (sha {old['weights_sha256'][:12]} vs "
                f"{weights[:12]}, same name {self.meta['identity']['model']['name_or_path']!r}); use another output_dir"
            )
        self.meta.update(weights_sha256=weights, created=old.get("created", time.time()))
        if trainer.is_global_zero:
            atomic_write_json(meta_path, {**old, **self.meta})
        self._t0 = time.perf_counter()

    # -- writing --------------------------------------------------------------------------------------------------
    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if outputs is None:
            return
        self._pending.append(outputs)
        if sum(len(p["asked"]) for p in self._pending) >= self.examples_per_part:
            self._flush(trainer)
        if trainer.received_sigterm:
            # Lightning's predict loop ignores SIGTERM: stop here, with every finished question in a part, so the
            # next start resumes after them; `python -m cft` exits 143.
            self._flush(trainer)
            raise SIGTERMException(f"annotation stopped after part {self._next_part - 1} in {self.dir}")

    def _flush(self, trainer: L.Trainer) -> None:
        pending = [p for p in self._pending if p["asked"]]
        self._pending = []
        if not pending:
            return
        suffix = f"-r{trainer.global_rank}" if trainer.world_size > 1 else ""
        path = self.dir / f"part-{self._next_part:05d}{suffix}.parquet"
        self._next_part += 1
        info = {
            "identity_sha": self.meta["identity_sha"],
            "tokenizer": self.meta["identity"]["tokenizer"],
            "model": self.meta["identity"]["model"],
            "asked": [i for p in pending for i in p["asked"]],
            "skipped": {k: v for p in pending for k, v in p["skipped"].items()},
            "rollouts": sum(p["rollouts"] for p in pending),
            "rollout_tokens": sum(p["rollout_tokens"] for p in pending),
            "rollout_reasons": _summed([p.get("rollout_reasons", {}) for p in pending]),
            "kept_by_fallback": sum(p.get("kept_by_fallback", 0) for p in pending),
            "wall_s": sum(p["wall_s"] for p in pending),
            "rank": trainer.global_rank,
            "written": time.time(),
        }
        rows = [r for p in pending for r in p["rows"]]
        write_part(path, rows, info)
        rate = info["rollouts"] / info["wall_s"] if info["wall_s"] else 0.0
        print(
            f"[cft] {path}: {len(info['asked'])} questions, {len(rows)} kept, {info['rollouts']} rollouts ({rate:.0f}/s)",
            flush=True,
        )

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)
        trainer.strategy.barrier("annotation-writer-end")
        if not trainer.is_global_zero:
            return
        counts = summarize(sorted(self.dir.glob(PART_GLOB)))
        meta_path = self.dir / "metadata.json"
        meta = {**read_json(meta_path), **self.meta, "status": "complete", "counts": counts, "updated": time.time()}
        # Each (re)start adds a session: elapsed time end to end, beside the per-part compute time in counts.
        session = {"elapsed_s": time.perf_counter() - self._t0, "world_size": trainer.world_size, "ended": time.time()}
        meta["sessions"] = [*meta.get("sessions", []), session]
        meta["parts"] = sorted(p.name for p in self.dir.glob(PART_GLOB))
        atomic_write_json(meta_path, meta)
        for logger in trainer.loggers:
            logger.log_metrics({f"annotate/{k}": float(v) for k, v in counts.items() if isinstance(v, (int, float))})
        print(
            f"[cft] annotations in {self.dir}: {counts['kept']}/{counts['questions']} questions kept "
            f"(yield {counts['yield']:.1%}), {counts['critical_tokens']}/{counts['scored_tokens']} scored tokens critical "
            f"({counts['critical_fraction']:.1%}), {counts['rollouts']} rollouts at {counts['rollouts_per_s']:.0f}/s "
            f"({counts['rollouts_truncated']} cut by max_rollout_tokens)"
            + (f"; skipped: {counts['skipped']}" if counts["skipped"] else "")
        )
        if counts["kept"] == 0 and trainer.datamodule.shard_count == 1:
            raise AnnotationError(
                f"{self.dir}: no correct response among {counts['questions']} questions (skipped: {counts['skipped']}); "
                "nothing to train on. Check the model, the prompt template and the grader"
            )


def _summed(counts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return dict(sorted(out.items()))
