"""The KV cache of the rollouts decoding together: preallocated, one slot per row, reused when a row finishes.

Every row is right-aligned: all rows write their next key/value at the same column `cur`, and row r's cache spans
[start_r, cur) with the columns left of it masked out. A decode step therefore writes one column in place and attends
over the view [lo, cur] (lo = the leftmost live start) instead of concatenating the whole cache once per layer and
step; a finished row's slot takes the next waiting rollout (its cached prefix copied in, right-aligned to `cur`)
without copying the other rows. When `cur` reaches the end of the buffer, the window moves back to the left (one
copy of the live window, once every many steps), growing the buffer only if the window needs it.

With `static=True` every step has the same shapes and reads and writes the same tensors, which is what a CUDA graph
needs: the write column is a device tensor (`cur_t`), attention reads the whole buffer (columns outside a row's span
masked out, so the result is the same), the window moves in place, and the next inputs are copied into the same
`tokens`/`pos` tensors. Only growing the buffer or shrinking the batch makes new tensors; `version` counts those.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers.cache_utils import Cache, DynamicLayer

__all__ = ["KVSlots"]


class _SlotLayer(DynamicLayer):
    """One layer's view of `KVSlots`, in the shape transformers' attention expects of a cache layer."""

    def __init__(self, slots: KVSlots, index: int) -> None:
        super().__init__()
        self.slots, self.index, self.is_initialized = slots, index, True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        s = self.slots
        keys, values = s.keys[self.index], s.values[self.index]
        if s.static:
            keys.index_copy_(2, s.cur_t, key_states)
            values.index_copy_(2, s.cur_t, value_states)
            return keys, values
        keys[:, :, s.cur] = key_states[:, :, 0]
        values[:, :, s.cur] = value_states[:, :, 0]
        return keys[:, :, s.lo : s.cur + 1], values[:, :, s.lo : s.cur + 1]

    def get_seq_length(self) -> int:
        s = self.slots
        return s.mask.shape[1] - 1 if s.static else s.cur - s.lo


class KVSlots:
    """Rows decoding together (see the module docstring): per layer a (rows, heads, capacity, dim) key and value
    buffer, the padding mask, each row's next input token, position id and job.

    Args:
        kv: the teacher-forced cache the prefixes come from (per layer, keys and values of shape
            (examples, heads, length, dim), prefix of example e at [0, length_e)).
        rows: rows decoded together.
        cur: the first write column; at least the longest prefix that will be admitted.
        room: free columns to keep right of `cur` when the buffer is (re)placed.
        static: fixed shapes and tensors from step to step (module docstring), for CUDA graphs.
    """

    def __init__(
        self, kv: Sequence[tuple[torch.Tensor, torch.Tensor]], rows: int, cur: int, room: int, static: bool = False
    ) -> None:
        self.kv, self.room, self.static, self.version = kv, max(1, room), static, 0
        k0 = kv[0][0]
        cap = cur + self.room
        self.keys = [torch.zeros((rows, k.shape[1], cap, k.shape[3]), dtype=k.dtype, device=k.device) for k, _ in kv]
        self.values = [torch.zeros((rows, v.shape[1], cap, v.shape[3]), dtype=v.dtype, device=v.device) for _, v in kv]
        self.mask = torch.zeros((rows, cap), dtype=torch.bool, device=k0.device)
        self.tokens = torch.zeros(rows, dtype=torch.long, device=k0.device)
        self.pos = torch.zeros(rows, dtype=torch.long, device=k0.device)
        self.row_job = torch.zeros(rows, dtype=torch.long, device=k0.device)
        self.start = [cur] * rows  # host copy of each row's first cached column
        self.cur = self.lo = cur
        self.cur_t = torch.full((1,), cur, dtype=torch.long, device=k0.device)  # `cur` on the device (static mode)
        self.cache = Cache(layers=[_SlotLayer(self, i) for i in range(len(kv))])

    @property
    def rows(self) -> int:
        return len(self.start)

    def admit(
        self, slots: Sequence[int], sources: torch.Tensor, prefix_lens: Sequence[int], first: torch.Tensor,
        jobs: torch.Tensor, live: Sequence[int],
    ) -> None:  # fmt: skip
        """Put jobs in `slots`: each gets the first `prefix_lens[i]` cached positions of example `sources[i]`, ending
        at `cur`, and feeds `first[i]` next. `live` are the slots still decoding (they keep the window open)."""
        dev, width, c = self.mask.device, max(prefix_lens), self.cur
        idx_slots = torch.as_tensor(list(slots), device=dev)
        plen = torch.as_tensor(list(prefix_lens), device=dev)
        col = torch.arange(width, device=dev)
        pad = (width - plen)[:, None]
        src_col = (col[None, :] - pad).clamp_min(0)  # columns left of a shorter prefix repeat its first (masked)
        for (k, v), keys, values in zip(self.kv, self.keys, self.values):
            keys[idx_slots, :, c - width : c] = k[sources[:, None], :, src_col].transpose(1, 2)
            values[idx_slots, :, c - width : c] = v[sources[:, None], :, src_col].transpose(1, 2)
        self.mask[idx_slots] = False
        self.mask[idx_slots, c - width : c] = col[None, :] >= pad
        self.tokens[idx_slots], self.pos[idx_slots], self.row_job[idx_slots] = first, plen, jobs
        for s, p in zip(slots, prefix_lens):
            self.start[s] = c - p
        self.lo = min([self.start[s] for s in live] + [self.start[s] for s in slots])

    def select(self, keep: torch.Tensor) -> None:
        """Keep only rows `keep` (the batch shrinks once no rollout waits)."""
        self.keys = [k[keep] for k in self.keys]
        self.values = [v[keep] for v in self.values]
        self.mask, self.tokens, self.pos, self.row_job = (
            self.mask[keep],
            self.tokens[keep],
            self.pos[keep],
            self.row_job[keep],
        )
        self.start = [self.start[i] for i in keep.tolist()]
        self.lo = min(self.start, default=self.cur)
        self.version += 1

    def make_room(self, longest_waiting: int) -> None:
        """Before a step: make sure column `cur` exists, moving the live window left (or into a bigger buffer) when
        the buffer is full; `cur` stays at least `longest_waiting`, so any waiting prefix still fits left of it."""
        cap = self.mask.shape[1]
        if self.cur < cap:
            return
        window = self.cur - self.lo
        new_cur = max(window, longest_waiting)
        # Static mode keeps its buffer (and so a captured graph) unless fewer than `room // 2` columns would be free.
        new_cap = max(cap, new_cur + (self.room // 2 if self.static else self.room))
        shift = new_cur - self.cur  # <= 0
        new_lo = self.lo + shift

        def moved(buf: torch.Tensor) -> torch.Tensor:
            out = buf if new_cap == cap else buf.new_zeros((*buf.shape[:-2], new_cap, buf.shape[-1]))
            out[:, :, new_lo:new_cur] = buf[:, :, self.lo : self.cur].clone()
            return out

        self.keys = [moved(k) for k in self.keys]
        self.values = [moved(v) for v in self.values]
        mask = self.mask if new_cap == cap else self.mask.new_zeros((self.rows, new_cap))
        window_mask = self.mask[:, self.lo : self.cur].clone()
        mask[:, :new_lo] = False
        mask[:, new_lo:new_cur] = window_mask
        mask[:, new_cur:] = False  # columns right of the window held the moved-away rows (read in static mode)
        self.mask = mask
        self.version += new_cap != cap
        self.start = [s + shift for s in self.start]
        self.cur, self.lo = new_cur, new_lo

    def attention_mask(self, as_4d: bool) -> torch.Tensor:
        """The padding mask of the next step's window [lo, cur] (the input token's own column included): 4D boolean
        (rows, 1, 1, window) for SDPA, else the 2D 0/1 mask transformers expands itself. In static mode the window is
        the whole buffer."""
        self.mask[:, self.cur] = True
        if self.static:
            self.cur_t.fill_(self.cur)
            return self.mask[:, None, None, :] if as_4d else self.mask.long()
        window = self.mask[:, self.lo : self.cur + 1]
        return window[:, None, None, :] if as_4d else window.long()

    def next_inputs(self, nxt: torch.Tensor) -> None:
        """After a step: the tokens just generated are the next inputs, one position and one column further."""
        if self.static:  # the same tensors, so a captured step reads the new values
            self.tokens.copy_(nxt)
            self.pos.add_(1)
        else:
            self.tokens, self.pos = nxt, self.pos + 1
        self.cur += 1
