"""Baseline selectors and weightings give exactly the masks of naive loop implementations on hand-made rows."""

from __future__ import annotations

import hashlib
import math
import random

import pytest
import torch

from cft.errors import SelectorError, WeightingError
from cft.modules.weighting import DFTWeighting, Rho1Weighting, excess_loss_weights
from cft.selectors import AllTokens, EntropyTokens, NumericTokens, RandomTokens

EOS = 0


class _Tok:
    eos_token_id = EOS


def _rows(n_rows: int = 12, seed: int = 0) -> list[dict]:
    """Rows shaped like read_annotated_rows output: response ids + EOS, per-token fields without EOS."""
    rng = random.Random(seed)
    rows = []
    for i in range(n_rows):
        n = rng.randint(1, 30)
        rows.append(
            {
                "id": f"q{i}",
                "prompt_ids": [5, 6],
                "response_ids": [rng.randint(1, 50) for _ in range(n)] + [EOS],
                "critical": [int(rng.random() < 0.2) for _ in range(n)],
                # few distinct values, so ties are common and the tie rule is exercised
                "entropy": [rng.choice([0.1, 0.5, 0.5, 1.25, 2.0]) for _ in range(n)],
            }
        )
    return rows


def _selected(weights: list[float]) -> list[int]:
    return [i for i, w in enumerate(weights) if w]


# -- random ---------------------------------------------------------------------------------------------------------
def _naive_random(row: dict, seed: int, k: int, n: int) -> list[int]:
    digest = hashlib.sha256(f"cft.RandomTokens/{seed}/{row['id']}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    return sorted(rng.sample(range(n), k))


def test_random_matches_critical_count_per_row():
    sel = RandomTokens(seed=3)
    sel.setup(_Tok())
    assert sel.requires == ("id", "critical")
    for row in _rows():
        w = sel.weights(row)
        n = len(row["critical"])
        assert len(w) == len(row["response_ids"]) and w[-1] == 0.0  # EOS never selected
        assert sum(w) == sum(row["critical"])
        assert _selected(w) == _naive_random(row, 3, sum(row["critical"]), n)


def test_random_is_deterministic_per_seed_and_differs_across_seeds():
    rows = _rows(20)
    a = [RandomTokens(seed=0).weights(r) for r in rows]
    b = [RandomTokens(seed=0).weights(r) for r in reversed(rows)][::-1]  # order of rows does not matter
    c = [RandomTokens(seed=1).weights(r) for r in rows]
    assert a == b
    assert a != c
    assert [sum(x) for x in a] == [sum(x) for x in c]


def test_random_fixed_fraction():
    sel = RandomTokens(fraction=0.25, seed=0)
    sel.setup(_Tok())
    assert sel.requires == ("id",)  # no annotation needed
    for row in _rows():
        n = len(row["response_ids"]) - 1
        w = sel.weights({k: row[k] for k in ("id", "prompt_ids", "response_ids")})
        assert sum(w) == int(0.25 * n + 0.5) and w[-1] == 0.0
        assert _selected(w) == _naive_random(row, 0, int(0.25 * n + 0.5), n)


def test_random_bad_settings_and_rows():
    with pytest.raises(SelectorError, match="fraction"):
        RandomTokens(fraction=None, match=None)
    with pytest.raises(SelectorError, match="fraction"):
        RandomTokens(fraction=1.5)
    row = _rows(1)[0]
    row["critical"] = row["critical"] + [0, 0, 0]
    with pytest.raises(SelectorError, match=r"'q0'.*'critical'"):
        RandomTokens().weights(row)


# -- entropy --------------------------------------------------------------------------------------------------------
def _naive_top_entropy(ent: list[float], k: int) -> list[int]:
    chosen: list[int] = []
    for _ in range(k):
        best = None
        for i, e in enumerate(ent):  # strict > keeps the earliest of equal values
            if i not in chosen and (best is None or e > ent[best]):
                best = i
        chosen.append(best)
    return sorted(chosen)


def test_entropy_top_k_exact():
    sel = EntropyTokens()
    assert set(sel.requires) == {"entropy", "critical"}
    for row in _rows(30):
        w = sel.weights(row)
        assert len(w) == len(row["response_ids"]) and w[-1] == 0.0
        assert _selected(w) == _naive_top_entropy(row["entropy"], sum(row["critical"]))


def test_entropy_fixed_fraction_and_ties():
    row = {"id": "t", "response_ids": [7, 8, 9, 10, EOS], "entropy": [1.0, 2.0, 2.0, 1.0]}
    assert EntropyTokens(fraction=0.5).weights(row) == [0.0, 1.0, 1.0, 0.0, 0.0]
    assert EntropyTokens(fraction=0.25).weights(row) == [0.0, 1.0, 0.0, 0.0, 0.0]  # tie: earlier position
    assert EntropyTokens(fraction=0.75).weights(row) == [1.0, 1.0, 1.0, 0.0, 0.0]


def test_count_matched_selectors_after_truncation():
    # fit_length truncates response_ids (dropping EOS) and the per-token fields to the same length.
    row = {"id": "t", "response_ids": [7, 8, 9], "critical": [1, 0, 1], "entropy": [0.1, 0.9, 0.5]}
    assert EntropyTokens().weights(row) == [0.0, 1.0, 1.0]
    assert sum(RandomTokens().weights(row)) == 2


# -- numeric --------------------------------------------------------------------------------------------------------
def test_numeric_tokens_only_digits(world_tokenizer):
    sel = NumericTokens()
    sel.setup(world_tokenizer)
    text = "Tom has 12 apples and buys 7 more: 12 + 7 = 19.\n#### 19"
    ids = world_tokenizer(text, add_special_tokens=False)["input_ids"] + [world_tokenizer.eos_token_id]
    w = sel.weights({"id": "n", "response_ids": ids})
    naive = [float(any(c in "0123456789" for c in world_tokenizer.decode([t]))) for t in ids[:-1]] + [0.0]
    assert w == naive
    assert w[-1] == 0.0
    picked = "".join(world_tokenizer.decode([t]) for t, x in zip(ids, w) if x)
    assert picked == "1271271919"  # the world tokenizer splits digits into single tokens


def test_numeric_needs_setup():
    with pytest.raises(RuntimeError, match="setup"):
        NumericTokens().weights({"response_ids": [1, 2]})


# -- model-dependent weightings -------------------------------------------------------------------------------------
def test_dft_weights_are_detached_probabilities():
    weights = AllTokens().weights({"response_ids": [1, 2, 3]})
    w = torch.tensor([weights])
    nll = torch.tensor([[0.1, 2.0, 0.7]], requires_grad=True)
    out = DFTWeighting()(w, nll, {})
    torch.testing.assert_close(out, torch.exp(-nll.detach()))
    assert not out.requires_grad


def _naive_rho1(weights: torch.Tensor, nll: torch.Tensor, ref: torch.Tensor, fraction: float) -> torch.Tensor:
    cand = []
    for b in range(weights.shape[0]):
        for t in range(weights.shape[1]):
            if weights[b, t] > 0:
                cand.append((-(float(nll[b, t]) - float(ref[b, t])), b * weights.shape[1] + t, b, t))
    k = max(1, int(fraction * len(cand) + 0.5))
    out = torch.zeros_like(weights)
    for _, _, b, t in sorted(cand)[:k]:
        out[b, t] = weights[b, t]
    return out * (weights.sum() / out.sum())


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.6, 1.0])
def test_rho1_keeps_exact_top_fraction(fraction):
    g = torch.Generator().manual_seed(0)
    weights = (torch.rand(4, 9, generator=g) > 0.3).float()
    nll = torch.rand(4, 9, generator=g) * 3
    ref = torch.rand(4, 9, generator=g) * 3
    ref[0, :3] = nll[0, :3] - 0.5  # equal excess losses: ties go to the earlier position
    out = excess_loss_weights(weights, nll, ref, fraction)
    torch.testing.assert_close(out, _naive_rho1(weights, nll, ref, fraction))
    n = int((weights > 0).sum())
    assert int((out > 0).sum()) == max(1, int(fraction * n + 0.5))
    # exact normalisation: the applied weights sum to the static weights the learner divides by
    torch.testing.assert_close(out.sum(), weights.sum())


