"""The rollout engine of the perturbation scorer: batched continuations that start from cached prefixes.

One teacher-forced pass over prompt + response holds the KV cache of every prefix prompt + y<t. A rollout at
position t reuses the first len(prompt)+t cached positions (nothing is re-encoded), feeds its alternative token,
and decodes greedily (or samples) until EOS, the stop rule, or the length limit. Rollouts of many positions and
examples run as one batch: each row's prefix cache is right-aligned (left padding, masked out) and every row
decodes one token per forward pass at its own position id. Finished rows leave the batch as it runs.

`naive_rollout` is the reference the fast path must equal: one `generate` call per (position, alternative).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import DynamicLayer

from cft.lm.generation import generate, left_pad, token_entropy

__all__ = [
    "STOP_RULES",
    "BoxedStop",
    "HashesLineStop",
    "RolloutEngine",
    "StopRule",
    "TeacherForced",
    "eos_token_ids",
    "naive_rollout",
    "rank_alternatives",
]

# Why a continuation ended. ALT_* : the alternative token itself ended it, before any generation.
EOS, ANSWER, LENGTH, ALT_EOS, ALT_ANSWER = "eos", "answer", "length", "alt_eos", "alt_answer"


class StopRule:
    """When a rollout's final answer is complete, so decoding can stop early. The base rule never fires: rollouts
    run to EOS or the length limit, exactly the paper's definition.

    `triggers` lists the characters whose appearance can complete an answer; the engine only decodes text and calls
    `complete` after a token containing one of them, which keeps the check off the hot path.
    """

    name = "eos"
    triggers = ""

    def complete(self, text: str) -> bool:
        return False


class HashesLineStop(StopRule):
    """`#### <answer>` followed by a newline (GSM8K and the tiny world): text after it cannot change the answer
    unless the model writes a second `####` line or a `\\boxed{}`, which a conservative user avoids with `eos`."""

    name = "hashes_line"
    triggers = "\n"
    _pattern = re.compile(r"####[ \t]*\S[^\n]*\n")

    def complete(self, text: str) -> bool:
        return self._pattern.search(text) is not None


class BoxedStop(StopRule):
    """A closed, non-empty `\\boxed{...}` (the Qwen2.5-Math chain-of-thought format)."""

    name = "boxed"
    triggers = "}"

    def complete(self, text: str) -> bool:
        for m in re.finditer(r"\\boxed\s*\{", text):
            depth = 1
            for j in range(m.end(), len(text)):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    if text[m.end() : j].strip():
                        return True
                    break
        return False


STOP_RULES: dict[str, type[StopRule]] = {r.name: r for r in (StopRule, HashesLineStop, BoxedStop)}


def eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The tokenizer's EOS plus any EOS ids in the model's generation config (e.g. `<|im_end|>` and `<|endoftext|>`)."""
    ids = {tokenizer.eos_token_id}
    gc_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(gc_eos if isinstance(gc_eos, list) else [gc_eos])
    return sorted(i for i in ids if i is not None)


def rank_alternatives(logits: torch.Tensor, targets: Sequence[int], ranks: Sequence[int]) -> list[list[int]]:
    """For each row, the alternatives at `ranks` of the model's ranking, where `targets[row]` counts as rank 1.

    The ranking orders tokens by logit, ties broken by the lower token id (what greedy argmax picks), with the
    target removed: rank r is the (r-1)-th best token other than the target. For a greedy response, whose token is
    the argmax, that is exactly the paper's rank-2 and rank-3 tokens; for a given response it is the best tokens
    other than the one written.
    """
    k = min(max(ranks) + 1, logits.shape[-1])
    vals, ids = logits.float().topk(k, dim=-1)
    tied = (vals[:, 1:] == vals[:, :-1]).any(-1)
    if tied.any():
        # topk does not promise an order among equal values; a stable sort does (lower id first).
        ids[tied] = torch.sort(logits[tied].float(), dim=-1, descending=True, stable=True).indices[:, :k]
    out = []
    for row, target in zip(ids.tolist(), targets):
        others = [i for i in row if i != target]
        out.append([others[r - 2] for r in ranks if r - 2 < len(others)])
    return out


