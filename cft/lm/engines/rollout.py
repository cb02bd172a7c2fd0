"""Decoding rollouts from cached prefixes: the teacher-forced pass and the batched decoder behind `HFEngine`.

One teacher-forced pass over prompt + response (`RolloutEngine.teacher_forced`) gives the alternatives at every
response position and the KV cache of every prefix prompt + y<t. A rollout at position t reuses the first
len(prompt)+t cached positions (nothing is re-encoded), feeds its alternative token, and decodes greedily (or
samples) until EOS, the stop rule, or the length limit. Rollouts of many positions and examples run as one batch in a
preallocated cache (`KVSlots`): each row's prefix is right-aligned (left padding, masked out), every row decodes one
token per forward pass at its own position id, written in place, and a finished row's slot takes the next waiting
rollout. With `cuda_graphs=True` the step runs in a static-shape cache and is replayed as a recorded CUDA graph.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import Cache, DynamicLayer

from cft.errors import ConfigError
from cft.lm.engines.kv_slots import KVSlots
from cft.lm.loading import zero3_partitioned
from cft.lm.logits import token_entropy
from cft.lm.stopping import (
    ANSWER,
    EOS,
    LENGTH,
    STOP_STRING,
    StopRule,
    eos_token_ids,
    model_stop_strings,
    tokens_containing,
)

__all__ = ["RolloutEngine", "TeacherForced", "check_cuda_graphs", "rank_alternatives"]


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
        static: decode in a static-shape cache (`KVSlots(static=True)`: the whole buffer attended, masked), the form a
            CUDA graph can replay; the same tokens as the default window up to floating-point summation order.
        cuda_graphs: record the decode step as a CUDA graph and replay it (implies `static`; CUDA and SDPA only). One
            recording per call: in static mode the batch keeps its rows to the end (finished rows idle).
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
        stop_strings: Sequence[str] = (),
        stop_token_ids: Sequence[int] = (),
        static: bool = False,
        cuda_graphs: bool = False,
    ) -> None:
        self.model, self.tokenizer, self.stop = model, tokenizer, stop
        self.static, self.cuda_graphs = static or cuda_graphs, cuda_graphs
        self._graph: tuple | None = None
        self.stop_strings = model_stop_strings(model, stop_strings)
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.temperature, self.generator = temperature, generator
        self.device = next(model.parameters()).device
        params = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        # SDPA takes the padding mask ready-made in 4D (transformers would build the same boolean mask from the 2D
        # one at every step); other attention implementations get the 2D mask.
        self._mask_4d = getattr(model.config, "_attn_implementation", None) == "sdpa"
        if cuda_graphs:
            check_cuda_graphs(model)
        self.eos_ids = eos_token_ids(model, tokenizer, stop_token_ids)
        vocab = model.get_output_embeddings().weight.shape[0]
        self.eos_table = torch.zeros(vocab, dtype=torch.bool, device=self.device)
        self.eos_table[self.eos_ids] = True
        self.trigger_table = torch.zeros(vocab, dtype=torch.bool, device=self.device)
        # A stop string is completed by a token holding its last character.
        triggers = stop.triggers + "".join(sorted({s[-1] for s in self.stop_strings}))
        if triggers:
            self.trigger_table[[i for i in tokens_containing(tokenizer, triggers) if i < vocab]] = True

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def _pick(self, logits: torch.Tensor) -> torch.Tensor:
        if self.temperature <= 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(1)

    def _step(self, tokens: torch.Tensor, attn: torch.Tensor, pos: torch.Tensor, cache: Cache) -> torch.Tensor:
        out = self.model(
            input_ids=tokens[:, None],
            attention_mask=attn,
            position_ids=pos[:, None],
            use_cache=True,
            **{self._cache_kwarg: cache},
        )
        return out.logits[:, -1].float()

    def _next_logits(self, slots: KVSlots) -> torch.Tensor:
        """The next step's logits for every row of `slots`: one forward, or the replay of the recorded one."""
        attn = slots.attention_mask(self._mask_4d)
        if not self.cuda_graphs:
            return self._step(slots.tokens, attn, slots.pos, slots.cache)
        key = (id(slots), slots.version)
        if self._graph is None or self._graph[0] != key:
            self._graph = None  # free the old graph's memory pool before recording the next
            # The graph reads these tensors at every replay; `slots` updates them in place (static mode).
            tokens, pos, cache = slots.tokens, slots.pos, slots.cache
            self._graph = (key, *_record(lambda: self._step(tokens, attn, pos, cache), self.device))
        _, graph, logits = self._graph
        graph.replay()
        return logits

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
            # transformers >= 5.2x names the returned cache `cache`, earlier 5.x `past_key_values`.
            layers = (out.cache if hasattr(out, "cache") else out.past_key_values).layers
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
    def rollouts(self, *args, **kwargs) -> list[tuple[list[int], str]]:
        """`_rollouts` (arguments there) under inference_mode: nothing made here reaches autograd, and skipping its
        per-op bookkeeping makes a decode step of a small model ~10% faster. Under DeepSpeed ZeRO-3 (gathered
        parameters would become inference tensors) plain no_grad."""
        with torch.no_grad() if zero3_partitioned(self.model) else torch.inference_mode():
            return self._rollouts(*args, **kwargs)

    def _rollouts(
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

        The batch stays full: a finished row's slot takes the next waiting job (its prefix copied in, right-aligned
        to the batch's write column); once none waits, finished rows leave.
        """
        n_jobs, dev = len(sources), self.device
        # Jobs by prefix length: the longest wait last, so the window stays narrow early on.
        queue = sorted(range(n_jobs), key=lambda j: prefix_lens[j])
        src_all = torch.as_tensor(list(sources), device=dev)
        first_all = torch.as_tensor(list(first_tokens), device=dev)
        st = _State(n_jobs, self.max_new_tokens, dev, [list(t) for t in text_ids])
        rows = min(self.batch_size, n_jobs)
        # Static mode: room for any row's whole rollout, so the buffer (and a recorded graph) is never replaced.
        room = 2 * (self.max_new_tokens + 1) if self.static else max(32, self.max_new_tokens // 2)
        slots = KVSlots(kv, rows, cur=max(prefix_lens), room=room, static=self.static)
        # A freed slot takes the next job once a few are free (each admission costs a copy per layer); once none
        # waits, the batch shrinks when `slack` rows have finished (static mode: never, one graph serves the call).
        refill, slack, reported = max(1, rows // 32), max(1, rows // 8) if not self.static else rows, 0
        first = queue[:rows]
        slots.admit(range(rows), src_all[first], [prefix_lens[j] for j in first], first_all[first],
                    torch.as_tensor(first, device=dev), live=[])  # fmt: skip
        q = rows
        while True:
            slots.make_room(prefix_lens[queue[-1]] if q < n_jobs else 0)
            nxt = self._pick(self._next_logits(slots))
            live = self._advance(st, nxt, slots.row_job)
            slots.next_inputs(nxt)
            n_dead = slots.rows - int(live.sum())
            if q < n_jobs and n_dead >= refill:
                free = (~live).nonzero().squeeze(1).tolist()[: n_jobs - q]
                new = queue[q : q + len(free)]
                q += len(new)
                kept = live.nonzero().squeeze(1).tolist()
                slots.admit(free, src_all[new], [prefix_lens[j] for j in new], first_all[new],
                            torch.as_tensor(new, device=dev), live=kept)  # fmt: skip
            elif q >= n_jobs and n_dead and (n_dead >= slack or n_dead == slots.rows):
                if n_dead == slots.rows:
                    break
                slots.select(live.nonzero().squeeze(1))
            if on_chunk is not None and st.finished - reported >= self.batch_size:
                on_chunk(st.finished - reported, int(st.lens[~st.alive].sum()) - st.tokens_reported)
                reported, st.tokens_reported = st.finished, int(st.lens[~st.alive].sum())
        self._graph = None  # the recorded step holds this call's cache and its memory pool
        if on_chunk is not None and st.finished > reported:
            on_chunk(st.finished - reported, int(st.lens.sum()) - st.tokens_reported)
        return st.results()

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
        if len(trig):
            for j in trig.tolist():
                generated = st.buf[j, : st.lens[j]].tolist()
                if self.stop.triggers and self.stop.complete(self.decode(st.texts[j] + generated)):
                    st.reasons[j], st.alive[j] = ANSWER, False
                elif self.stop_strings and any(s in self.decode(generated) for s in self.stop_strings):
                    st.reasons[j], st.alive[j] = STOP_STRING, False
        st.alive[grow[st.lens[grow] >= self.max_new_tokens]] = False  # reason stays LENGTH
        st.finished = int((~st.alive).sum())
        return st.alive[row_job]


def check_cuda_graphs(model: PreTrainedModel) -> None:
    """CUDA graphs need the model on a CUDA device, SDPA attention (the 4D mask is made outside the graph) and whole
    parameters (ZeRO-3 gathers them with hooks at every forward)."""
    device = next(model.parameters()).device
    attn = getattr(model.config, "_attn_implementation", None)
    if device.type != "cuda":
        raise ConfigError(f"cuda_graphs=True needs the model on a CUDA device; it is on {device}")
    if attn != "sdpa":
        raise ConfigError(f"cuda_graphs=True needs attn_implementation 'sdpa'; the model uses {attn!r}")
    if zero3_partitioned(model):
        raise ConfigError("cuda_graphs=True cannot record a model partitioned by DeepSpeed ZeRO-3")


def _record(step: Callable[[], torch.Tensor], device: torch.device) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    """Record `step` as a CUDA graph; returns the graph and the tensor its replays write. `step` runs once eagerly
    first, on a side stream (lazy initialisation, allocator warm-up), with the same inputs, so the cache column it
    writes holds what the replay will write again."""
    stream = torch.cuda.Stream(device=device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        step()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    return graph, out


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
