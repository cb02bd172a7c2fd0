"""Scorer fidelity: strict answer formats for rollouts, responses kept by the last-number fallback counted apart,
unscored positions outside denominators and outside the random control's candidates."""

from __future__ import annotations

import hashlib
import random
from types import SimpleNamespace

import pytest

from cft.data.annotation_format import summarize, write_part
from cft.lm.stopping import ALT_ANSWER, LENGTH
from cft.modules.scorer import PerturbationScorer, ScorerSettings, grade_rollout
from cft.selectors import EntropyTokens, RandomTokens
from cft.tasks import ArithmeticTask, Task, TestbedTask


class _Formatless(Task):
    """A task that declares no strict answer format (like a real benchmark graded by the last number)."""

    def problems(self, split: str) -> list:
        return []


def test_grade_strict_reads_only_the_task_format():
    task = ArithmeticTask()
    assert task.grade_strict("3 * 4 = 12\n#### 12", "12")
    assert not task.grade_strict("3 * 4 = 12\nThe answer is 12.", "12") and task.grade("3 * 4 = 12", "12")
    assert not task.grade_strict("so \\boxed{12}", "12")
    assert _Formatless().grade_strict("3 * 4 = 12", "12")  # no declared format: the task's own grader


@pytest.mark.parametrize("task", [ArithmeticTask(), TestbedTask(n_pretrain=0)])
def test_rollouts_of_a_formatted_task_never_pass_by_the_last_number(task):
    truncated = "7 * 30 = 210\n210 + 18 = 228"
    assert task.grade(truncated, "228")  # the lenient grader's fallback would pass it
    for reason in (LENGTH, "eos", ALT_ANSWER):
        assert not grade_rollout(task, truncated, "228", reason)
        assert grade_rollout(task, truncated + "\n#### 228", "228", reason)
        assert not grade_rollout(task, truncated + "\n#### 227", "228", reason)


def test_rollouts_of_a_formatless_task_fail_when_cut_without_a_marker():
    task = _Formatless()
    assert not grade_rollout(task, "10 + 18 = 228", "228", LENGTH)  # cut mid-way: only the last number
    assert grade_rollout(task, "10 + 18 = 228", "228", "eos")  # finished: the task's own grader decides
    assert grade_rollout(task, "The answer is 228. And then", "228", LENGTH)
    assert not grade_rollout(task, "The answer is 227. 228", "228", LENGTH)


def _scorer_on(task: Task, responses: dict[str, str], tokenizer, model_dir) -> dict:
    """predict_step of a real scorer whose own responses are replaced by `responses` (id -> text)."""
    from cft.lm.loading import ModelConfig

    settings = ScorerSettings(stop="hashes_line", max_rollout_tokens=4)
    scorer = PerturbationScorer(ModelConfig(name_or_path=str(model_dir)), settings=settings)
    scorer.configure_model()
    texts = list(responses.values())
    scorer._responses = lambda prompts: [(tokenizer(t, add_special_tokens=False)["input_ids"], "eos") for t in texts]
    scorer.tasks = [task]
    scorer._trainer = SimpleNamespace(progress_bar_callback=None)
    batch = [{"id": i, "prompt_ids": tokenizer("Q:")["input_ids"], "answer": "12", "question": "q", "prompt": "Q:"}
             for i in responses]  # fmt: skip
    return scorer.predict_step(batch, 0)


def test_fallback_only_responses_are_skipped_or_counted(world_tokenizer, tiny_model_dir):
    responses = {"marked": "3 * 4 = 12\n#### 12", "bare": "3 * 4 = 12", "wrong": "3 * 4 = 13\n#### 13"}
    out = _scorer_on(ArithmeticTask(), responses, world_tokenizer, tiny_model_dir)
    assert [r["id"] for r in out["rows"]] == ["marked"] and out["kept_by_fallback"] == 0
    assert out["skipped"]["bare"] == "unformatted" and out["skipped"]["wrong"] == "incorrect"
    out = _scorer_on(_Formatless(), responses, world_tokenizer, tiny_model_dir)
    assert [r["id"] for r in out["rows"]] == ["marked", "bare"] and out["kept_by_fallback"] == 1


