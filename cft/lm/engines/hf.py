"""The rollout engine of the perturbation scorer: batched continuations that start from cached prefixes.

One teacher-forced pass over prompt + response holds the KV cache of every prefix prompt + y<t. A rollout at
position t reuses the first len(prompt)+t cached positions (nothing is re-encoded), feeds its alternative token,
and decodes greedily (or samples) until EOS, the stop rule, or the length limit. Rollouts of many positions and
examples run as one batch: each row's prefix cache is right-aligned (left padding, masked out) and every row
decodes one token per forward pass at its own position id. Finished rows leave the batch as it runs.

`naive_rollout` is the reference the fast path must equal: one `generate` call per (position, alternative).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import DynamicLayer

from cft.lm.generation import generate, left_pad, token_entropy
from cft.lm.stopping import ALT_ANSWER, ALT_EOS, ANSWER, EOS, LENGTH, StopRule, eos_token_ids, tokens_containing

__all__ = ["RolloutEngine", "TeacherForced", "naive_rollout", "rank_alternatives"]

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
            self.trigger_table[[i for i in tokens_containing(tokenizer, stop.triggers) if i < vocab]] = True

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

        The batch stays full: finished rows leave and waiting jobs take their place (their prefix cache is
        right-aligned to the batch's cache length, the batch is left-padded when a new prefix is longer).
        """
        n_jobs, dev = len(sources), self.device
        # Jobs by prefix length, so rows admitted together need little padding.
        queue = sorted(range(n_jobs), key=lambda j: prefix_lens[j])
        src_all = torch.as_tensor(list(sources), device=dev)
        plen_all = torch.as_tensor(list(prefix_lens), device=dev)
        first_all = torch.as_tensor(list(first_tokens), device=dev)
        st = _State(n_jobs, self.max_new_tokens, dev, [list(t) for t in text_ids])
        batch: _Batch | None = None
        slack, q, reported = max(1, self.batch_size // 8), 0, 0
        while True:
            rows = 0 if batch is None else len(batch.row_job)
            if rows == 0:
                batch = None
            if q < n_jobs and (rows == 0 or self.batch_size - rows >= slack):
                new = torch.as_tensor(queue[q : q + self.batch_size - rows], device=dev)
                q += len(new)
                batch = self._admit(batch, kv, src_all[new], plen_all[new], first_all[new], new)
                rows = len(batch.row_job)
            if rows == 0:
                break
            logits = self._step(batch.tokens, batch.attn, batch.pos, batch.cache)
            nxt = self._pick(logits)
            live = self._advance(st, nxt, batch.row_job)
            n_live = int(live.sum())
            if rows - n_live >= slack or n_live == 0:
                batch.select(live.nonzero().squeeze(1))
                nxt = nxt[live]
            batch.next_inputs(nxt)
            if on_chunk is not None and st.finished - reported >= self.batch_size:
                on_chunk(st.finished - reported, int(st.lens[~st.alive].sum()) - st.tokens_reported)
                reported, st.tokens_reported = st.finished, int(st.lens[~st.alive].sum())
        if on_chunk is not None and st.finished > reported:
            on_chunk(st.finished - reported, int(st.lens.sum()) - st.tokens_reported)
        return st.results()

    def _admit(
        self,
        batch: _Batch | None,
        kv: list[tuple[torch.Tensor, torch.Tensor]],
        src: torch.Tensor,
        plen: torch.Tensor,
        first: torch.Tensor,
        jobs: torch.Tensor,
    ) -> _Batch:
        """Add jobs to the batch: each gets its cached prefix, right-aligned, and feeds its first token next."""
        length = 0 if batch is None else batch.cache.get_seq_length()
        width = max(length, int(plen.max()))
        if batch is not None and width > length:
            batch.left_pad(width - length)
        col = torch.arange(width, device=self.device)
        pad = (width - plen)[:, None]
        idx = (col[None, :] - pad).clamp_min(0)
        layers = [(k[src[:, None], :, idx].transpose(1, 2), v[src[:, None], :, idx].transpose(1, 2)) for k, v in kv]
        attn = torch.cat([(col[None, :] >= pad).long(), torch.ones_like(pad)], dim=1)
        if batch is None:
            return _Batch(DynamicCache(ddp_cache_data=layers), attn, plen, first, jobs)
        for layer, (k, v) in zip(batch.cache.layers, layers):
            layer.keys, layer.values = torch.cat([layer.keys, k]), torch.cat([layer.values, v])
        batch.attn = torch.cat([batch.attn, attn])
        batch.pos, batch.tokens = torch.cat([batch.pos, plen]), torch.cat([batch.tokens, first])
        batch.row_job = torch.cat([batch.row_job, jobs])
        return batch

    def _advance(self, st: _State, nxt: torch.Tensor, row_job: torch.Tensor) -> torch.Tensor:
        """Record one generated token per row; end rows at EOS, a complete answer or the length limit. Returns
        which rows are still live."""
        live = st.alive[row_job]
        jobs, toks = row_job[live], nxt[live]
        is_eos = self.eos_table[toks]
        grow, ended = jobs[~is_eos], jobs[is_eos]
        st.buf[grow, st.lens[grow]] = toks[~is_eos]
        st.lens[grow] += 1
        for j in ended.tolist():
            st.reasons[j] = EOS
        st.alive[ended] = False
        trig = grow[self.trigger_table[toks[~is_eos]]]
        if self.stop.triggers and len(trig):
            for j in trig.tolist():
                if self.stop.complete(self.decode(st.texts[j] + st.buf[j, : st.lens[j]].tolist())):
                    st.reasons[j] = ANSWER
                    st.alive[j] = False
        st.alive[grow[st.lens[grow] >= self.max_new_tokens]] = False  # reason stays LENGTH
        st.finished = int((~st.alive).sum())
        return st.alive[row_job]

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]]) -> list[tuple[list[int], str]]:
        """Greedy responses to `prompts` (left-padded prefill, then the same per-row stopping as the rollouts)."""
        results: list[tuple[list[int], str]] = [([], "")] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            ids, attn = left_pad([prompts[i] for i in idx], self.tokenizer.pad_token_id, self.device)
            pos = (attn.cumsum(-1) - 1).clamp_min(0)
            out = self.model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True)
            st = _State(len(idx), self.max_new_tokens, self.device, [[] for _ in idx])
            batch = _Batch(out.cache, attn, pos[:, -1], ids[:, -1], torch.arange(len(idx), device=self.device))
            logits = out.logits[:, -1].float()
            while True:
                nxt = self._pick(logits)
                live = self._advance(st, nxt, batch.row_job)
                if not bool(live.any()):
                    break
                if int((~live).sum()) >= max(1, len(live) // 8):
                    batch.select(live.nonzero().squeeze(1))
                    nxt = nxt[live]
                batch.next_inputs(nxt)
                logits = self._step(batch.tokens, batch.attn, batch.pos, batch.cache)
            for i, res in zip(idx, st.results()):
                results[i] = res
        return results


class _State:
    """Per-job decoding state: generated tokens, counts, whether still running, and why each one stopped."""

    def __init__(self, n: int, max_new: int, device: torch.device, texts: list[list[int]]) -> None:
        self.buf = torch.zeros((n, max_new), dtype=torch.long, device=device)
        self.lens = torch.zeros(n, dtype=torch.long, device=device)
        self.alive = torch.ones(n, dtype=torch.bool, device=device)
        self.reasons = [LENGTH] * n
        self.texts = texts
        self.finished = self.tokens_reported = 0

    def results(self) -> list[tuple[list[int], str]]:
        lens, buf = self.lens.tolist(), self.buf.tolist()
        return [(buf[j][: lens[j]], self.reasons[j]) for j in range(len(lens))]


class _Batch:
    """The rows decoding together: KV cache, attention mask (left padding = 0), next input token and position."""

    def __init__(self, cache, attn: torch.Tensor, pos: torch.Tensor, tokens: torch.Tensor, row_job: torch.Tensor):
        self.cache, self.attn, self.pos, self.tokens, self.row_job = cache, attn, pos, tokens, row_job

    def select(self, keep: torch.Tensor) -> None:
        """Keep only rows `keep`, and drop cache columns that are now padding in every row."""
        self.cache.batch_select_indices(keep)
        self.attn, self.pos, self.row_job = self.attn[keep], self.pos[keep], self.row_job[keep]
        if len(keep):
            # The current input's column (last) is always 1; rotary positions live in the cached keys.
            first_used = int(self.attn.any(0).long().argmax())
            if first_used > 0:
                self.attn = self.attn[:, first_used:]
                for layer in self.cache.layers:
                    layer.keys, layer.values = layer.keys[:, :, first_used:], layer.values[:, :, first_used:]

    def left_pad(self, n: int) -> None:
        self.attn = torch.nn.functional.pad(self.attn, (n, 0))
        for layer in self.cache.layers:
            layer.keys = torch.nn.functional.pad(layer.keys, (0, 0, n, 0))
            layer.values = torch.nn.functional.pad(layer.values, (0, 0, n, 0))

    def next_inputs(self, nxt: torch.Tensor) -> None:
        """The tokens just generated become the next inputs, one position further, in a new mask column."""
        self.tokens, self.pos = nxt, self.pos + 1
        self.attn = torch.cat([self.attn, torch.ones_like(self.attn[:, :1])], dim=1)


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
