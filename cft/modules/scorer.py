"""PerturbationScorer: critical-token annotation (arXiv 2510.10974), run by `python -m cft predict`.

The contract, for every position t of a kept response y to prompt x:
  alternatives  the tokens at `alternative_ranks` (default 2 and 3) of the model's next-token ranking given x + y<t,
                where y_t counts as rank 1 (`rank_alternatives`): for a greedy response these are the rank-2 and
                rank-3 tokens; for a given response, the best tokens other than the one written.
  rollouts      for each alternative a: x + y<t + a continued greedily to EOS, the stop rule or the length limit
                (or `rollouts_per_alternative` samples at `temperature`, an extension), then graded by the task on
                the decoded response text y<t + a + continuation (`grade_rollout`: in the task's strict answer
                format when it has one; a length-cut rollout never passes by the last-number fallback).
  criterion     y_t is critical iff every rollout fails (`criterion: all`, the paper), at least one fails (`any`),
                or at least `fail_fraction` of them fail (`fraction`).

Edge cases, defined:
  ties          rankings order equal logits by lower token id, which is also the token greedy argmax picks.
  EOS           an alternative that is an EOS id ends its rollout at once; it is graded on y<t as written.
  specials      any other special token is fed like any token; decoded text drops special tokens before grading.
  after answer  with `stop: eos` (default) every position is scored, as in the paper. With an answer stop rule
                (`hashes_line`, `boxed`) rollouts end once their answer is complete, responses end there too, and
                positions after the token completing the response's own answer are not scored: critical 0,
                `n_scored` counts the scored ones.
  checkpoints   decoding is the model's raw argmax: generation_config processors (repetition penalty...) are
                not applied, in the fast path and the naive reference alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cft.data.annotation_format import SkipReason, annotation_row
from cft.errors import ConfigError
from cft.lm.engines import ENGINES, HFEngine, InferenceEngine, RolloutJob, SamplingParams, build_engine
from cft.lm.loading import ModelConfig
from cft.lm.stopping import ALT_ANSWER, ALT_EOS, LENGTH, STOP_RULES, StopRule, eos_token_ids, first_answer_stop
from cft.modules.causal_lm import CausalLMModule
from cft.tasks.base import Task

__all__ = ["Annotation", "AnnotationProgress", "PerturbationScorer", "ScorerSettings", "annotate", "grade_rollout"]


@dataclass
class ScorerSettings:
    """The settings that define an annotation (batch sizes and engine only change speed, so they are not here).

    Args:
        alternative_ranks: ranks of the alternatives in the model's next-token ranking (y_t is rank 1).
        criterion: y_t is critical iff "all" rollouts fail (paper), "any" fails, or a "fraction" of them fail.
        fail_fraction: failed share of rollouts that makes y_t critical, with criterion "fraction".
        stop: when a rollout ends: "eos" (EOS or length; paper), "hashes_line" (after the `#### n` line), "boxed".
        max_new_tokens: length limit of the model's own responses (1024 fits GSM8K and MATH chains of thought).
        max_rollout_tokens: tokens generated per rollout after the alternative, at most; rollouts it cuts are
            counted per position (`rollouts_truncated`) and in metadata.json, so truncation can be audited.
        rollouts_per_alternative: sampled rollouts per alternative (extension; needs temperature > 0).
        temperature: 0 for greedy rollouts (paper), else the sampling temperature (extension).
        seed: seed of sampled rollouts (reproducible for the same batches).
        skip_decided_rollouts: roll out a position's alternatives in rank order, one rank per batch of rollouts, and
            stop once its verdict is decided (criterion `all`: after the first rollout that passes, so a non-critical
            position usually costs one rollout instead of two; `any`: after the first that fails). The mask is
            the same; `rollouts_failed`/`rollouts_total`/`rollouts_truncated` then count the rollouts run (plus the
            ones decided without decoding: an EOS alternative, an answer already complete), so a non-critical position
            typically reads 0 of 1 instead of 0 or 1 of 2. Sampled rollouts are drawn one rank at a time, so with
            temperature > 0 they differ from the unskipped run's (still seeded).
    """

    alternative_ranks: tuple[int, ...] = (2, 3)
    criterion: Literal["all", "any", "fraction"] = "all"
    fail_fraction: float = 1.0
    stop: Literal["eos", "hashes_line", "boxed"] = "eos"
    max_new_tokens: int = 1024
    max_rollout_tokens: int = 1024
    rollouts_per_alternative: int = 1
    temperature: float = 0.0
    seed: int = 0
    skip_decided_rollouts: bool = False

    def __post_init__(self) -> None:
        self.alternative_ranks = tuple(self.alternative_ranks)
        if (
            not self.alternative_ranks
            or min(self.alternative_ranks) < 2
            or len(set(self.alternative_ranks)) != len(self.alternative_ranks)
        ):
            raise ConfigError(
                f"alternative_ranks={list(self.alternative_ranks)}: expected distinct ranks >= 2 (1 is y_t)"
            )
        if self.criterion not in ("all", "any", "fraction"):
            raise ConfigError(f"criterion={self.criterion!r}: expected 'all', 'any' or 'fraction'")
        if not 0.0 < self.fail_fraction <= 1.0:
            raise ConfigError(f"fail_fraction={self.fail_fraction}: expected a fraction in (0, 1]")
        if self.stop not in STOP_RULES:
            raise ConfigError(f"stop={self.stop!r}: expected one of {sorted(STOP_RULES)}")
        if self.max_new_tokens < 1 or self.max_rollout_tokens < 1:
            raise ConfigError("max_new_tokens and max_rollout_tokens must be >= 1")
        if self.rollouts_per_alternative < 1:
            raise ConfigError(f"rollouts_per_alternative={self.rollouts_per_alternative}: expected >= 1")
        if self.temperature < 0:
            raise ConfigError(f"temperature={self.temperature}: expected >= 0 (0 = greedy)")
        if self.rollouts_per_alternative > 1 and self.temperature == 0:
            raise ConfigError("rollouts_per_alternative > 1 needs temperature > 0 (greedy rollouts would be identical)")

    def is_critical(self, failed: int, total: int) -> bool:
        if total == 0:
            return False
        if self.criterion == "all":
            return failed == total
        if self.criterion == "any":
            return failed > 0
        return failed / total >= self.fail_fraction


@dataclass
class AnnotationProgress:
    """Running totals of this process's annotation (for progress displays; metadata.json has the exact counts)."""

    asked: int = 0
    kept: int = 0
    rollouts: int = 0
    rollout_tokens: int = 0
    seconds: float = 0.0

    @property
    def rollouts_per_s(self) -> float:
        return self.rollouts / max(self.seconds, 1e-9)


