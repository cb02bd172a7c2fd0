"""KVSlots, the rollouts' preallocated KV cache: every row sees exactly its prefix and its own written columns, in
order, through admissions into freed slots, window moves, buffer growth and shrinking."""

from __future__ import annotations

import torch

from cft.lm.engines.kv_slots import KVSlots


def _visible(slots: KVSlots, row: int) -> list[float]:
    """Row `row`'s cached keys (head 0, dim 0) left of `cur`, padding masked out; the unmasked ones must lie in the
    attention window."""
    visible = slots.mask[row, : slots.cur]
    assert not visible[: slots.lo].any()
    return slots.keys[0][row, 0, : slots.cur, 0][visible].tolist()


def test_rows_see_their_prefix_and_their_own_columns():
    gen = torch.Generator().manual_seed(0)
    examples, length = 3, 9
    k = torch.randn(examples, 2, length, 4, generator=gen)
    kv = [(k, k + 100)]
    # room 1: the window moves left (and the buffer grows) at every step once `cur` reaches the end.
    slots = KVSlots(kv, rows=2, cur=8, room=3)
    expected = {0: k[0, 0, :3, 0].tolist(), 1: k[2, 0, :5, 0].tolist()}
    slots.admit([0, 1], torch.tensor([0, 2]), [3, 5], torch.tensor([5, 6]), torch.tensor([0, 1]), live=[])
    assert slots.lo == 3
    layer = slots.cache.layers[0]
    caps, los = set(), set()
    for step in range(12):
        slots.make_room(6 if step < 6 else 0)
        los.add(slots.lo)
        slots.attention_mask(as_4d=True)
        written = torch.full((2, 2, 1, 4), 1000.0 + step)
        written[1] += 0.5
        keys, values = layer.update(written, written)
        assert keys.shape[2] == values.shape[2] == slots.cur - slots.lo + 1
        expected[0].append(1000.0 + step)
        expected[1].append(1000.5 + step)
        slots.next_inputs(torch.tensor([1, 1]))
        caps.add(slots.mask.shape[1])
        if step == 5:  # row 0 finished: its slot takes example 1's 6-token prefix
            slots.admit([0], torch.tensor([1]), [6], torch.tensor([4]), torch.tensor([2]), live=[1])
            expected[0] = k[1, 0, :6, 0].tolist()
            assert slots.pos[0] == 6 and slots.tokens[0] == 4 and slots.row_job.tolist() == [2, 1]
        for row in (0, 1):
            assert _visible(slots, row) == expected[row], (step, row)
    assert len(caps) > 1 and len(los) > 1, "the buffer should have grown and the window moved"
    slots.select(torch.tensor([1]))
    assert slots.rows == 1 and _visible(slots, 0) == expected[1]
    assert slots.values[0][0, 0, slots.cur - 1, 0] == expected[1][-1]  # values follow their keys


def test_static_slots_keep_their_tensors_and_mask_everything_outside_each_span():
    """Static mode (what a CUDA graph replays): the write column is a device tensor, attention reads the whole
    buffer, so every column outside a row's span must be masked out, and the window moves in place (same tensors);
    only growing or shrinking makes new tensors, counted by `version`. Rows live at most 4 steps, as rollouts of
    at most 4 tokens would, with the room the engine gives them (2 x (4 + 1))."""
    gen = torch.Generator().manual_seed(0)
    k = torch.randn(3, 2, 9, 4, generator=gen)
    slots = KVSlots([(k, k + 100)], rows=2, cur=8, room=10, static=True)
    keys_ptr, mask_ptr = slots.keys[0].data_ptr(), slots.mask.data_ptr()
    expected = {0: k[0, 0, :3, 0].tolist(), 1: k[2, 0, :5, 0].tolist()}
    slots.admit([0, 1], torch.tensor([0, 2]), [3, 5], torch.tensor([5, 6]), torch.tensor([0, 1]), live=[])
    layer, cap, moves, age = slots.cache.layers[0], slots.mask.shape[1], 0, [0, 2]
    for step in range(30):
        cur_before = slots.cur
        slots.make_room(8)
        moves += slots.cur < cur_before
        mask = slots.attention_mask(as_4d=True)
        assert mask.shape == (2, 1, 1, cap) and int(slots.cur_t) == slots.cur
        assert not slots.mask[:, slots.cur + 1 :].any(), "columns right of the write column must be masked"
        written = torch.full((2, 2, 1, 4), 1000.0 + step)
        written[1] += 0.5
        keys, values = layer.update(written, written)
        assert keys.shape[2] == cap and keys.data_ptr() == keys_ptr
        assert layer.get_seq_length() == cap - 1
        expected[0].append(1000.0 + step)
        expected[1].append(1000.5 + step)
        tokens, pos = slots.tokens, slots.pos
        slots.next_inputs(torch.tensor([3, 4]))
        assert slots.tokens is tokens and slots.pos is pos and slots.tokens.tolist() == [3, 4]
        for row in (0, 1):
            age[row] += 1
            if age[row] == 4:  # the row's rollout ended: its slot takes a prefix of 2-8 tokens of example step % 3
                length = 2 + step % 7
                slots.admit([row], torch.tensor([step % 3]), [length], torch.tensor([7]), torch.tensor([step]),
                            live=[1 - row])  # fmt: skip
                expected[row], age[row] = k[step % 3, 0, :length, 0].tolist(), 0
                assert slots.pos[row] == length
        for row in (0, 1):
            assert _visible(slots, row) == expected[row], (step, row)
            span = slots.mask[row, : slots.cur]
            assert int(span.sum()) == len(expected[row]) and not span[: slots.start[row]].any()
    assert moves >= 2, "the window should have moved in place"
    assert slots.keys[0].data_ptr() == keys_ptr and slots.mask.data_ptr() == mask_ptr and slots.version == 0
    slots.select(torch.tensor([1]))
    assert slots.version == 1 and _visible(slots, 0) == expected[1]
