"""Speed of the perturbation scorer, one run, same model and examples (prints numbers; writes nothing):

  (a) annotated response tokens/s of the fast scorer against the naive reference loop (goal >= 50x);
  (b) rollout tokens generated/s against plain batched greedy `generate` at the same batch size, from the
      same prefixes (goal >= 2x).

    python benchmarks/bench_scorer.py [--model runs/tiny/pretrain/hf/last] [--examples 16] [--threads 1] [--skip-decided]

Without a trained model it uses a random tiny one (rollouts then mostly run to the length limit).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cft.lm.engines import HFEngine, SamplingParams, build_engine  # noqa: E402
from cft.lm.generation import generate  # noqa: E402
from cft.lm.loading import ModelConfig, TinyArch, build_tiny_model, load_model, load_tokenizer  # noqa: E402
from cft.lm.stopping import STOP_RULES  # noqa: E402
from cft.modules.scorer import ScorerSettings, annotate  # noqa: E402
from cft.tasks import ArithmeticTask, PlainTemplate  # noqa: E402
from cft.tasks.grading import symbolic_equal  # noqa: E402


def load(path: str):
    if Path(path).is_dir():
        cfg = ModelConfig(name_or_path=path)
        tok = load_tokenizer(cfg)
        return load_model(cfg, tok).eval(), tok, path
    tok = load_tokenizer(ModelConfig(name_or_path="tiny", tokenizer="world:arithmetic"))
    return build_tiny_model(TinyArch(), tok).eval(), tok, "random tiny (TinyArch defaults)"


def examples(model, tok, task, n: int, stop: str, max_new: int) -> tuple[list[dict], str]:
    """The model's own correct greedy responses (the paper's D_correct), else reference solutions."""
    template = PlainTemplate()
    problems = task.problems("train")[: 4 * n]
    prompts = [tok(template.render(p.question))["input_ids"] for p in problems]
    params = SamplingParams(max_new_tokens=max_new, stop_rule=STOP_RULES[stop]())
    out = []
    for p, ids, gens in zip(problems, prompts, HFEngine(model, tok).generate(prompts, params)):
        resp = gens[0].token_ids
        if resp and task.grade(tok.decode(resp, skip_special_tokens=True), p.answer):
            out.append({"prompt_ids": ids, "response_ids": resp, "answer": p.answer})
    if len(out) >= n:
        return out[:n], "own correct greedy responses"
    refs = [
        {"prompt_ids": ids, "response_ids": tok(p.solution, add_special_tokens=False)["input_ids"], "answer": p.answer}
        for p, ids in zip(problems, prompts)
    ]
    return refs[:n], "reference solutions (the model answers too few correctly)"


def timed_rollouts(engine, stats: dict) -> None:
    """Wrap `engine.rollouts` to time the rollout phase alone and record every job's prefix."""
    original = engine.rollouts

    def wrapper(prompts, responses, jobs, params, on_chunk=None):
        t0 = time.perf_counter()
        res = original(prompts, responses, jobs, params, on_chunk)
        stats["seconds"] += time.perf_counter() - t0
        stats["tokens"] += sum(len(g.token_ids) for g in res)
        stats["jobs"] += [list(prompts[j.example]) + list(responses[j.example][: j.position]) + [j.token] for j in jobs]
        return res

    engine.rollouts = wrapper


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="runs/tiny/pretrain/hf/last")
    ap.add_argument("--examples", type=int, default=16)
    ap.add_argument("--stop", default="hashes_line", choices=sorted(STOP_RULES))
    ap.add_argument("--max-rollout-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=128, help="rollouts decoded together (and generate's batch)")
    ap.add_argument("--engine", default="hf", help="engine under test (cft.lm.engines: hf, continuous, vllm)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on a shared machine)")
    ap.add_argument(
        "--skip-decided", action="store_true",
        help="engine under test with skip_decided_rollouts (the naive loop always runs every rollout)",
    )  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, tok, name = load(args.model)
    task = ArithmeticTask()
    exs, kind = examples(model, tok, task, args.examples, args.stop, args.max_rollout_tokens)
    n_tok = sum(len(e["response_ids"]) for e in exs)
    settings = ScorerSettings(stop=args.stop, max_rollout_tokens=args.max_rollout_tokens)
    fast_settings = ScorerSettings(
        stop=args.stop, max_rollout_tokens=args.max_rollout_tokens, skip_decided_rollouts=args.skip_decided
    )
    print(
        f"model: {name}; {len(exs)} examples ({kind}), {n_tok} response tokens; stop {args.stop}; "
        f"max rollout tokens {args.max_rollout_tokens}; batch {args.batch_size}; {args.threads} thread(s); "
        f"skip_decided_rollouts {args.skip_decided}"
    )

    stats = {"seconds": 0.0, "tokens": 0, "jobs": []}
    engine = build_engine(args.engine, model, tok, batch_size=args.batch_size)
    timed_rollouts(engine, stats)
    annotate(model, tok, task, exs[:2], fast_settings, engine)  # warm-up
    # Start the math-verify worker now (~0.4 s, once per process): otherwise the first side to grade a non-numeric
    # answer pays for it, and the naive loop runs second.
    symbolic_equal("x", "1")
    stats.update(seconds=0.0, tokens=0, jobs=[])
    t0 = time.perf_counter()
    fast = annotate(model, tok, task, exs, fast_settings, engine)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive = annotate(model, tok, task, exs, settings, "naive")
    t_naive = time.perf_counter() - t0
    same = [a.critical for a in fast] == [b.critical for b in naive]
    crit = sum(sum(a.critical) for a in fast)
    print(
        f"\n(a) annotated response tokens/s: {args.engine} {n_tok / t_fast:,.1f} ({t_fast:.2f}s), naive {n_tok / t_naive:,.1f} "
        f"({t_naive:.2f}s): {t_naive / t_fast:.1f}x (goal >= 50x); masks identical: {same}; "
        f"critical {crit}/{n_tok}; rollouts {sum(a.rollouts for a in fast)} (naive {sum(a.rollouts for a in naive)})"
    )

    # (b) the same prefixes through plain batched greedy generate (HF generate with the KV cache, EOS stop only).
    prompts = stats["jobs"]
    t0 = time.perf_counter()
    gens = generate(model, tok, prompts, max_new_tokens=args.max_rollout_tokens, batch_size=args.batch_size)
    t_gen = time.perf_counter() - t0
    gen_tokens = sum(len(g[0].token_ids) + g[0].finished for g in gens)
    rate_fast, rate_gen = stats["tokens"] / stats["seconds"], gen_tokens / t_gen
    print(
        f"(b) rollout tokens/s: scorer {rate_fast:,.0f} ({stats['tokens']} tokens in {stats['seconds']:.2f}s, "
        f"{len(prompts)} rollouts), plain generate {rate_gen:,.0f} ({gen_tokens} tokens in {t_gen:.2f}s): "
        f"{rate_fast / rate_gen:.2f} x plain batched greedy decode (goal >= 2x)"
    )


if __name__ == "__main__":
    main()
