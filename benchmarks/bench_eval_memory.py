"""Peak memory of evaluation-style generation (greedy, entropy on) against `max_new_tokens`.

A random 1-layer Qwen2 with a 32k vocabulary (the size of common tokenizers; logits dominate memory) generates for
`--problems` prompts in one batch, never stopping early (EOS is masked out), with entropy computed as the Evaluator
does. Each setting runs in a fresh subprocess and reports its peak RSS (ru_maxrss), so settings do not share a
high-water mark. With per-step logits kept (the old path, `--kept-logits`) memory grows with steps x vocabulary;
with step-by-step accumulation it grows with the KV cache only.

    python benchmarks/bench_eval_memory.py [--problems 64] [--tokens 64 128 256 512] [--kept-logits]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
VOCAB = 32_000


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t1"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="t0", pad_token="t0", unk_token="t1")


def _model(max_pos: int):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=max_pos, eos_token_id=0, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    return Qwen2ForCausalLM(cfg).eval()


def child(problems: int, tokens: int, kept_logits: bool) -> dict:
    import torch

    from cft.lm.generation import generate

    torch.set_num_threads(1)
    tok, model = _tokenizer(), _model(64 + tokens)
    prompts = [[(7 * i + j) % (VOCAB - 2) + 2 for j in range(16)] for i in range(problems)]
    # Never stop at EOS, so every run decodes exactly `tokens` steps.
    model.generation_config.suppress_tokens = [0]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if kept_logits:
        from cft.lm.generation import left_pad
        from cft.lm.logits import token_entropy

        ids, mask = left_pad(prompts, 0)
        res = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=tokens, do_sample=False, pad_token_id=0,
            eos_token_id=0, return_dict_in_generate=True, output_logits=True,
        )  # fmt: skip
        ent = token_entropy(torch.stack(res.logits, 1)).mean(-1)
        n = int(res.sequences.shape[1] - ids.shape[1]) * problems
    else:
        gens = generate(model, tok, prompts, max_new_tokens=tokens, batch_size=problems, return_entropy=True)
        ent = [g[0].mean_entropy for g in gens]
        n = sum(len(g[0].token_ids) for g in gens)
    del ent
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"tokens": tokens, "generated": n, "peak_rss_mib": peak / 1024, "model_rss_mib": base / 1024,
            "seconds": time.perf_counter() - start}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--tokens", type=int, nargs="+", default=[64, 128, 256, 512])
    ap.add_argument("--kept-logits", action="store_true", help="measure the old path (HF output_logits)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.problems, args.child, args.kept_logits)))
        return
    path = "kept per-step logits (old)" if args.kept_logits else "step-by-step accumulation"
    print(f"{path}: {args.problems} prompts x 16 tokens, 1-layer Qwen2, vocab {VOCAB}, greedy, entropy on")
    print(f"{'max_new_tokens':>14} {'generated':>10} {'peak RSS MiB':>13} {'after load MiB':>15} {'s':>7}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for t in args.tokens:
        cmd = [sys.executable, __file__, "--child", str(t), "--problems", str(args.problems)]
        cmd += ["--kept-logits"] if args.kept_logits else []
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(f"{t:>14} failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"{t:>14} {r['generated']:>10} {r['peak_rss_mib']:>13.0f} {r['model_rss_mib']:>15.0f} {r['seconds']:>7.1f}"
        )


if __name__ == "__main__":
    main()
