"""Peak host memory of one training step (forward, loss, entropy metric, backward): the chunked loss and entropy of
cft.lm.chunked against the plain computation (fp32 cross-entropy and entropy over the whole batch's logits).

    PYTHONPATH=. python benchmarks/bench_loss_memory.py [--vocab 151936] [--batch 2] [--length 512] [--dtype bfloat16]

Each variant runs in its own process; the figure is the rise of the process's peak RSS during the step, over its
RSS once the model and batch exist (ru_maxrss, so it is the high-water mark, not a sample).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _step(variant: str, vocab: int, batch: int, length: int, dtype: str) -> dict:
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, Qwen2Config

    from cft.lm.chunked import chunked_mean_entropy, chunked_token_nll

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=256, tie_word_embeddings=True)  # fmt: skip
    model = AutoModelForCausalLM.from_config(cfg).to(getattr(torch, dtype))
    ids = torch.randint(0, vocab, (batch, length))
    mask = torch.ones_like(ids)
    before = _rss_mib()
    t0 = time.perf_counter()
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1]
    targets = ids[:, 1:]
    if variant == "plain":
        nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
        with torch.no_grad():
            logp = torch.log_softmax(logits[mask[:, 1:].bool()].float(), -1)
            ent = -(logp.exp() * logp).sum(-1).mean()
    else:
        nll = chunked_token_nll(logits, targets)
        ent = chunked_mean_entropy(logits, mask[:, 1:])
    nll.mean().backward()
    return {
        "variant": variant,
        "peak_rise_mib": _rss_mib() - before,
        "step_s": time.perf_counter() - t0,
        "loss": float(nll.mean()),
        "entropy": float(ent),
        "fp32_logits_mib": batch * (length - 1) * vocab * 4 / 2**20,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--vocab", type=int, default=151936)  # Qwen2.5's vocabulary
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--length", type=int, default=512)
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    p.add_argument("--variant", choices=["plain", "chunked"])
    a = p.parse_args()
    if a.variant:
        print(json.dumps(_step(a.variant, a.vocab, a.batch, a.length, a.dtype)))
        return
    rows = []
    for variant in ("plain", "chunked"):
        cmd = [sys.executable, __file__, "--variant", variant, "--vocab", str(a.vocab), "--batch", str(a.batch),
               "--length", str(a.length), "--dtype", a.dtype]  # fmt: skip
        rows.append(json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1]))
    print(f"vocab {a.vocab}, batch {a.batch} x {a.length} tokens, {a.dtype} weights; one fp32 copy of the logits "
          f"= {rows[0]['fp32_logits_mib']:.0f} MiB")  # fmt: skip
    for r in rows:
        print(f"{r['variant']:>8}: peak RSS rise {r['peak_rise_mib']:8.0f} MiB, step {r['step_s']:.2f} s, "
              f"loss {r['loss']:.4f}, entropy {r['entropy']:.4f}")  # fmt: skip
    print(f"ratio plain / chunked peak rise: {rows[0]['peak_rise_mib'] / max(rows[1]['peak_rise_mib'], 1):.2f}")


if __name__ == "__main__":
    main()
