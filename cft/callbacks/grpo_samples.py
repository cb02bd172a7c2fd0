"""GRPO sample tables: every N rounds, prompts with their G completions, rewards and advantages, appended to
`<run>/samples.jsonl` and logged to W&B as a table (`rl/samples`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import WandbLogger

COLUMNS = ["round", "prompt", "completion", "answer", "reward", "advantage", "length", "finished"]


class GRPOSampleTable(L.Callback):
    """Logs the samples of every `every_n_rounds`-th GRPO round (rank 0 only).

    Args:
        every_n_rounds: rounds (batches of prompts) between tables; 0 logs none.
        num_prompts: prompts per table, each with its G completions.
    """

    def __init__(self, every_n_rounds: int = 50, num_prompts: int = 2) -> None:
        self.every_n_rounds, self.num_prompts = every_n_rounds, num_prompts

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        r = getattr(pl_module, "last_round", None)
        every = self.every_n_rounds
        if r is None or not every or r.round % every or not trainer.is_global_zero or not self.num_prompts:
            return
        G = r.rewards.shape[1]
        rows = []
        for i in range(min(self.num_prompts, len(r.prompts))):
            for j in range(G):
                g = r.gens[i * G + j]
                rows.append(
                    [
                        r.round,
                        r.prompts[i],
                        g.text,
                        r.answers[i],
                        float(r.rewards[i, j]),
                        float(r.advantages[i * G + j]),
                        len(g.token_ids),
                        g.finished,
                    ]
                )
        path = Path(trainer.default_root_dir) / "samples.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.writelines(json.dumps(dict(zip(COLUMNS, row))) + "\n" for row in rows)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(key="rl/samples", columns=COLUMNS, data=rows, step=trainer.global_step)
