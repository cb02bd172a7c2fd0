"""Token selectors: where the per-token training weights come from. SFT and CFT differ only here."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerBase

from cft.errors import DataError


class TokenSelector:
    """Maps a training row to one weight per response token (aligned with `response_ids`, EOS included).

    `requires` names the row fields the selector reads, so a missing one fails at set-up with the field's name.
    Selectors whose weights depend on the model being trained (DFT, Rho-1) are token weightings in
    `cft.modules.weighting` instead; they still start from these static weights.
    """

    name: str = "base"
    # The training method this selector gives, as run.method and comparisons name it (None: not a named method).
    method: str | None = None
    requires: tuple[str, ...] = ()

    def setup(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Called once before `weights`; override to precompute tokenizer-dependent tables."""

    def weights(self, row: dict[str, Any]) -> list[float]:
        raise NotImplementedError


class AllTokens(TokenSelector):
    """SFT: weight 1 on every response token (EOS included)."""

    name = "all"
    method = "sft"

    def weights(self, row: dict[str, Any]) -> list[float]:
        return [1.0] * len(row["response_ids"])


class CriticalTokens(TokenSelector):
    """CFT (arXiv 2510.10974): weight 1 on tokens the perturbation scorer marked critical, 0 elsewhere."""

    name = "critical"
    method = "cft"
    requires = ("critical",)

    def weights(self, row: dict[str, Any]) -> list[float]:
        crit = list(row["critical"])
        if len(crit) != len(row["response_ids"]) and len(crit) != len(row["response_ids"]) - 1:
            raise DataError(
                f"row {row.get('id')!r}: 'critical' has {len(crit)} entries for {len(row['response_ids'])} response tokens"
            )
        # The scorer annotates the response without the EOS we append; EOS is never critical.
        return [float(c) for c in crit] + [0.0] * (len(row["response_ids"]) - len(crit))