def test_rho1_reference_is_frozen_and_outside_the_module(tiny_model_dir):
    from cft.data.collate import collate_weighted
    from cft.lm.loading import ModelConfig
    from cft.modules.learner import TokenWeightedLearner

    rho = Rho1Weighting(ModelConfig(name_or_path=str(tiny_model_dir)), fraction=0.5)
    learner = TokenWeightedLearner(ModelConfig(name_or_path=str(tiny_model_dir)), weighting=rho)
    learner.configure_model()
    n_model = sum(p.numel() for p in learner.model.parameters())
    assert sum(p.numel() for p in learner.parameters()) == n_model  # not in the optimizer's parameters
    assert all(k.startswith("model.") for k in learner.state_dict())  # not in checkpoints
    assert all(not p.requires_grad for p in rho._model.parameters())

    tok = learner.tokenizer
    rows = [
        {"prompt_ids": tok("1+2=")["input_ids"], "response_ids": tok("3")["input_ids"] + [tok.eos_token_id]},
        {"prompt_ids": tok("4*5=")["input_ids"], "response_ids": tok("20 ok")["input_ids"] + [tok.eos_token_id]},
    ]
    for r in rows:
        r["weights"] = [1.0] * len(r["response_ids"])
    batch = collate_weighted(rows, tok.pad_token_id)
    nll, _ = learner.token_nll(batch)
    w = rho(batch["weights"][:, 1:], nll, batch)
    ref = rho.reference_nll(batch)
    torch.testing.assert_close(ref, nll.detach())  # same weights as the model at the start: excess loss 0
    n = int((batch["weights"] > 0).sum())
    assert int((w > 0).sum()) == math.floor(0.5 * n + 0.5)


def test_rho1_bad_fraction():
    from cft.lm.loading import ModelConfig

    with pytest.raises(WeightingError, match="fraction"):
        Rho1Weighting(ModelConfig(name_or_path="x"), fraction=0.0)