@dataclass
class Annotation:
    """The scorer's verdict on one response; per-position lists are aligned with the response tokens."""

    critical: list[int]
    alternatives: list[list[int]]
    entropy: list[float]
    failed: list[int]
    total: list[int]
    n_scored: int
    rollouts: int = 0
    rollout_tokens: int = 0
    outcomes: list[list[tuple[list[int], str, bool]]] = field(default_factory=list)
    truncated: list[int] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)


def _n_scored(stop: StopRule, tokenizer: PreTrainedTokenizerBase, response: Sequence[int]) -> int:
    """Positions up to and including the token that completes the response's answer (all of them with `eos`)."""
    k = first_answer_stop(stop, tokenizer, [], response)
    return len(response) if k is None else k


@torch.no_grad()
def annotate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: Task,
    examples: Sequence[dict[str, Any]],
    settings: ScorerSettings,
    engine: str | InferenceEngine = "hf",
    rollout_batch_size: int = 64,
    forward_batch_size: int = 8,
    seed: int | None = None,
    on_chunk: Callable[[int, int], None] | None = None,
    stop_strings: Sequence[str] = (),
) -> list[Annotation]:
    """Annotate `examples` (dicts with `prompt_ids`, `response_ids` without EOS, `answer`).

    `engine` is an `InferenceEngine` or its name (`cft.lm.engines`): "hf" (alias "fast") batches rollouts over
    cached prefixes; "naive" is the reference: one forward per position for the alternatives and one `generate` per
    (position, alternative), nothing shared. Every engine gives the same masks up to exact floating-point ties.
    `seed` seeds sampled rollouts (default: settings.seed).
    """
    if isinstance(engine, str):
        engine = build_engine(engine, model, tokenizer, batch_size=rollout_batch_size,
                              forward_batch_size=forward_batch_size)  # fmt: skip
    if engine.name == "naive" and settings.temperature > 0:
        raise ConfigError("engine 'naive' is the greedy reference; sampled rollouts need engine 'hf'")
    stop = STOP_RULES[settings.stop]()
    eos = set(eos_token_ids(model, tokenizer))
    decode = lambda ids: tokenizer.decode(list(ids), skip_special_tokens=True)  # noqa: E731
    prompts = [list(ex["prompt_ids"]) for ex in examples]
    responses = [list(ex["response_ids"]) for ex in examples]
    n_scored = [_n_scored(stop, tokenizer, r) for r in responses]
    alternatives, entropy = engine.alternatives(prompts, responses, settings.alternative_ranks)

    # One job per (example, position, alternative, sample), `slot` = its index within the position (rank order);
    # outcome (tokens, reason) filled below. An alternative that is EOS or completes the answer by itself is decided
    # here, the same for every engine.
    keys: list[tuple[int, int, list[int]]] = []
    outcomes: list[tuple[list[int], str] | None] = []
    jobs: dict[int, tuple[int, RolloutJob]] = {}  # key index -> (slot, job)
    for i, r in enumerate(responses):
        for t in range(n_scored[i]):
            for rank, a in enumerate(alternatives[i][t]):
                for sample in range(settings.rollouts_per_alternative):
                    text_ids = r[:t] + [a]
                    keys.append((i, t, text_ids))
                    if a in eos:
                        outcomes.append(([], ALT_EOS))
                    elif stop.triggers and stop.complete(decode(text_ids)):
                        outcomes.append(([], ALT_ANSWER))
                    else:
                        outcomes.append(None)
                        jobs[len(keys) - 1] = (rank * settings.rollouts_per_alternative + sample, RolloutJob(i, t, a))
    # Per position: rollouts it has in all, and failed / graded so far; a position is decided once the rollouts
    # still to come cannot change its verdict.
    planned: dict[tuple[int, int], int] = {}
    for i, t, _ in keys:
        planned[i, t] = planned.get((i, t), 0) + 1
    failed = dict.fromkeys(planned, 0)
    graded = dict.fromkeys(planned, 0)
    passed: list[bool | None] = [None] * len(keys)

    def grade(k: int) -> None:
        i, t, text_ids = keys[k]
        toks, reason = outcomes[k]  # type: ignore[misc]
        graded_ids = text_ids[:-1] if reason == ALT_EOS else text_ids + toks
        passed[k] = grade_rollout(task, decode(graded_ids), examples[i]["answer"], reason)
        failed[i, t] += not passed[k]
        graded[i, t] += 1

    def decided(pos: tuple[int, int]) -> bool:
        rest = planned[pos] - graded[pos]
        return settings.is_critical(failed[pos], planned[pos]) == settings.is_critical(failed[pos] + rest, planned[pos])

    for k, o in enumerate(outcomes):
        if o is not None:
            grade(k)
    # Without skipping, every rollout runs in one call (the engine batches them all); with it, one call per slot.
    slots = sorted({slot for slot, _ in jobs.values()}) if settings.skip_decided_rollouts else [None]
    params = SamplingParams(
        max_new_tokens=settings.max_rollout_tokens, temperature=settings.temperature,
        seed=settings.seed if seed is None else seed, stop_rule=stop, stop_strings=tuple(stop_strings),
    )  # fmt: skip
    for slot in slots:
        todo = [
            k for k, (s, job) in jobs.items()
            if slot is None or (s == slot and not decided((job.example, job.position)))
        ]  # fmt: skip
        if not todo:
            continue
        for k, gen in zip(todo, engine.rollouts(prompts, responses, [jobs[k][1] for k in todo], params, on_chunk)):
            outcomes[k] = (gen.token_ids, gen.stop_reason)
            grade(k)
    if hasattr(engine, "release"):
        engine.release()  # the cached prefixes of this batch are not needed again

    out = []
    for i, r in enumerate(responses):
        scored_alts = [alternatives[i][t] if t < n_scored[i] else [] for t in range(len(r))]
        zeros = [0] * len(r)
        out.append(Annotation(list(zeros), scored_alts, entropy[i], list(zeros), list(zeros), n_scored[i],
                              outcomes=[[] for _ in r], truncated=list(zeros)))  # fmt: skip
    for k, ((i, t, _), outcome) in enumerate(zip(keys, outcomes)):
        if outcome is None:  # skipped: the position was decided before this rollout's turn
            continue
        toks, reason = outcome
        ann = out[i]
        ann.total[t] += 1
        ann.failed[t] += not passed[k]
        ann.rollouts += 1
        ann.rollout_tokens += len(toks)
        ann.outcomes[t].append((toks, reason, bool(passed[k])))
        ann.truncated[t] += reason == LENGTH
        ann.reasons[reason] = ann.reasons.get(reason, 0) + 1
    for i, ann in enumerate(out):
        # The verdict over every planned rollout; a skipped one could not have changed it.
        ann.critical = [int(settings.is_critical(failed[i, t], planned[i, t])) if (i, t) in planned else 0
                        for t in range(len(ann.critical))]  # fmt: skip
    return out


