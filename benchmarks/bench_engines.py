"""Engines side by side on one model (prints numbers; writes nothing unless --json):

  (a) rollout tokens/s of each engine's `rollouts` (annotation's workload: every position x 2 alternatives of a few
      responses, greedy, fixed length) against plain batched greedy `generate` of the same prompt + y<t + a prefixes;
  (b) whether every engine's rollouts equal the `hf` engine's, token for token;
  (c) bf16 against fp32 on the same weights: the greedy token and the rank-2/3 alternatives at every response
      position, the fp32 top-2 logit margin there, the agreement rate, and the largest margin among disagreements
      (every disagreement should be a near-tie).

Sizes: `--size tiny` (CPU smoke run) or `--size 0.5b` (Qwen2.5-0.5B's shape, random weights, for a GPU).
Engines: the names of `cft.lm.engines`, plus `hf-graphs` (`hf` with `cuda_graphs=True`, CUDA only).

    python benchmarks/bench_engines.py --size tiny --device cpu
    python benchmarks/bench_engines.py --size 0.5b --device cuda --dtype bfloat16 --engines hf hf-graphs continuous
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cft.lm.engines import RolloutJob, SamplingParams, build_engine, rollout_requests  # noqa: E402
from cft.lm.engines.hf import HFEngine  # noqa: E402
from cft.lm.generation import generate  # noqa: E402

SIZES = {
    "tiny": dict(vocab=512, hidden=64, layers=2, heads=4, kv=2, inter=128),
    "0.5b": dict(vocab=151_936, hidden=896, layers=24, heads=14, kv=2, inter=4864),
}


def build(size: str, device: str, dtype: torch.dtype, seed: int = 0):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    s = SIZES[size]
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(s["vocab"])}, unk_token="t1"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="t0", pad_token="t0", unk_token="t1")
    cfg = Qwen2Config(
        vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
        num_key_value_heads=s["kv"], intermediate_size=s["inter"], max_position_embeddings=4096, eos_token_id=0,
        pad_token_id=0, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():  # a wider init than HF's 0.02, so that next-token rankings depend on the context
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.06)
        model.get_input_embeddings().weight[0] = 0  # EOS never wins: every rollout runs to the length limit
    return model.to(device=device, dtype=dtype).eval(), tokenizer


def workload(tokenizer, vocab: int, examples: int, prompt_len: int, response_len: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(2, vocab, (examples, prompt_len), generator=g).tolist()
    responses = torch.randint(2, vocab, (examples, response_len), generator=g).tolist()
    return prompts, responses


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="tiny", choices=sorted(SIZES))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--engines", nargs="+", default=["hf", "continuous"])
    ap.add_argument("--examples", type=int, default=4)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--response-len", type=int, default=32)
    ap.add_argument("--rollout-tokens", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument(
        "--repeats", type=int, default=3, help="timed runs of each side after its warm-up; the median counts"
    )
    ap.add_argument("--agreement-examples", type=int, default=8, help="responses compared in bf16 vs fp32 (0: skip)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    model, tok = build(args.size, args.device, dtype)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device {name}; model {args.size} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M params, "
          f"{args.dtype}, random weights); torch {torch.__version__}")  # fmt: skip
    results: dict = {"device": name, "size": args.size, "dtype": args.dtype}
    prompts, responses = workload(tok, SIZES[args.size]["vocab"], args.examples, args.prompt_len, args.response_len)
    hf = HFEngine(model, tok, batch_size=args.batch_size)
    alts, _ = hf.alternatives(prompts, responses, (2, 3))
    jobs = [RolloutJob(i, t, a) for i in range(len(prompts)) for t in range(len(responses[i])) for a in alts[i][t]]
    params = SamplingParams(max_new_tokens=args.rollout_tokens)
    n_tok = len(jobs) * args.rollout_tokens
    print(f"(a) {len(jobs)} rollouts x {args.rollout_tokens} tokens from {len(prompts)} responses of "
          f"{args.response_len} tokens after {args.prompt_len}-token prompts; batch {args.batch_size}")  # fmt: skip
    inputs, _ = rollout_requests(prompts, responses, jobs)
    generate(model, tok, inputs[: args.batch_size], max_new_tokens=4, batch_size=args.batch_size)  # warm-up
    rates, _ = timed(args, n_tok, lambda: generate(model, tok, inputs, max_new_tokens=args.rollout_tokens,
                                                   batch_size=args.batch_size))  # fmt: skip
    base = statistics.median(rates)
    print(f"    plain batched greedy generate: {base:,.0f} tok/s (median of {show(rates)})")
    results["generate_tok_s"], results["generate_runs_tok_s"] = base, rates
    reference = None
    for eng_name in args.engines:
        try:
            name, graphs = ("hf", True) if eng_name == "hf-graphs" else (eng_name, False)
            engine = build_engine(name, model, tok, batch_size=args.batch_size, cuda_graphs=graphs)
            engine.alternatives(prompts, responses, (2, 3))
            engine.rollouts(prompts, responses, jobs[: args.batch_size], SamplingParams(max_new_tokens=4))  # warm
            rates, outs = timed(args, n_tok, lambda e=engine: e.rollouts(prompts, responses, jobs, params))
            rate = statistics.median(rates)
        except Exception as e:  # report and go on: one engine failing must not lose the others' numbers
            print(f"    {eng_name}: FAILED {type(e).__name__}: {str(e)[:300]}")
            results[f"{eng_name}_error"] = f"{type(e).__name__}: {e}"[:500]
            continue
        toks = [g.token_ids for g in outs]
        reference = reference or toks
        same = sum(a == b for a, b in zip(toks, reference))
        print(f"    {eng_name}: {rate:,.0f} tok/s = {rate / base:.2f}x generate (median of {show(rates)}); rollouts "
              f"equal to the first engine's: {same}/{len(toks)}")  # fmt: skip
        results[f"{eng_name}_tok_s"], results[f"{eng_name}_same"] = rate, same / len(toks)
        results[f"{eng_name}_runs_tok_s"] = rates
    if args.agreement_examples:
        results["agreement"] = agreement(model, tok, args, dtype)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def timed(args, n_tok: int, run) -> tuple[list[float], object]:
    """Tokens/s of `args.repeats` runs of `run`, and the last run's result. On a GPU the first full-size run after a
    short warm-up is 2x slower than the next ones (measured on an H200: 6.3k then 15.5k tok/s), so one run is not a
    measurement."""
    rates, out = [], None
    for _ in range(max(1, args.repeats)):
        sync(args.device)
        t0 = time.perf_counter()
        out = run()
        sync(args.device)
        rates.append(n_tok / (time.perf_counter() - t0))
    return rates, out


def show(rates: list[float]) -> str:
    return ", ".join(f"{r:,.0f}" for r in rates)


@torch.no_grad()
def agreement(model, tok, args, dtype) -> dict:
    """(c): teacher-forced rankings of the same weights in fp32 and bf16."""
    prompts, responses = workload(tok, SIZES[args.size]["vocab"], args.agreement_examples, args.prompt_len,
                                  args.response_len, seed=2)  # fmt: skip
    ids = torch.tensor([p + r for p, r in zip(prompts, responses)], device=args.device)
    out = {}
    for name, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        m = model.to(dt)
        logits = m(input_ids=ids).logits[:, args.prompt_len - 1 : -1].float()
        out[name] = logits
    model.to(dtype)
    f32, b16 = out["float32"], out["bfloat16"]
    top = f32.topk(4, dim=-1)
    margin12 = top.values[..., 0] - top.values[..., 1]
    # The three-way ranking decides the greedy token and both alternatives: its smallest gap is what a near-tie means.
    gaps = (top.values[..., :3] - top.values[..., 1:4]).min(-1).values
    greedy_same = f32.argmax(-1) == b16.argmax(-1)
    top3_same = (f32.topk(3, dim=-1).indices == b16.topk(3, dim=-1).indices).all(-1)
    # A near-tie, stated: bf16 can only swap two tokens whose fp32 gap is below the sum of their bf16 errors, so at
    # each position the threshold is 2 x the largest |bf16 - fp32| error among the top-4 logits there.
    err = (b16 - f32).abs().gather(-1, top.indices).max(-1).values
    threshold = 2 * err
    n = greedy_same.numel()
    res = {
        "positions": n,
        "greedy_agreement": float(greedy_same.float().mean()),
        "top3_agreement": float(top3_same.float().mean()),
        "max_top2_margin_of_greedy_disagreements": float(margin12[~greedy_same].max())
        if (~greedy_same).any()
        else None,
        "max_gap_of_top3_disagreements": float(gaps[~top3_same].max()) if (~top3_same).any() else None,
        "greedy_disagreements_below_threshold": float((margin12 <= threshold)[~greedy_same].float().mean())
        if (~greedy_same).any()
        else None,
        "median_threshold": float(threshold.median()),
        "median_top2_margin": float(margin12.median()),
        "positions_below_threshold": float((margin12 <= threshold).float().mean()),
    }
    print(f"(c) bf16 vs fp32 at {n} positions: greedy token agrees {res['greedy_agreement']:.2%}, top-3 "
          f"{res['top3_agreement']:.2%}; largest fp32 top-2 margin among greedy disagreements "
          f"{res['max_top2_margin_of_greedy_disagreements']}, among top-3 disagreements (smallest gap) "
          f"{res['max_gap_of_top3_disagreements']}; near-tie threshold (2 x bf16 logit error) median "
          f"{res['median_threshold']:.3f}; disagreements below it: {res['greedy_disagreements_below_threshold']}; "
          f"positions below it: {res['positions_below_threshold']:.2%}; median top-2 margin "
          f"{res['median_top2_margin']:.3f}")  # fmt: skip
    return res


if __name__ == "__main__":
    main()