@functools.lru_cache(maxsize=8)
def _tokens_containing(tokenizer: PreTrainedTokenizerBase, chars: str) -> tuple[int, ...]:
    """Ids whose decoded text contains any of `chars` (cached: decoding a large vocabulary takes a while)."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return tuple(i for i, t in enumerate(texts) if any(c in t for c in chars))


@dataclass
class TeacherForced:
    """What one pass over prompt + response gives: per example, the alternatives and entropy at every response
    position, and the KV cache of every prefix (per layer, keys and values of shape (examples, heads, length, dim))."""

    alternatives: list[list[list[int]]]
    entropy: list[list[float]]
    kv: list[tuple[torch.Tensor, torch.Tensor]]
    lengths: list[int]


class RolloutEngine:
    """Batched greedy/sampled decoding from cached prefixes with per-row stopping.

    Args:
        model: the causal LM (eval mode, any device).
        tokenizer: its tokenizer (decodes text for the stop rule).
        stop: when an answer is complete.
        max_new_tokens: tokens generated per rollout after the alternative, at most.
        batch_size: rollouts decoded together.
        temperature: 0 for greedy (argmax, lower id on ties), else sampling temperature.
        generator: random generator for sampling.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        stop: StopRule,
        max_new_tokens: int,
        batch_size: int = 64,
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        self.model, self.tokenizer, self.stop = model, tokenizer, stop
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.temperature, self.generator = temperature, generator
        self.device = next(model.parameters()).device
        self.eos_ids = eos_token_ids(model, tokenizer)
        vocab = model.get_output_embeddings().weight.shape[0]
        self.eos_table = torch.zeros(vocab, dtype=torch.bool, device=self.device)
        self.eos_table[self.eos_ids] = True
        self.trigger_table = torch.zeros(vocab, dtype=torch.bool, device=self.device)
        if stop.triggers:
            self.trigger_table[[i for i in _tokens_containing(tokenizer, stop.triggers) if i < vocab]] = True

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def _pick(self, logits: torch.Tensor) -> torch.Tensor:
        if self.temperature <= 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(1)

    def _step(self, tokens: torch.Tensor, attn: torch.Tensor, pos: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        out = self.model(
            input_ids=tokens[:, None], attention_mask=attn, position_ids=pos[:, None], cache=cache, use_cache=True
        )
        return out.logits[:, -1].float()

    # -- teacher forcing --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def teacher_forced(
        self,
        prompts: Sequence[Sequence[int]],
        responses: Sequence[Sequence[int]],
        ranks: Sequence[int],
        batch_size: int,
    ) -> TeacherForced:
        """One right-padded forward per micro-batch over prompt + response, keeping the KV cache of every prefix."""
        seqs = [list(p) + list(r) for p, r in zip(prompts, responses)]
        lengths = [len(s) for s in seqs]
        width = max(lengths)
        alternatives: list[list[list[int]]] = [[] for _ in seqs]
        entropy: list[list[float]] = [[] for _ in seqs]
        kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        order = sorted(range(len(seqs)), key=lambda i: lengths[i])
        where = torch.empty(len(seqs), dtype=torch.long)
        chunks = []
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            n = max(lengths[i] for i in idx)
            ids = torch.full((len(idx), n), self.tokenizer.pad_token_id, dtype=torch.long)
            attn = torch.zeros((len(idx), n), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, : lengths[i]] = torch.as_tensor(seqs[i])
                attn[row, : lengths[i]] = 1
            out = self.model(input_ids=ids.to(self.device), attention_mask=attn.to(self.device), use_cache=True)
            layers = out.cache.layers
            if not all(type(layer) is DynamicLayer for layer in layers):
                kinds = sorted({type(layer).__name__ for layer in layers})
                raise NotImplementedError(
                    f"the fast scorer reuses full-attention KV caches; this model's cache has {kinds} layers "
                    "(sliding-window or linear attention): use engine: naive"
                )
            for row, i in enumerate(idx):
                p, r = len(prompts[i]), len(responses[i])
                logits = out.logits[row, p - 1 : p + r - 1]
                alternatives[i] = rank_alternatives(logits, responses[i], ranks)
                entropy[i] = token_entropy(logits).tolist()
            chunks.append([(layer.keys, layer.values) for layer in layers])
            where[idx] = torch.arange(start, start + len(idx))
        # One (examples, heads, width, dim) tensor per layer, rows in input order, so rollouts gather in one op.
        for layer_idx in range(len(chunks[0])):
            keys = [
                torch.nn.functional.pad(c[layer_idx][0], (0, 0, 0, width - c[layer_idx][0].shape[2])) for c in chunks
            ]
            vals = [
                torch.nn.functional.pad(c[layer_idx][1], (0, 0, 0, width - c[layer_idx][1].shape[2])) for c in chunks
            ]
            perm = where.to(self.device)
            kv.append((torch.cat(keys)[perm], torch.cat(vals)[perm]))
        return TeacherForced(alternatives, entropy, kv, lengths)

    # -- decoding -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def rollouts(
        self,
        kv: list[tuple[torch.Tensor, torch.Tensor]],
        sources: Sequence[int],
        prefix_lens: Sequence[int],
        first_tokens: Sequence[int],
        text_ids: Sequence[Sequence[int]],
        on_chunk: Callable[[int, int], None] | None = None,
    ) -> list[tuple[list[int], str]]:
        """Continue job j from the first `prefix_lens[j]` cached positions of example `sources[j]`, after feeding
        `first_tokens[j]`. `text_ids[j]` are the response tokens so far (alternative included) that the stop rule
        reads. Returns (generated tokens without EOS, reason) per job; `on_chunk(rollouts, tokens)` reports progress.
        """
        results: list[tuple[list[int], str]] = [([], "")] * len(sources)
        # Similar prefix lengths in one batch keep the left padding small.
        order = sorted(range(len(sources)), key=lambda j: prefix_lens[j])
        for start in range(0, len(order), self.batch_size):
            jobs = order[start : start + self.batch_size]
            src = torch.as_tensor([sources[j] for j in jobs], device=self.device)
            plen = torch.as_tensor([prefix_lens[j] for j in jobs], device=self.device)
            width = int(plen.max())
            col = torch.arange(width, device=self.device)
            pad = (width - plen)[:, None]
            idx = (col[None, :] - pad).clamp_min(0)
            layers = [(k[src[:, None], :, idx].transpose(1, 2), v[src[:, None], :, idx].transpose(1, 2)) for k, v in kv]
            cache = DynamicCache(ddp_cache_data=layers)
            attn = torch.cat([(col[None, :] >= pad).long(), torch.ones_like(pad)], dim=1)
            first = torch.as_tensor([first_tokens[j] for j in jobs], device=self.device)
            logits = self._step(first, attn, plen, cache)
            outs = self._decode(logits, cache, attn, plen + 1, [list(text_ids[j]) for j in jobs])
            for j, res in zip(jobs, outs):
                results[j] = res
            if on_chunk is not None:
                on_chunk(len(jobs), sum(len(t) for t, _ in outs))
        return results

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]]) -> list[tuple[list[int], str]]:
        """Greedy responses to `prompts` (left-padded prefill, then the same decoding loop as the rollouts)."""
        results: list[tuple[list[int], str]] = [([], "")] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            ids, attn = left_pad([prompts[i] for i in idx], self.tokenizer.pad_token_id, self.device)
            pos = (attn.cumsum(-1) - 1).clamp_min(0)
            out = self.model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True)
            logits = out.logits[:, -1].float()
            for i, res in zip(idx, self._decode(logits, out.cache, attn, pos[:, -1] + 1, [[] for _ in idx])):
                results[i] = res
        return results

    def _decode(
        self, logits: torch.Tensor, cache: DynamicCache, attn: torch.Tensor, pos: torch.Tensor, texts: list[list[int]]
    ) -> list[tuple[list[int], str]]:
        """Decode from `logits` (the next-token logits of every row) until each row stops; rows leave as they end."""
        n, dev = logits.shape[0], self.device
        buf = torch.zeros((n, self.max_new_tokens), dtype=torch.long, device=dev)
        lens = torch.zeros(n, dtype=torch.long, device=dev)
        alive = torch.ones(n, dtype=torch.bool, device=dev)
        reasons = [LENGTH] * n
        row_job = torch.arange(n, device=dev)  # batch row -> job, as rows leave
        for step in range(self.max_new_tokens):
            nxt = self._pick(logits)
            live = alive[row_job]
            is_eos = self.eos_table[nxt] & live
            buf[row_job, step] = nxt
            lens[row_job[live & ~is_eos]] = step + 1
            for j in row_job[is_eos].tolist():
                reasons[j] = EOS
            alive[row_job[is_eos]] = False
            trig = self.trigger_table[nxt] & live & ~is_eos
            if self.stop.triggers and bool(trig.any()):
                for j in row_job[trig].tolist():
                    if self.stop.complete(self.decode(texts[j] + buf[j, : step + 1].tolist())):
                        reasons[j] = ANSWER
                        alive[j] = False
            live = alive[row_job]
            n_live = int(live.sum())
            if n_live == 0 or step + 1 == self.max_new_tokens:
                break
            if n_live <= len(row_job) - max(1, len(row_job) // 8):
                keep = live.nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                attn, pos, nxt, row_job = attn[keep], pos[keep], nxt[keep], row_job[keep]
                # Columns that are padding in every remaining row can go: keys carry their rotary positions.
                first_used = int(attn.any(0).long().argmax())
                if first_used > 0:
                    attn = attn[:, first_used:]
                    for layer in cache.layers:
                        layer.keys, layer.values = layer.keys[:, :, first_used:], layer.values[:, :, first_used:]
            attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)
            logits = self._step(nxt, attn, pos, cache)
            pos = pos + 1
        lens_l, buf_l = lens.tolist(), buf.tolist()
        return [(buf_l[j][: lens_l[j]], reasons[j]) for j in range(n)]


@torch.no_grad()
def naive_rollout(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[int],
    text_ids: Sequence[int],
    stop: StopRule,
    max_new_tokens: int,
) -> tuple[list[int], str]:
    """The reference: one unbatched `generate` from prompt + text_ids (response so far + alternative), greedy, to
    EOS or the length limit, then cut where the stop rule first holds (checked after every token, not only after
    trigger tokens). Same (tokens, reason) contract as `RolloutEngine.rollouts`."""
    eos = eos_token_ids(model, tokenizer)
    if text_ids and text_ids[-1] in eos:
        return [], ALT_EOS
    if stop.complete(tokenizer.decode(list(text_ids), skip_special_tokens=True)):
        return [], ALT_ANSWER
    gen = generate(model, tokenizer, [list(prompt_ids) + list(text_ids)], max_new_tokens=max_new_tokens, batch_size=1)
    toks = gen[0][0].token_ids
    if stop.triggers:
        for k in range(len(toks)):
            if stop.complete(tokenizer.decode(list(text_ids) + toks[: k + 1], skip_special_tokens=True)):
                return toks[: k + 1], ANSWER
    return toks, EOS if gen[0][0].finished else LENGTH