def _merged(counts: Sequence[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return dict(sorted(out.items()))


def grade_rollout(task: Task, text: str, answer: str, reason: str) -> bool:
    """A rollout's verdict: in the task's strict answer format when it declares one; otherwise the task's grader,
    except that a rollout cut by the length limit fails unless an answer marker (boxed, ####, "the answer is")
    gives its answer, so a truncated "... = 228" cannot pass on its last number."""
    if task.answer_format is not None:
        return task.grade_strict(text, answer)
    if reason == LENGTH and task.extract(text)[1] == "last_number":
        return False
    return task.grade(text, answer)


class PerturbationScorer(CausalLMModule):
    """Critical-token annotation of the model's own correct responses (or given ones); rows go to the
    AnnotationWriter callback, which writes parquet shards and metadata.json.

    Args:
        model: the target model (the one to fine-tune) and its tokenizer.
        settings: what defines the annotation: alternatives, criterion, stop rule, lengths, sampled rollouts.
        engine: inference engine (`cft.lm.engines`): "hf" (exact; cached prefixes, batched rollouts; "fast" is its old
            name), "naive" (reference: one generate per rollout), "continuous" (transformers' continuous batching)
            or "vllm" (optional extra, never run here).
        generate_batch_size: prompts per batch when generating the model's responses.
        rollout_batch_size: rollouts decoded together.
        forward_batch_size: responses per teacher-forced pass (bounds the memory of full-vocabulary logits).
        cuda_graphs: engine "hf" replays each rollout decode step as a recorded CUDA graph (CUDA, SDPA attention, not
            ZeRO-3); the same masks, less per-step launch overhead. See the README for where it has run.
    """

    def __init__(
        self,
        model: ModelConfig,
        settings: ScorerSettings | None = None,
        engine: Literal["hf", "fast", "naive", "continuous", "vllm"] = "hf",
        generate_batch_size: int = 64,
        rollout_batch_size: int = 64,
        forward_batch_size: int = 8,
        cuda_graphs: bool = False,
    ) -> None:
        super().__init__(model)
        self.settings = settings or ScorerSettings()
        if engine not in ("fast", *ENGINES):
            raise ConfigError(f"model.engine={engine!r}: expected one of {list(ENGINES)}")
        self.engine = {"fast": "hf"}.get(engine, engine)
        self._engine: InferenceEngine | None = None
        self.generate_batch_size, self.rollout_batch_size = generate_batch_size, rollout_batch_size
        self.forward_batch_size, self.cuda_graphs = forward_batch_size, cuda_graphs
        self.progress = AnnotationProgress()
        # Called with `progress` after every chunk of rollouts (e.g. by cft.callbacks.AnnotationProgressBar).
        self.progress_listeners: list[Callable[[AnnotationProgress], None]] = []
        self._t_batch = 0.0

    def describe(self) -> dict[str, Any]:
        """What defines this annotation, for metadata.json and the resume check."""
        settings = asdict(self.settings)
        settings["alternative_ranks"] = list(settings["alternative_ranks"])
        if not settings["skip_decided_rollouts"]:  # the default: absent, so annotations started before it resume
            del settings["skip_decided_rollouts"]
        return {
            "scorer": settings,
            "model": {"name_or_path": self.model_config.name_or_path, "dtype": self.model_config.dtype},
        }

    def on_predict_start(self) -> None:
        if self.synced_generation():
            raise NotImplementedError(
                "PerturbationScorer under DeepSpeed ZeRO-3 with several ranks is not supported (ranks would run "
                "different numbers of forward passes); annotate with DDP or a single device"
            )

    # -- the step -----------------------------------------------------------------------------------------------
    def inference_engine(self) -> InferenceEngine:
        """The engine (built once, on first use: the model is only there after `configure_model`)."""
        if self._engine is None:
            self._engine = build_engine(self.engine, self.model, self.tokenizer, batch_size=self.rollout_batch_size,
                                        forward_batch_size=self.forward_batch_size,
                                        cuda_graphs=self.cuda_graphs)  # fmt: skip
        return self._engine

    def _responses(self, prompts: list[list[int]]) -> list[tuple[list[int], str]]:
        """The model's own greedy responses, ended by EOS, a stop string, a complete answer or the length limit."""
        if not prompts:
            return []
        params = SamplingParams(max_new_tokens=self.settings.max_new_tokens, stop_rule=STOP_RULES[self.settings.stop]())
        engine = self.inference_engine()
        if isinstance(engine, HFEngine):
            engine = HFEngine(self.model, self.tokenizer, batch_size=self.generate_batch_size)
        return [(g[0].token_ids, g[0].stop_reason) for g in engine.generate(prompts, params)]

    def _on_chunk(self, rollouts: int, tokens: int) -> None:
        self.progress.rollouts += rollouts
        self.progress.rollout_tokens += tokens
        now = time.perf_counter()
        self.progress.seconds += now - self._t_batch
        self._t_batch = now
        self._report_progress()

    def _report_progress(self) -> None:
        for listener in self.progress_listeners:
            listener(self.progress)

    def predict_step(self, batch: list[dict[str, Any]], batch_idx: int) -> dict[str, Any]:
        start = self._t_batch = time.perf_counter()
        task: Task = self.task_for(0)
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        skipped: dict[str, SkipReason] = {}
        kept: list[dict[str, Any]] = []
        kept_by_fallback = 0  # kept although only the last-number fallback found the answer (no answer marker)
        own = [it for it in batch if it.get("response_token_ids") is None]
        generated = dict(zip([it["id"] for it in own], self._responses([it["prompt_ids"] for it in own])))
        for it in batch:
            if it["id"] in generated:
                ids, reason = generated[it["id"]]
                source = "self"
                if reason == LENGTH:
                    skipped[it["id"]] = "unfinished"  # no EOS or answer within settings.max_new_tokens
                    continue
            else:
                ids, source = list(it["response_token_ids"]), "reference"
            text = decode(ids)
            if not ids or not text.strip():
                skipped[it["id"]] = "reference_empty" if source == "reference" else "empty"
            elif task.extract_answer(text) is None:
                skipped[it["id"]] = "reference_no_answer" if source == "reference" else "no_answer"
            elif not task.grade(text, it["answer"]):
                skipped[it["id"]] = "reference_incorrect" if source == "reference" else "incorrect"
            elif not task.grade_strict(text, it["answer"]):
                # Right only by a looser reading than the task's answer format (task.answer_format); its rollouts,
                # graded strictly, would all fail and mark every token critical.
                skipped[it["id"]] = "reference_unformatted" if source == "reference" else "unformatted"
            else:
                kept_by_fallback += task.extract(text)[1] == "last_number"
                kept.append({**it, "response_ids": ids, "response": text, "response_source": source})
        anns = (
            annotate(
                self.model,
                self.tokenizer,
                task,
                kept,
                self.settings,
                self.inference_engine(),
                seed=self.settings.seed * 1_000_003 + batch_idx,
                on_chunk=self._on_chunk,
            )
            if kept
            else []
        )
        rows = [
            annotation_row(
                self.tokenizer,
                ex,
                critical=ann.critical,
                n_scored=ann.n_scored,
                entropy=ann.entropy,
                alternatives=ann.alternatives,
                rollouts_failed=ann.failed,
                rollouts_total=ann.total,
                rollouts_truncated=ann.truncated,
            )
            for ex, ann in zip(kept, anns)
        ]
        self.progress.asked += len(batch)
        self.progress.kept += len(kept)
        self.progress.seconds += time.perf_counter() - self._t_batch
        self._report_progress()
        return {
            "rows": rows,
            "asked": [it["id"] for it in batch],
            "skipped": skipped,
            "rollouts": sum(a.rollouts for a in anns),
            "rollout_tokens": sum(a.rollout_tokens for a in anns),
            "rollout_reasons": _merged([a.reasons for a in anns]),
            "kept_by_fallback": kept_by_fallback,
            "wall_s": time.perf_counter() - start,
        }
