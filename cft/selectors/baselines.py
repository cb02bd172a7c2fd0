"""Baseline token selectors that ask "is it the choice of tokens?": random, top-entropy and numeric tokens.

Random and entropy tokens are drawn, per row, at the same count as the row's critical set (so they differ from CFT
only in *which* tokens carry loss), or at a fixed fraction of the response. DFT and Rho-1 depend on the model being
trained and live in `cft.modules.weighting`.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from transformers import PreTrainedTokenizerBase

from cft.errors import SelectorError
from cft.selectors.base import TokenSelector

__all__ = ["EntropyTokens", "NumericTokens", "RandomTokens", "selection_count"]


def selection_count(fraction: float, n: int) -> int:
    """round(fraction * n), halves rounded up (Python's round() would send 2.5 to 2)."""
    return int(fraction * n + 0.5)


class _CountMatched(TokenSelector):
    """Shared set-up of selectors that pick k of a row's response tokens, k from `match` or `fraction`."""

    def __init__(self, fraction: float | None, match: str | None, needs: tuple[str, ...]) -> None:
        if fraction is None and match is None:
            raise SelectorError(f"{type(self).__name__}: set `fraction` or `match` (the field whose count to match)")
        if fraction is not None and not 0.0 <= fraction <= 1.0:
            raise SelectorError(f"{type(self).__name__}.fraction must be in [0, 1], got {fraction}")
        self.fraction, self.match = fraction, match
        # `fraction` wins over `match`: `match` has a default, so setting only `fraction` must mean "fixed fraction".
        self.requires = needs + ((match,) if fraction is None else ())
        self.eos_id: int | None = None

    def setup(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.eos_id = tokenizer.eos_token_id

    def _n_scored(self, row: dict[str, Any], field: str | None) -> int:
        """Response tokens that may be selected: all but the trailing EOS (annotations never cover it), and of an
        annotated row only its scored positions (`n_scored`): tokens after the answer were never candidates for CFT,
        so a count-matched control must not spend its budget there either."""
        n = self._n_candidates(row, field)
        scored = row.get("n_scored")
        return n if scored is None else min(n, int(scored))

    def _n_candidates(self, row: dict[str, Any], field: str | None) -> int:
        n = len(row["response_ids"])
        if field is not None and row.get(field) is not None:
            # Per-token fields are aligned with the response without EOS (or truncated with it by fit_length).
            m = len(row[field])
            if m not in (n, n - 1):
                raise SelectorError(
                    f"row {row.get('id')!r}: field {field!r} has {m} entries for {n} response tokens "
                    f"(selector {type(self).__name__})"
                )
            return m
        ends_with_eos = n > 0 and (self.eos_id is None or row["response_ids"][-1] == self.eos_id)
        return n - 1 if ends_with_eos else n

    def _count(self, row: dict[str, Any], n: int) -> int:
        if self.fraction is not None:
            return selection_count(self.fraction, n)
        return sum(1 for c in list(row[self.match])[:n] if c)


class RandomTokens(_CountMatched):
    """Random-token control (reviewers of arXiv 2510.10974): uniform random response tokens, as many as the row's
    critical set (or a fixed fraction), seeded per row by (seed, row id) with a stable hash.

    Args:
        fraction: select this fraction of each row's response tokens (None: match the count of `match`).
        match: row field of 0/1 flags (e.g. "critical") whose per-row count is matched; unused when `fraction` is set.
        seed: selection seed; the choice for a row depends only on (seed, row id), not on order or process.
    """

    name = method = "random"

    def __init__(self, fraction: float | None = None, match: str | None = "critical", seed: int = 0) -> None:
        super().__init__(fraction, match, needs=("id",))
        self.seed = seed

    def rng(self, row_id: Any) -> random.Random:
        # Python's hash() is salted per process; sha256 keeps a row's choice identical across ranks and restarts.
        digest = hashlib.sha256(f"cft.RandomTokens/{self.seed}/{row_id}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    def weights(self, row: dict[str, Any]) -> list[float]:
        n = self._n_scored(row, self.match if self.fraction is None else None)
        chosen = set(self.rng(row.get("id")).sample(range(n), self._count(row, n)))
        return [1.0 if i in chosen else 0.0 for i in range(len(row["response_ids"]))]


class EntropyTokens(_CountMatched):
    """Top-entropy control (high-entropy "forking" tokens, Wang et al. 2025, arXiv 2506.01939): the response tokens
    where the base model's predictive entropy (row field `entropy`) is highest, as many as the row's critical set
    (or a fixed fraction); ties go to the earlier position.

    Args:
        fraction: select this fraction of each row's response tokens (None: match the count of `match`).
        match: row field of 0/1 flags (e.g. "critical") whose per-row count is matched; unused when `fraction` is set.
    """

    name = method = "entropy"

    def __init__(self, fraction: float | None = None, match: str | None = "critical") -> None:
        super().__init__(fraction, match, needs=("entropy",))

    def weights(self, row: dict[str, Any]) -> list[float]:
        n = self._n_scored(row, "entropy")
        ent = list(row["entropy"])[:n]
        k = self._count(row, n)
        order = sorted(range(n), key=lambda i: (-float(ent[i]), i))
        chosen = set(order[:k])
        return [1.0 if i in chosen else 0.0 for i in range(len(row["response_ids"]))]


class NumericTokens(TokenSelector):
    """Numeric-token control (the paper's analysis: critical tokens are mostly numbers): weight 1 on tokens whose
    decoded text contains a digit, 0 elsewhere and on EOS."""

    name = method = "numeric"

    def __init__(self) -> None:
        self.is_numeric: list[bool] | None = None

    def setup(self, tokenizer: PreTrainedTokenizerBase) -> None:
        # One decode per vocabulary entry, once: the per-row lookup is then a list index.
        table = [any(ch.isdigit() for ch in tokenizer.decode([i])) for i in range(len(tokenizer))]
        for special in tokenizer.all_special_ids:
            table[special] = False
        self.is_numeric = table

    def weights(self, row: dict[str, Any]) -> list[float]:
        if self.is_numeric is None:
            raise RuntimeError("NumericTokens.setup(tokenizer) must run before weights()")
        table = self.is_numeric
        out = []
        for t in row["response_ids"]:
            if not 0 <= t < len(table):
                raise SelectorError(f"row {row.get('id')!r}: token id {t} is outside the tokenizer ({len(table)} ids)")
            out.append(1.0 if table[t] else 0.0)
        return out
