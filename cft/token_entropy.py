"""Where a model's uncertainty sits: mean next-token entropy by token class (wording vs decisive), teacher-forced on
a task's reference solutions, for one or more checkpoints:

    python -m cft.token_entropy 'runs/testbed_study/*-s*' --task testbed --split test --limit 100 --out ent.csv

A run dir `<method>-s<seed>` is read at `hf/<checkpoint>`; any other path must be an HF model dir. The class of a
position is the class of the reference token there (`token_class`); "decisive" is digits, "wording" is words
(operators are reported apart: in the testbed world "+", "plus" and "and" are interchangeable wording). Teacher forcing on the same held-out texts makes the numbers comparable across models, unlike the entropy
of each model's own samples, which also depends on what each model chose to write.
"""

from __future__ import annotations

import argparse
import glob
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from cft.data.annotation_format import TOKEN_CLASSES, token_class
from cft.errors import CFTError
from cft.io import atomic_path
from cft.lm.logits import token_entropy

__all__ = ["entropy_by_class", "main"]

DECISIVE = ("digits",)
WORDING = ("words",)


@torch.no_grad()
def entropy_by_class(model, tokenizer, texts: Sequence[tuple[str, str]], batch_size: int = 32) -> dict[str, float]:
    """Mean next-token entropy (nats) at the response positions of `(prompt, response)` pairs, by the class of the
    response token at that position, plus "decisive", "wording" and "all"."""
    sums = {c: 0.0 for c in TOKEN_CLASSES}
    counts = {c: 0 for c in TOKEN_CLASSES}
    model.eval()
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        seqs, spans = [], []
        for prompt, response in chunk:
            p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            r = tokenizer(response, add_special_tokens=False)["input_ids"]
            seqs.append(p + r)
            spans.append((len(p), r))
        width = max(map(len, seqs))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        ent = token_entropy(model(input_ids=ids, attention_mask=mask).logits)  # [batch, width]
        for b, (n_prompt, response_ids) in enumerate(spans):
            for k, tok in enumerate(response_ids):
                cls = token_class(tokenizer.decode([tok]))
                sums[cls] += float(ent[b, n_prompt + k - 1])  # the distribution that predicts token k
                counts[cls] += 1
    out = {c: sums[c] / counts[c] for c in TOKEN_CLASSES if counts[c]}
    for name, group in (("decisive", DECISIVE), ("wording", WORDING), ("all", TOKEN_CLASSES)):
        n = sum(counts[c] for c in group)
        out[name] = sum(sums[c] for c in group) / n if n else float("nan")
    return out


def _model_dirs(patterns: Sequence[str], checkpoint: str) -> list[tuple[str, int | None, Path]]:
    found = []
    for pattern in patterns:
        paths = sorted(glob.glob(pattern)) or [pattern]
        for path in map(Path, paths):
            m = re.fullmatch(r"(.+)-s(\d+)", path.name)
            if (path / "hf" / checkpoint / "config.json").is_file() and m:
                found.append((m.group(1), int(m.group(2)), path / "hf" / checkpoint))
            elif (path / "config.json").is_file():
                found.append((path.name, None, path))
    if not found:
        raise CFTError(f"no model dirs in {list(patterns)} (want <method>-s<seed>/hf/{checkpoint} or HF model dirs)")
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cft.token_entropy", description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="run dirs <method>-s<seed>, HF model dirs, or quoted globs")
    p.add_argument("--task", default="testbed", help="task whose reference solutions are teacher-forced")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=100, help="first N problems of the split")
    p.add_argument("--checkpoint", default="best", help="hf/<checkpoint> of a run dir")
    p.add_argument("--out", required=True, help="CSV to write: method, seed, model, entropy/<class>...")
    args = p.parse_args(argv)
    import pandas as pd
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cft.tasks import PlainTemplate, get_task

    try:
        models = _model_dirs(args.models, args.checkpoint)
        problems = get_task(args.task).problems(args.split)[: args.limit]
    except CFTError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    template = PlainTemplate()
    texts = [(template.render(q.question), q.solution or "") for q in problems]
    rows = []
    for method, seed, path in models:
        model = AutoModelForCausalLM.from_pretrained(path)
        tok = AutoTokenizer.from_pretrained(path)
        ent = entropy_by_class(model, tok, texts)
        rows.append({"method": method, "seed": seed, "model": str(path), **{f"entropy/{k}": v for k, v in ent.items()}})
        print(f"{path}: wording {ent['wording']:.3f}  decisive {ent['decisive']:.3f}", flush=True)
    with atomic_path(args.out) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
