"""What the embedded synthetic worlds share: seeded splits built in a fixed order and cached, and the corpus their
tokenizer is trained on (`ArithmeticTask`, `TestbedTask`)."""

from __future__ import annotations

import hashlib
import random
from abc import abstractmethod
from collections.abc import Iterator

from cft.errors import ConfigError
from cft.tasks.base import Problem, Task
from cft.tasks.templates import PlainTemplate

WORLD_SPLITS = ("pretrain", "train", "val", "test", "test_hard")
_COUNT_FIELDS = tuple(f"n_{split}" for split in WORLD_SPLITS)


class SyntheticWorld(Task):
    """A world generated from `seed`: splits are built in the order of `WORLD_SPLITS` because each excludes the
    problems of those before it; subclasses (dataclasses with `seed` and `n_<split>` fields) write `_generate`."""

    seed: int

    def _init_world(self) -> None:
        """Check the split sizes and start empty caches; called at the end of a subclass's `__post_init__`."""
        for field in _COUNT_FIELDS:
            if getattr(self, field) < 0:
                raise ConfigError(f"{field}={getattr(self, field)}: expected >= 0")
        self._cache: dict[str, list[Problem]] = {}
        self._seen: set = set()  # what earlier splits used, so that later ones never repeat it

    def split_rng(self, split: str) -> random.Random:
        # Python's hash() is salted per process; sha256 keeps splits identical across processes and machines.
        digest = hashlib.sha256(f"{self.name}/{self.seed}/{split}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    @property
    def config(self) -> SyntheticWorld:
        """The world's settings (the task's own fields): what the tokenizer cache is keyed on."""
        return self

    @property
    def splits(self) -> tuple[str, ...]:
        return WORLD_SPLITS

    def problems(self, split: str) -> list[Problem]:
        if split not in WORLD_SPLITS:
            known = ", ".join(WORLD_SPLITS)
            raise ConfigError(f"unknown split {split!r} for task {self.name!r}; known splits: {known}")
        for name in WORLD_SPLITS[: WORLD_SPLITS.index(split) + 1]:
            if name not in self._cache:
                self._cache[name] = self._generate(name)
        return self._cache[split]

    def corpus(self) -> Iterator[str]:
        """Texts to train the world's tokenizer on: prompt + solution of every pretrain and train problem."""
        template = PlainTemplate()
        for split in ("pretrain", "train"):
            for problem in self.problems(split):
                yield template.render(problem.question) + (problem.solution or "")

    @abstractmethod
    def _generate(self, split: str) -> list[Problem]:
        """The problems of `split`, drawn from `self.split_rng(split)`, avoiding what `self._seen` holds."""