def test_metadata_counts_fallback_kept_and_scored_denominators(tmp_path):
    row = {
        "id": "q0", "question": "q", "answer": "12", "prompt": "Q:", "response": "12\n#### 12 ok",
        "response_source": "self", "prompt_token_ids": [1], "response_token_ids": [5, 6, 7, 8, 9, 10, 11],
        "critical": [1, 1, 0, 0, 1, 1, 0], "critical_char_spans": [], "n_scored": 6,
        "response_token_offsets": [0, 1, 2, 3, 7, 8, 9, 10, 13][:8], "entropy": [0.0] * 7,
        "alternatives": [[2, 3]] * 6 + [[]], "rollouts_failed": [2] * 7, "rollouts_total": [2] * 6 + [0],
    }  # fmt: skip
    row["response_token_offsets"] = [0, 1, 2, 3, 7, 8, 9, 13]
    write_part(tmp_path / "part-00000.parquet", [row], {"asked": ["q0", "q1"], "skipped": {}, "kept_by_fallback": 1})
    counts = summarize(sorted(tmp_path.glob("part-*.parquet")))
    assert counts["kept_by_fallback"] == 1
    assert counts["scored_tokens"] == 6 and counts["critical_tokens"] == 4
    assert counts["critical_fraction"] == 4 / 6  # the unscored 7th token is in no denominator
    assert sum(c["tokens"] for c in counts["by_class"].values()) == 6
    assert counts["by_class"]["whitespace"]["tokens"] == 2  # "\n" and " " are labelled as what they are


def _naive_random(seed: int, row_id: str, k: int, n: int) -> list[int]:
    digest = hashlib.sha256(f"cft.RandomTokens/{seed}/{row_id}".encode()).digest()
    return sorted(random.Random(int.from_bytes(digest[:8], "big")).sample(range(n), k))


def test_count_matched_controls_draw_only_scored_positions():
    rng = random.Random(0)
    sel, ent = RandomTokens(seed=2), EntropyTokens()
    for s in (sel, ent):
        s.setup(SimpleNamespace(eos_token_id=0))
    for i in range(20):
        n = rng.randint(3, 25)
        scored = rng.randint(1, n)
        row = {
            "id": f"r{i}",
            "response_ids": [rng.randint(1, 9) for _ in range(n)] + [0],
            "critical": [int(rng.random() < 0.3) for _ in range(scored)] + [0] * (n - scored),
            "entropy": [rng.random() for _ in range(n)],
            "n_scored": scored,
        }
        k = sum(row["critical"])
        w = sel.weights(row)
        assert [j for j, x in enumerate(w) if x] == _naive_random(2, row["id"], k, scored)
        e = ent.weights(row)
        top = sorted(range(scored), key=lambda j: (-row["entropy"][j], j))[:k]
        assert [j for j, x in enumerate(e) if x] == sorted(top)


def test_critical_stats_mean_entropy_by_class_over_scored_positions():
    from cft.data.annotation_format import critical_stats

    row = {
        "response": "12 apples.\n#### 12",
        "response_token_offsets": [0, 1, 2, 9, 10, 11, 15, 16, 17, 18],
        "critical": [1, 1, 0, 0, 0, 0, 0, 1, 0],
        "entropy": [0.2, 0.4, 1.5, 0.1, 0.0, 0.3, 0.0, 0.6, 9.0],
        "n_scored": 8,  # the last "2" was never scored: its entropy 9.0 is in no mean
    }
    by = critical_stats([row])["by_class"]
    assert by["digits"]["tokens"] == 3 and by["digits"]["mean_entropy"] == pytest.approx((0.2 + 0.4 + 0.6) / 3)
    assert by["words"]["mean_entropy"] == pytest.approx(1.5)
    assert by["punctuation"]["tokens"] == 2 and by["punctuation"]["mean_entropy"] == pytest.approx(0.2)
    assert "mean_entropy" not in critical_stats([{**row, "entropy": None}])["by_class"]["digits"]
