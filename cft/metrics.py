"""Evaluation metrics over generations: pass@k, maj@k, answer and n-gram diversity, mean token entropy."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

from cft.tasks.grading import normalize_number, parse_number

__all__ = ["answer_key", "distinct_answers", "distinct_n", "maj_at_k", "mean_token_entropy", "pass_at_k"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimate from `n` samples of which `c` are correct (Chen et al. 2021).

    1 - C(n-c, k) / C(n, k), computed as a product of ratios so it never overflows for large n.
    """
    if k > n:
        raise ValueError(f"pass@k needs k <= n: got k={k} and n={n} samples")
    if k < 1 or n < 1 or not 0 <= c <= n:
        raise ValueError(f"pass@k needs n >= 1, 1 <= k and 0 <= c <= n: got n={n}, c={c}, k={k}")
    if n - c < k:
        # Every draw of k samples contains a correct one.
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def answer_key(answer: str) -> Hashable:
    """A key under which equal final answers collide: the exact rational for numbers ("1/2" == "0.5"), else the
    answer with spaces, dollar signs and thousands commas removed. Cheap on purpose: math-verify is too slow to
    cluster every pair of answers of many samples."""
    number = parse_number(answer)
    if number is not None:
        return number
    return normalize_number(answer)


def _vote(answers: Sequence[str | None]) -> str | None:
    """The most frequent answer (by `answer_key`), ties broken by first occurrence; None if there is none."""
    counts: dict[Hashable, int] = {}
    first: dict[Hashable, str] = {}
    for a in answers:
        if a is None:
            continue
        key = answer_key(a)
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, a)
    if not counts:
        return None
    # max() returns the first maximal key in insertion order, i.e. the earliest answer among the tied ones.
    best = max(counts, key=lambda key: counts[key])
    return first[best]


def maj_at_k(answers: Sequence[str | None], gold: str, k: int, grade_fn: Callable[[str, str], bool]) -> float:
    """1.0 if the majority answer among the first `k` extracted answers grades correct against `gold`, else 0.0.

    Args:
        answers: Extracted final answers of the samples, in sampling order (None where nothing was extracted).
        gold: The gold answer.
        k: How many of the first answers vote.
        grade_fn: `grade_fn(pred, gold) -> bool`, e.g. `cft.tasks.grading.grade_answer`.
    """
    if k < 1 or k > len(answers):
        raise ValueError(f"maj@k needs 1 <= k <= number of answers: got k={k} and {len(answers)} answers")
    winner = _vote(answers[:k])
    return float(winner is not None and bool(grade_fn(winner, gold)))


def distinct_answers(answers: Sequence[str | None]) -> int:
    """Number of different final answers (by `answer_key`), not counting samples without one."""
    return len({answer_key(a) for a in answers if a is not None})


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams / total n-grams over whitespace tokens, pooled over `texts` (0.0 when there are none)."""
    if n < 1:
        raise ValueError(f"distinct_n needs n >= 1, got n={n}")
    total = 0
    seen: set[tuple[str, ...]] = set()
    for text in texts:
        tokens = text.split()
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def mean_token_entropy(entropies: Sequence[float | None], lengths: Sequence[int] | None = None) -> float:
    """Mean entropy per generated token over several generations, from each generation's mean entropy.

    Args:
        entropies: Per-generation mean token entropy (None entries, e.g. empty generations, are skipped).
        lengths: Tokens each mean was taken over; weights the means so that the result is the mean over all
            tokens (None: every generation weighs the same).
    """
    if lengths is not None and len(lengths) != len(entropies):
        raise ValueError(f"mean_token_entropy: {len(entropies)} entropies but {len(lengths)} lengths")
    weights = lengths if lengths is not None else [1] * len(entropies)
    count = 0
    num = 0.0
    for e, w in zip(entropies, weights, strict=True):
        if e is None or w <= 0:
            continue
        num += float(e) * w
        count += w
    return num / count if count else 0.0
