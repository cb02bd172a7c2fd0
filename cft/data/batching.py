"""Micro-batches grouped into optimisation steps, so the loss can be divided by the weight of the whole step.

Under gradient accumulation a per-micro-batch mean weights a token by 1/len(its micro-batch); dividing every
micro-batch by the summed weight of all micro-batches of the step (and all ranks) gives each token the same
weight, exactly as one big batch would. The loader is stateful, so a mid-epoch resume skips what was consumed.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from cft.errors import ConfigError


class StepBatches(IterableDataset):
    """Yields collated micro-batches for one rank; each carries `step_weight_sum` (this rank's share of the step)
    unless `weight_key` is None (RL prompt batches have no token weights).

    Step s of epoch e covers rows order[s*G:(s+1)*G] (G = micro * accumulate * world_size) of a permutation
    seeded by (seed, e); rank r takes its contiguous slice and cuts it into `accumulate` micro-batches. So the
    set of rows in a step does not depend on how it is split, which is what the invariance tests rely on.
    The incomplete last step is dropped so every rank runs the same number of collectives.
    """

    def __init__(
        self,
        rows: Sequence[dict[str, Any]],
        collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
        micro_batch_size: int,
        accumulate: int = 1,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        epoch_fn: Callable[[], int] = lambda: 0,
        weight_key: str | None = "weights",
    ) -> None:
        if micro_batch_size < 1 or accumulate < 1:
            raise ConfigError("micro_batch_size and accumulate must be >= 1")
        self.rows, self.collate = rows, collate
        self.micro, self.accumulate, self.rank, self.world_size = micro_batch_size, accumulate, rank, world_size
        self.seed, self.shuffle, self.epoch_fn, self.weight_key = seed, shuffle, epoch_fn, weight_key
        # On resume: micro-batches of epoch `skip_epoch` that were consumed before the checkpoint. Keyed by epoch
        # rather than reset after one pass, because Lightning stops reading an epoch at its length (the generator
        # never finishes) and may call iter() on the resumed epoch more than once.
        self.skip, self.skip_epoch = 0, 0
        self.step_rows = micro_batch_size * accumulate * world_size
        if len(rows) < self.step_rows:
            raise ConfigError(
                f"{len(rows)} training rows is fewer than one optimisation step "
                f"(micro_batch_size {micro_batch_size} x accumulate {accumulate} x world_size {world_size})"
            )

    def __len__(self) -> int:
        return (len(self.rows) // self.step_rows) * self.accumulate

    def plan(self, epoch: int) -> list[list[list[int]]]:
        """Row indices for this rank: a list of steps, each a list of `accumulate` micro-batches."""
        order = list(range(len(self.rows)))
        if self.shuffle:
            random.Random(f"{self.seed}-{epoch}").shuffle(order)
        steps = []
        for s in range(len(self.rows) // self.step_rows):
            chunk = order[s * self.step_rows : (s + 1) * self.step_rows]
            per_rank = self.micro * self.accumulate
            mine = chunk[self.rank * per_rank : (self.rank + 1) * per_rank]
            steps.append([mine[k * self.micro : (k + 1) * self.micro] for k in range(self.accumulate)])
        return steps

    def skip_for(self, epoch: int) -> int:
        """Micro-batches of `epoch` to leave out (consumed before the checkpoint this run resumed from)."""
        return self.skip if epoch == self.skip_epoch else 0

    def __iter__(self):
        epoch = self.epoch_fn()
        skip = self.skip_for(epoch)
        k = 0
        for step in self.plan(epoch):
            if k + len(step) <= skip:  # consumed before a resume: not even collated
                k += len(step)
                continue
            batches = [self.collate([self.rows[i] for i in mb]) for mb in step]
            if self.weight_key is not None:
                total = sum(float(b[self.weight_key].sum()) for b in batches)
            for b in batches:
                if k >= skip:
                    if self.weight_key is not None:
                        b["step_weight_sum"] = torch.tensor(total, dtype=torch.float64)
                    yield b
                k += 1


class StepLoader(DataLoader):
    """A DataLoader over StepBatches (training rows or RL prompts) whose state Lightning checkpoints, so a
    mid-epoch resume is exact.

    Lightning pre-fetches a batch ahead, so counting what the generator yielded would over-count by one;
    the owner calls `mark_consumed()` when a batch actually reaches the model (`on_before_batch_transfer`).
    """

    def __init__(self, dataset: StepBatches) -> None:
        super().__init__(dataset, batch_size=None, num_workers=0)
        self.consumed = 0
        self._epoch = -1

    def __iter__(self):
        ds: StepBatches = self.dataset  # type: ignore[assignment]
        epoch = ds.epoch_fn()
        if epoch != self._epoch:
            self._epoch, self.consumed = epoch, ds.skip_for(epoch)
        yield from super().__iter__()

    def mark_consumed(self) -> None:
        self.consumed += 1

    def state_dict(self) -> dict[str, int]:
        ds: StepBatches = self.dataset  # type: ignore[assignment]
        # The step layout travels too, so a run resumed with another batch layout finds its place in rows.
        layout = {"rows": len(ds.rows), "step_rows": ds.step_rows, "accumulate": ds.accumulate}
        return {"epoch": self._epoch, "consumed": self.consumed, **layout}

    def load_state_dict(self, state: dict[str, int]) -> None:
        ds: StepBatches = self.dataset  # type: ignore[assignment]
        consumed = int(state.get("consumed", 0))
        old = (state.get("rows"), state.get("step_rows"), state.get("accumulate"))
        if old[0] is not None and old != (len(ds.rows), ds.step_rows, ds.accumulate):
            # An epoch's row order depends only on (seed, epoch, number of rows), not on how steps are cut, so the
            # position carries over in rows: whole steps done x rows per step, as whole steps of the new layout.
            rows_done = consumed // int(old[2]) * int(old[1])
            if old[0] != len(ds.rows) or rows_done % ds.step_rows:
                warnings.warn(
                    f"resuming with another step layout (rows {old[0]} -> {len(ds.rows)}, rows per step {old[1]} -> "
                    f"{ds.step_rows}): the position in the epoch is approximate, rows may repeat or be left out",
                    stacklevel=2,
                )
            consumed = rows_done // ds.step_rows * ds.accumulate
        ds.skip, ds.skip_epoch = consumed, int(state.get("epoch", 0))
        self._epoch = -1


class ResumableTrainLoader:
    """DataModule mixin that carries the StepLoader's position in the checkpoint itself.

    Lightning restores a loader's state only if it has not built the loader yet, but the LR schedule's
    `trainer.estimated_stepping_batches` builds it before the checkpoint is read in epoch-limited runs; the
    DataModule's own state is restored in every case, so the position travels there and reaches the loader
    whether it exists already or is built later.
    """

    _train_loader: StepLoader | None = None
    _train_loader_state: dict[str, int] | None = None

    def _step_loader(self, dataset: StepBatches) -> StepLoader:
        self._train_loader = StepLoader(dataset)
        if self._train_loader_state is not None:
            self._train_loader.load_state_dict(self._train_loader_state)
        return self._train_loader

    def state_dict(self) -> dict[str, Any]:
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._train_loader_state = state.get("train_loader")
        if self._train_loader is not None and self._train_loader_state is not None:
            self._train_loader.load_state_dict(self._train_loader_state)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Counted here, when a batch reaches the model, not when the generator yields (Lightning fetches ahead).
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training and self._train_loader is not None:
            self._train_loader.mark_consumed()
        return batch
