"""Paired study statistics (means with 95% t intervals, paired differences) and per-class entropy, against hand
computations."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM

from cft.compare.paired import mean_ci, paired_markdown, paired_table, t_quantile
from cft.data.annotation_format import token_class
from cft.errors import CompareError
from cft.token_entropy import entropy_by_class


def test_mean_ci_is_the_t_interval():
    mean, half, n = mean_ci([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3) and half == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert math.isnan(mean_ci([5.0])[1]) and mean_ci([])[2] == 0
    assert t_quantile(4) == 2.776 and t_quantile(11) == 2.228 and t_quantile(100) == 1.96


def test_paired_differences_are_taken_seed_by_seed():
    table = pd.DataFrame(
        {
            "method": ["sft"] * 3 + ["cft"] * 3 + ["odd"] * 2,
            "seed": [0, 1, 2, 0, 1, 2, 0, 5],
            "acc": [0.5, 0.6, 0.7, 0.6, 0.7, 0.8, 0.1, 0.9],
        }
    )
    paired = paired_table(table, "sft", ["acc", "missing"]).set_index("method")
    cft = paired.loc["cft"]
    # cft - sft is 0.1 at every seed: a zero-width interval, though each method's own interval is wide.
    assert cft["diff"] == pytest.approx(0.1) and cft["diff_ci95"] == pytest.approx(0.0, abs=1e-12)
    assert cft["ci95"] == pytest.approx(4.303 * 0.1 / math.sqrt(3))
    assert paired.loc["odd"]["n_pairs"] == 1 and paired.loc["odd"]["diff"] == pytest.approx(-0.4)  # only seed 0
    assert math.isnan(paired.loc["sft"]["diff"])
    text = paired_markdown(paired.reset_index(), "sft")
    assert "| cft | 3 | +0.100 ± 0.000* |" in text
    with pytest.raises(CompareError, match="baseline method 'dft'"):
        paired_table(table, "dft", ["acc"])


def test_entropy_by_class_matches_one_sequence_at_a_time(tiny_model_dir, world_tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    texts = [("Question: Compute 3 + 4.\nAnswer:\n", "3 + 4 = 7\n#### 7"), ("Q: 12 * 3?\nA:\n", "12 * 3 = 36")]
    got = entropy_by_class(model, world_tokenizer, texts, batch_size=2)
    sums: dict[str, list[float]] = {}
    for prompt, response in texts:
        p = world_tokenizer(prompt, add_special_tokens=False)["input_ids"]
        r = world_tokenizer(response, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([p + r])).logits[0]
        for k, tok in enumerate(r):
            probs = torch.softmax(logits[len(p) + k - 1].float(), -1)
            h = float(-(probs * probs.log()).sum())
            sums.setdefault(token_class(world_tokenizer.decode([tok])), []).append(h)
    for cls, hs in sums.items():
        assert got[cls] == pytest.approx(sum(hs) / len(hs), abs=1e-4)
    assert got["decisive"] == pytest.approx(got["digits"]) and got["operators"] != got["decisive"]
    assert math.isnan(got["wording"])  # no word tokens in these responses
