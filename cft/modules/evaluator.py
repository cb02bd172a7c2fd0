"""Evaluator: greedy accuracy and sampling metrics (pass@k, maj@k, entropy, diversity) per dataloader.

`python -m cft test --config configs/tiny/eval.yaml` writes `<run>/predictions/<name>.jsonl` (one row per problem,
with the generation, the extracted answer and the extraction rule that found it) and `<run>/metrics.json`, and logs
`eval/<name>/<metric>` to every logger, plus `eval/avg/acc` (the mean over dataloaders) when there are several.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch

from cft.errors import ConfigError
from cft.io import atomic_write_text
from cft.lm.engines import ENGINES, SamplingParams
from cft.lm.generation import Generation
from cft.lm.loading import ModelConfig
from cft.metrics import distinct_answers, distinct_n, maj_at_k, mean_token_entropy, pass_at_k
from cft.modules.causal_lm import CausalLMModule
from cft.tasks.base import Task


def default_ks(num_samples: int) -> list[int]:
    """Powers of two up to `num_samples`, and `num_samples` itself (pass@n is the headline number)."""
    ks, k = [], 1
    while k <= num_samples:
        ks.append(k)
        k *= 2
    if num_samples and ks[-1] != num_samples:
        ks.append(num_samples)
    return ks


def grade_extracted(task: Task, pred: str | None, gold: str) -> bool:
    """Grade an already extracted answer (for majority votes), the way `task` grades generations."""
    return task.answers_equal(pred, gold)


def truncate_at_stop(text: str, stop: list[str] | tuple[str, ...]) -> str:
    """`text` cut before each stop string in turn, then stripped, as the Qwen2.5-Math harness post-processes its
    completions (for greedy decoding this equals stopping generation there). No stop strings: `text` unchanged."""
    if not stop:
        return text
    for word in stop:
        if word and word in text:
            text = text.split(word, 1)[0]
    return text.strip()


def _generation_stats(gens: list[dict[str, Any]]) -> dict[str, float]:
    """acc, token-weighted mean entropy, mean length and unfinished fraction of graded generations."""
    n = len(gens)
    return {
        "acc": sum(g["correct"] for g in gens) / n,
        # generate() averages entropy over the tokens and the EOS step when there is one.
        "entropy": mean_token_entropy(
            [g["entropy"] for g in gens], [g["num_tokens"] + int(g["finished"]) for g in gens]
        ),
        "mean_length": sum(g["num_tokens"] for g in gens) / n,
        "frac_unfinished": sum(not g["finished"] for g in gens) / n,
    }


class Evaluator(CausalLMModule):
    """Generates for every problem of every dataloader of an `EvalDataModule` and grades with its task.

    Greedy decoding gives `acc`; with `num_samples` > 0, sampled completions give pass@k (unbiased estimator),
    maj@k, sample entropy and diversity. Use with `test`, `validate` or `predict` (predict writes the same files
    but logs nothing).

    Args:
        model: which model and tokenizer to evaluate.
        max_new_tokens: generation budget per completion.
        batch_size: sequences (prompts x samples) per generate call; lower it if generation runs out of memory.
        greedy: run greedy decoding (`acc`); without it `acc` is the mean correctness of the samples.
        num_samples: sampled completions per problem for pass@k, maj@k and diversity (0 = no sampling).
        temperature: sampling temperature.
        top_p: nucleus sampling threshold (1.0 = off).
        ks: k values of pass@k and maj@k (None: powers of 2 up to num_samples, and num_samples).
        distinct_ngram: n of the distinct-n diversity of each problem's samples.
        predictions_dir: where `<name>.jsonl` predictions go (None: `<run dir>/predictions`).
        stop: strings a completion's text is cut before, before grading, as the Qwen2.5-Math harness does (None: the
            model's `stop_strings`, where generation stops; generation keeps the matched string in the text).
        engine: inference engine (`cft.lm.engines`): "hf" (exact batched generate), "continuous" (transformers'
            continuous batching) or "vllm" (optional extra, never run here).
    """

    def __init__(
        self,
        model: ModelConfig,
        max_new_tokens: int = 256,
        batch_size: int = 64,
        greedy: bool = True,
        num_samples: int = 0,
        temperature: float = 0.7,
        top_p: float = 1.0,
        ks: list[int] | None = None,
        distinct_ngram: int = 4,
        predictions_dir: str | None = None,
        stop: list[str] | None = None,
        engine: Literal["hf", "continuous", "vllm"] = "hf",
    ) -> None:
        super().__init__(model)
        if num_samples < 0:
            raise ConfigError(f"model.num_samples={num_samples}: expected >= 0 (0 = no sampling)")
        if not greedy and num_samples == 0:
            raise ConfigError("model.greedy=false and model.num_samples=0: nothing would be generated")
        if num_samples and temperature <= 0:
            raise ConfigError(f"model.temperature={temperature}: sampling needs a temperature > 0")
        if not 0 < top_p <= 1:
            raise ConfigError(f"model.top_p={top_p}: expected 0 < top_p <= 1")
        if max_new_tokens < 1 or batch_size < 1 or distinct_ngram < 1:
            raise ConfigError(
                f"model.max_new_tokens={max_new_tokens}, batch_size={batch_size} and "
                f"distinct_ngram={distinct_ngram} must all be >= 1"
            )
        if ks is None:
            ks = default_ks(num_samples)
        bad = [k for k in ks if k < 1 or k > num_samples]
        if bad:
            raise ConfigError(
                f"model.ks={list(ks)}: every k must satisfy 1 <= k <= num_samples={num_samples}, got {bad} "
                f"(pass@k and maj@k need at least k samples per problem; raise model.num_samples)"
            )
        self.max_new_tokens, self.gen_batch_size = max_new_tokens, batch_size
        self.greedy, self.num_samples = greedy, num_samples
        self.temperature, self.top_p = temperature, top_p
        self.ks = sorted(set(ks))
        self.distinct_ngram = distinct_ngram
        self.predictions_dir = predictions_dir
        self.stop = None if stop is None else list(stop)
        if engine not in ENGINES:
            raise ConfigError(f"model.engine={engine!r}: expected one of {list(ENGINES)}")
        self.engine = engine
        self._records: dict[int, list[dict[str, Any]]] = {}
        self.final_metrics: dict[str, float] = {}
        self.save_hyperparameters()

    # -- generation and grading ---------------------------------------------------------------------------------
    def _generate(self, prompt_ids: list[list[int]], sample: bool) -> list[list[Generation]]:
        params = SamplingParams(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature if sample else 0.0,
            top_p=self.top_p if sample else 1.0,
            n=self.num_samples if sample else 1,
            return_entropy=True,
            stop_strings=tuple(self.model_config.stop_strings),
        )
        return self.generation_engine(self.gen_batch_size).generate(prompt_ids, params)

    def _graded(self, task: Task, gen: Generation, answer: str) -> dict[str, Any]:
        text = truncate_at_stop(gen.text, self.stop if self.stop is not None else self.model_config.stop_strings)
        extracted, rule, correct = task.judge(text, answer)
        return {
            "text": text,
            "extracted": extracted,
            # Which extraction rule found the answer ("boxed", "answer_is", "last_number", ...; "none").
            "rule": rule,
            "correct": bool(correct),
            "entropy": gen.mean_entropy,
            "num_tokens": len(gen.token_ids),
            "finished": gen.finished,
        }

    def evaluate_batch(self, batch: dict[str, list[Any]], task: Task) -> list[dict[str, Any]]:
        """One record per problem of `batch` (a dict of lists with index, id, prompt, prompt_ids, answer)."""
        records = [
            {"index": i, "id": pid, "prompt": prompt, "answer": answer}
            for i, pid, prompt, answer in zip(batch["index"], batch["id"], batch["prompt"], batch["answer"])
        ]
        if self.greedy:
            for rec, gens in zip(records, self._generate(batch["prompt_ids"], sample=False)):
                g = self._graded(task, gens[0], rec["answer"])
                rec.update(generation=g.pop("text"), **g)
        if self.num_samples:
            for rec, gens in zip(records, self._generate(batch["prompt_ids"], sample=True)):
                rec["samples"] = [self._graded(task, g, rec["answer"]) for g in gens]
                if not self.greedy:
                    first = rec["samples"][0]
                    rec.update(generation=first["text"], **{k: v for k, v in first.items() if k != "text"})
        return records

    # -- metrics ------------------------------------------------------------------------------------------------
    def problem_metrics(self, records: list[dict[str, Any]], task: Task) -> dict[str, float]:
        """Metrics of one dataloader from its per-problem records (unprefixed names, e.g. "acc", "pass@4")."""
        if not records:
            return {"n": 0.0}
        n = len(records)
        out: dict[str, float] = {"n": float(n)}
        samples = [r["samples"] for r in records] if self.num_samples else []
        flat = [s for ss in samples for s in ss]
        # Without greedy decoding the headline numbers come from the samples (acc is then the mean sample accuracy).
        out.update(_generation_stats(records if self.greedy else flat))
        if self.num_samples:
            stats = _generation_stats(flat)
            out["sample_entropy"], out["sample_mean_length"] = stats["entropy"], stats["mean_length"]

            def grade_fn(pred: str, gold: str) -> bool:
                return grade_extracted(task, pred, gold)

            for k in self.ks:
                out[f"pass@{k}"] = sum(pass_at_k(len(ss), sum(s["correct"] for s in ss), k) for ss in samples) / n
                out[f"maj@{k}"] = (
                    sum(
                        maj_at_k([s["extracted"] for s in ss], r["answer"], k, grade_fn)
                        for ss, r in zip(samples, records)
                    )
                    / n
                )
            out["distinct_answers"] = sum(distinct_answers([s["extracted"] for s in ss]) for ss in samples) / n
            # Diversity of each problem's own samples (pooling over problems would measure problem diversity).
            out[f"distinct_{self.distinct_ngram}"] = (
                sum(distinct_n([s["text"] for s in ss], self.distinct_ngram) for ss in samples) / n
            )
        return out

    # -- Lightning hooks ----------------------------------------------------------------------------------------
    def _task(self, dataloader_idx: int) -> Task:
        return self.task_for(dataloader_idx)

    def _name(self, dataloader_idx: int) -> str:
        names = self.dataloader_names
        return names[dataloader_idx] if names and dataloader_idx < len(names) else f"dataloader_{dataloader_idx}"

    def _step(self, batch: dict[str, list[Any]], dataloader_idx: int) -> list[dict[str, Any]]:
        records = self.evaluate_batch(batch, self._task(dataloader_idx))
        self._records.setdefault(dataloader_idx, []).extend(records)
        return records

    def _reset(self) -> None:
        self._records = {}

    def on_test_epoch_start(self) -> None:
        self._reset()

    def on_validation_epoch_start(self) -> None:
        self._reset()

    def on_predict_epoch_start(self) -> None:
        self._reset()

    def test_step(self, batch: dict[str, list[Any]], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._step(batch, dataloader_idx)

    def validation_step(self, batch: dict[str, list[Any]], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._step(batch, dataloader_idx)

    def predict_step(self, batch: dict[str, list[Any]], batch_idx: int, dataloader_idx: int = 0) -> list[dict]:
        return self._step(batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self._finish(log=True)

    def on_validation_epoch_end(self) -> None:
        self._finish(log=True)

    def on_predict_epoch_end(self) -> None:
        self._finish(log=False)

    def _gathered(self) -> dict[int, list[dict[str, Any]]]:
        """Every rank's records, merged and in dataset order; duplicates from the distributed sampler's padding
        (it repeats problems so that ranks get equal counts) are dropped."""
        parts = [self._records]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, self._records)
        merged: dict[int, dict[int, dict[str, Any]]] = {}
        for part in parts:
            for idx, records in (part or {}).items():
                for r in records:
                    merged.setdefault(idx, {}).setdefault(r["index"], r)
        return {idx: [by_index[i] for i in sorted(by_index)] for idx, by_index in sorted(merged.items())}

    def _finish(self, log: bool) -> None:
        gathered = self._gathered()
        metrics: dict[str, float] = {}
        for idx, records in gathered.items():
            name = self._name(idx)
            for key, value in self.problem_metrics(records, self._task(idx)).items():
                metrics[f"eval/{name}/{key}"] = float(value)
        accs = [metrics[key] for key in (f"eval/{self._name(idx)}/acc" for idx in gathered) if key in metrics]
        if len(accs) > 1:
            # The headline number of the suite, as the Qwen2.5-Math harness reports it: the unweighted mean over
            # benchmarks (each benchmark counts once, whatever its size).
            metrics["eval/avg/acc"] = sum(accs) / len(accs)
        self.final_metrics = metrics
        if log and metrics:
            # Every rank holds the same gathered values; sync_dist keeps ranks' collectives in step.
            self.log_dict(metrics, sync_dist=True, add_dataloader_idx=False)
        if self.trainer.is_global_zero:
            self._write(gathered, metrics)
        self.trainer.strategy.barrier("evaluator_write")
        self._records = {}

    def run_dir(self) -> Path:
        return Path(self.trainer.default_root_dir)

    def _write(self, gathered: dict[int, list[dict[str, Any]]], metrics: dict[str, float]) -> None:
        pred_dir = Path(self.predictions_dir) if self.predictions_dir else self.run_dir() / "predictions"
        for idx, records in gathered.items():
            lines = []
            for r in records:
                row = {key: value for key, value in r.items() if key != "index"}
                lines.append(json.dumps(row, ensure_ascii=False))
            atomic_write_text(pred_dir / f"{self._name(idx)}.jsonl", "".join(line + "\n" for line in lines))
        atomic_write_text(self.run_dir() / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
