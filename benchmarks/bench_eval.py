"""Evaluation throughput for sampled metrics: the Evaluator's batched path against a per-problem `model.generate` loop.

Both sides sample `--num-samples` completions per problem (temperature 0.7, top_p 1.0) from the same model for the
same problems, stop at EOS or `--max-new-tokens`, and grade every completion; the rate is generated tokens (up to
and including EOS) per second of wall time. The baseline is what a straightforward script does: one problem at a
time, `num_return_sequences=1`, repeated k times.

    python benchmarks/bench_eval.py [--model runs/tiny/pretrain/hf/last] [--problems 32] [--num-samples 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
# Runnable as a plain script from anywhere, installed or not.
sys.path.insert(0, str(REPO))
DEFAULT_MODEL = REPO / "runs" / "tiny" / "pretrain" / "hf" / "last"


def _model_dir(path: str | None, tmp: str) -> tuple[str, str]:
    """A model dir to load and a description of it: the given one, the tiny pretrained base, or a fresh tiny one."""
    if path:
        return path, path
    if (DEFAULT_MODEL / "config.json").is_file():
        return str(DEFAULT_MODEL), f"{DEFAULT_MODEL.relative_to(REPO)} (pretrained tiny base)"
    from cft.lm.loading import save_tiny_world_model

    # The architecture of configs/tiny/pretrain.yaml, randomly initialised (the pretrained base is not there).
    save_tiny_world_model(tmp)
    return tmp, "random tiny qwen2 (configs/tiny/pretrain.yaml architecture; no pretrained base found)"


def bench_evaluator(
    evaluator,
    task,
    rows: list[dict],
) -> tuple[int, float]:
    batch = {key: [r[key] for r in rows] for key in rows[0]}
    start = time.perf_counter()
    records = evaluator.evaluate_batch(batch, task)
    elapsed = time.perf_counter() - start
    tokens = sum(s["num_tokens"] + int(s["finished"]) for r in records for s in r["samples"])
    return tokens, elapsed


def bench_loop(
    model, tokenizer, task, rows: list[dict], k: int, max_new_tokens: int, temperature: float
) -> tuple[int, float]:
    eos = tokenizer.eos_token_id
    tokens = 0
    start = time.perf_counter()
    with torch.no_grad():
        for r in rows:
            ids = torch.tensor([r["prompt_ids"]])
            for _ in range(k):
                out = model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=max_new_tokens,
                    do_sample=True,
                    temperature=temperature,
                    top_p=1.0,
                    top_k=0,
                    num_return_sequences=1,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=eos,
                )
                new = out[0, ids.shape[1] :].tolist()
                n = new.index(eos) + 1 if eos in new else len(new)
                task.grade(tokenizer.decode(new[:n], skip_special_tokens=True), r["answer"])
                tokens += n
    return tokens, time.perf_counter() - start


def bench_hf_batched(model, tokenizer, task, rows, k, max_new_tokens, temperature) -> tuple[int, float]:
    """HF `generate` on the whole chunk at once, keeping per-step logits for entropy (the Evaluator's old path)."""
    from cft.lm.generation import left_pad
    from cft.lm.logits import token_entropy

    eos = tokenizer.eos_token_id
    tokens = 0
    start = time.perf_counter()
    with torch.no_grad():
        ids, mask = left_pad([r["prompt_ids"] for r in rows], tokenizer.pad_token_id)
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=True,
            temperature=temperature, top_p=1.0, top_k=0, num_return_sequences=k, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=eos, return_dict_in_generate=True, output_logits=True,
        )  # fmt: skip
        ent = token_entropy(torch.stack(out.logits, 1) / temperature)
        for j, new in enumerate(out.sequences[:, ids.shape[1] :].tolist()):
            n = new.index(eos) + 1 if eos in new else len(new)
            float(ent[j, :n].mean())
            task.grade(tokenizer.decode(new[:n], skip_special_tokens=True), rows[j // k]["answer"])
            tokens += n
    return tokens, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="HF model dir (default: runs/tiny/pretrain/hf/last or random)")
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--batch-size", type=int, default=64, help="Evaluator sequences per generate call")
    parser.add_argument("--engine", default="hf", help="the Evaluator's engine (cft.lm.engines)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per chunk and side; the fastest counts")
    args = parser.parse_args()

    from cft.data.eval import EvalDataModule
    from cft.lm.loading import ModelConfig
    from cft.modules.evaluator import Evaluator
    from cft.tasks import ArithmeticTask

    with tempfile.TemporaryDirectory() as tmp:
        model_dir, described = _model_dir(args.model, tmp)
        evaluator = Evaluator(
            ModelConfig(name_or_path=model_dir),
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            greedy=False,
            num_samples=args.num_samples,
            temperature=args.temperature,
            engine=args.engine,
        )
        evaluator.configure_model()
        model, tokenizer = evaluator.model, evaluator.tokenizer
        model.eval()
        task = ArithmeticTask()
        dm = EvalDataModule(task, splits=("test",), limit=args.problems)
        rows = dm.build_rows(tokenizer)[0]

        # Warm-up (allocator, kernels) on two problems, outside the timings.
        bench_evaluator(evaluator, task, rows[:2])
        bench_loop(model, tokenizer, task, rows[:1], 1, 4, args.temperature)

        # Interleaved chunk by chunk (one Evaluator generate call's worth of problems), alternating which side goes
        # first, and the fastest of `--repeats` runs of each chunk kept: on a shared machine, load from other
        # processes then hits both sides alike and transient spikes drop out.
        torch.manual_seed(0)
        per_call = max(1, args.batch_size // args.num_samples)
        sides = ("batched", "hf_batched", "loop")
        best: dict[str, list[tuple[float, int]]] = {side: [] for side in sides}
        for i, start in enumerate(range(0, len(rows), per_call)):
            chunk = rows[start : start + per_call]
            runs: dict[str, list[tuple[float, int]]] = {side: [] for side in sides}
            for r in range(args.repeats):
                for side in sides if (i + r) % 2 == 0 else sides[::-1]:
                    if side == "batched":
                        tokens, seconds = bench_evaluator(evaluator, task, chunk)
                    elif side == "hf_batched":
                        tokens, seconds = bench_hf_batched(
                            model, tokenizer, task, chunk, args.num_samples, args.max_new_tokens, args.temperature
                        )
                    else:
                        tokens, seconds = bench_loop(
                            model, tokenizer, task, chunk, args.num_samples, args.max_new_tokens, args.temperature
                        )
                    runs[side].append((seconds / max(tokens, 1), tokens))
            for side, results in runs.items():
                per_token, tokens = min(results)
                best[side].append((per_token * tokens, tokens))
        sec_b, tok_b = (sum(x) for x in zip(*best["batched"]))
        sec_l, tok_l = (sum(x) for x in zip(*best["loop"]))
        sec_h, tok_h = (sum(x) for x in zip(*best["hf_batched"]))

    rate_b, rate_l, rate_h = tok_b / sec_b, tok_l / sec_l, tok_h / sec_h
    print(f"model: {described}")
    print(
        f"setup: {len(rows)} problems x {args.num_samples} samples, max_new_tokens={args.max_new_tokens}, "
        f"temperature={args.temperature}, best of {args.repeats} runs per chunk, torch threads={torch.get_num_threads()}, "
        f"load average after run {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(f"HF batched generate + kept logits:       {tok_h} tokens in {sec_h:.2f} s = {rate_h:.0f} tokens/s")
    print(
        f"Evaluator ({args.engine}, {args.batch_size} seqs/call): {tok_b} tokens in {sec_b:.2f} s = {rate_b:.0f} tokens/s"
    )
    print(f"per-problem model.generate loop:          {tok_l} tokens in {sec_l:.2f} s = {rate_l:.0f} tokens/s")
    print(
        f"SUMMARY bench_eval: evaluator {rate_b:.0f} tok/s vs loop {rate_l:.0f} tok/s -> {rate_b / rate_l:.1f}x; "
        f"vs HF batched generate with kept logits {rate_h:.0f} tok/s -> {rate_b / rate_h:.2f}x"
    )


if __name__ == "__main__":
    main()
