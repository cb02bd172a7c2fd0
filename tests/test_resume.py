"""Resume is exact at every point of a run: killed inside an epoch, at the first step of the next epoch, or just
before an epoch ends, for epoch-limited and step-limited runs, the resumed run ends with the uninterrupted weights."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from cft.cli import main
from tests.helpers import SimulatedCrash, fast_fit_args

# 32 rows, micro-batch 4: 8 optimizer steps per epoch. A crash at global step s leaves last.ckpt at step s-1
# (the checkpoint callback runs after the crash callback), so the resumed run restarts after s-1 steps:
# 3 = inside the first epoch, 7 = one step before the epoch ends, 8 = the epoch just ended (the resumed run's
# first step is the first of epoch 2).
STEPS_PER_EPOCH = 8
CRASH_AT = [4, 8, 9]


def _args(model_dir, root, limit: str) -> list[str]:
    args = fast_fit_args(model_dir, root, name="r", steps=20)
    args += ["--model.init_args.val_max_new_tokens", "0"]
    if limit == "validation":  # sft.yaml/cft.yaml as shipped: epochs, validation (and last.ckpt) twice an epoch
        args += ["--trainer.max_steps", "-1", "--trainer.max_epochs", "2", "--trainer.val_check_interval", "0.5"]
        return args + ["--trainer.check_val_every_n_epoch", "1"]
    args += ["--run.checkpoint_every_n_steps", "1"]
    if limit == "epochs":  # max_steps -1: the schedule length comes from the epochs
        args += ["--trainer.max_steps", "-1", "--trainer.max_epochs", "3", "--trainer.val_check_interval", "1.0"]
        args += ["--trainer.check_val_every_n_epoch", "1"]
    return args


def _weights(path):
    return AutoModelForCausalLM.from_pretrained(path).state_dict()


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, tmp_path_factory):
    out = {}
    for limit in ("epochs", "steps", "validation"):
        root = tmp_path_factory.mktemp(f"ref-{limit}")
        main(_args(tiny_model_dir, root, limit))
        out[limit] = (root / "exp/r", _weights(root / "exp/r/hf/last"))
    return out


def _losses(run_dir) -> dict[int, str]:
    lines = (run_dir / "metrics.csv").read_text().splitlines()
    head = lines[0].split(",")
    i, j = head.index("step"), head.index("train/loss")
    return {int(r.split(",")[i]): r.split(",")[j] for r in lines[1:] if r.split(",")[j]}


@pytest.mark.slow
@pytest.mark.parametrize("limit", ["epochs", "steps"])
@pytest.mark.parametrize("crash_at", CRASH_AT)
def test_resume_is_exact(tiny_model_dir, tmp_path, uninterrupted, limit, crash_at):
    crash = ["--trainer.callbacks+=tests.helpers.CrashAtStep", "--trainer.callbacks.step", str(crash_at)]
    with pytest.raises(SimulatedCrash):
        main(_args(tiny_model_dir, tmp_path, limit) + crash)
    ckpt = torch.load(tmp_path / "exp/r/checkpoints/last.ckpt", weights_only=False)
    assert ckpt["global_step"] == crash_at - 1
    _resume_and_compare(tiny_model_dir, tmp_path, uninterrupted, limit)


def _resume_and_compare(tiny_model_dir, tmp_path, uninterrupted, limit):
    main(_args(tiny_model_dir, tmp_path, limit))
    ref_dir, ref = uninterrupted[limit]
    got = _weights(tmp_path / "exp/r/hf/last")
    assert _losses(tmp_path / "exp/r") == _losses(ref_dir), "per-step losses differ from the uninterrupted run"
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-6, msg=f"{k} differs after resume")


@pytest.mark.slow
@pytest.mark.parametrize("crash_at,saved_at", [(6, 4), (10, 8)], ids=["mid-epoch-validation", "epoch-end-validation"])
def test_resume_from_validation_checkpoints_is_exact(tiny_model_dir, tmp_path, uninterrupted, crash_at, saved_at):
    """The shipped configs' checkpoints: written after the validation in the middle and at the end of an epoch."""
    crash = ["--trainer.callbacks+=tests.helpers.CrashAtStep", "--trainer.callbacks.step", str(crash_at)]
    with pytest.raises(SimulatedCrash):
        main(_args(tiny_model_dir, tmp_path, "validation") + crash)
    ckpt = torch.load(tmp_path / "exp/r/checkpoints/last.ckpt", weights_only=False)
    assert ckpt["global_step"] == saved_at
    _resume_and_compare(tiny_model_dir, tmp_path, uninterrupted, "validation")


def _loader(micro: int, accumulate: int, rows: int = 32):
    from cft.data.batching import StepBatches, StepLoader

    ds = StepBatches([{"i": i} for i in range(rows)], collate=lambda rs: [r["i"] for r in rs], micro_batch_size=micro,
                     accumulate=accumulate, seed=3, weight_key=None)  # fmt: skip
    return StepLoader(ds)


def test_resume_with_another_step_layout_keeps_the_position_in_rows():
    old = _loader(micro=4, accumulate=1)
    seen = []
    for b in old:  # 4 steps of 4 rows reach the model, then the job stops
        old.mark_consumed()
        seen += b
        if len(seen) == 16:
            break
    state = old.state_dict()
    full = [i for b in _loader(micro=4, accumulate=1) for i in b]
    new = _loader(micro=2, accumulate=4)  # 8 rows per step: the 16 rows done are 2 whole new steps
    new.load_state_dict(state)
    assert [i for b in new for i in b] == full[16:]
    odd = _loader(micro=2, accumulate=3)  # 6 rows per step: 16 rows done are not whole steps
    with pytest.warns(UserWarning, match="position in the epoch is approximate"):
        odd.load_state_dict(state)
    assert odd.dataset.skip == 2 * 3  # two whole steps (12 rows) done; rows 12..15 come again
