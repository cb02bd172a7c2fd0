"""DeepSpeed ZeRO-2/3 on CPU with 2 processes: the update equals the hand-computed one; the HF export loads."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers import run_cli
from tests.test_learner import _naive_loss, _rows, _sgd_args


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_cpu_sgd_step_matches_hand_computation(stage, tiny_model_dir, tmp_path):
    """2 ranks x micro-batch 2 x accumulation 2 = the 8 rows of one step: DeepSpeed's own division by the
    accumulation steps and the averaging over ranks must be undone exactly."""
    args = _sgd_args(tiny_model_dir, tmp_path, f"z{stage}", micro=2, accum=2, world_size=2)
    args += [
        "--config", f"configs/strategy/deepspeed_zero{stage}_cpu.yaml",
        "--model.init_args.val_max_new_tokens", "4",  # generation under ZeRO-3 needs synced ranks
    ]  # fmt: skip
    res = run_cli(args, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    out = tmp_path / f"exp/z{stage}/hf/last"
    trained = AutoModelForCausalLM.from_pretrained(out).state_dict()

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    _naive_loss(model, _rows(tok, 8)).backward()
    for k, p in model.named_parameters():
        torch.testing.assert_close(trained[k], p.detach() - p.grad, rtol=1e-4, atol=1e-5, msg=k)
    assert (tmp_path / f"exp/z{stage}/metrics.csv").read_text().count("val/acc") == 1


@pytest.mark.slow
@pytest.mark.parametrize("stage", [0, 2, 3])
def test_deepspeed_skips_steps_selecting_nothing(stage, tiny_model_dir, tmp_path, world_tokenizer):
    """ZeRO 0/2/3, 2 ranks x micro-batch 2 x accumulation 2, rows 0-3 the only ones that select a token: the steps whose
    8 rows select nothing move neither the weights nor AdamW's step counts nor the LR schedule (DeepSpeed's engine
    counts them as skipped), and the run ends with the weights of the same run without DeepSpeed on one process,
    which skips them too (tests/test_nothing_to_train.py)."""
    import json

    from cft.data.batching import StepBatches
    from tests.test_nothing_to_train import ROWS, _cft_args, _write_annotations

    ann = _write_annotations(tmp_path / "ann", world_tokenizer, critical_rows=range(4))
    plans = [StepBatches([{}] * ROWS, collate=None, micro_batch_size=4, accumulate=2, seed=0).plan(e) for e in (0, 1)]
    empty = [all(i >= 4 for mb in step for i in mb) for plan in plans for step in plan][:6]
    assert empty == [True, False, False, True, False, True]  # the first, a middle and the last step select nothing

    def run(name, *extra):
        args = _cft_args(tiny_model_dir, tmp_path, ann, steps=len(empty))
        args[args.index("--run.name") + 1] = name
        args += ["--data.init_args.global_batch_size", "8", "--model.init_args.val_max_new_tokens", "0"]
        args += ["--model.init_args.optimizer.init_args.weight_decay", "0.1"]  # an AdamW step on zeros still moves
        args += ["--trainer.callbacks+=tests.helpers.StepLog", "--trainer.callbacks.out_dir", str(tmp_path / name)]
        res = run_cli([*args, *extra], timeout=900)
        assert res.returncode == 0, res.stderr[-4000:]
        weights = AutoModelForCausalLM.from_pretrained(tmp_path / f"runs/exp/{name}/hf/last").state_dict()
        logs = [json.loads(p.read_text()) for p in sorted((tmp_path / name).glob("steps-rank*.json"))]
        return weights, logs, res.stderr

    one, (one_log,), _ = run("one")
    strategy = ["--config", f"configs/strategy/deepspeed_zero{max(stage, 2)}_cpu.yaml"]
    strategy += ["--trainer.strategy.init_args.stage", str(stage)]
    ds, ds_logs, stderr = run("ds", *strategy, "--data.init_args.micro_batch_size", "2")
    assert "epoch 0: 2 of 4 optimisation steps selected no tokens (the optimizer and LR schedule skipped" in stderr
    # Every rank takes the same decision; each holds its own share of the step's weight.
    assert len(ds_logs) == 2
    share = [[s.pop("step_weight_sum") for s in log] for log in ds_logs]
    assert ds_logs[0] == ds_logs[1]
    ds_log = [{**s, "step_weight_sum": a if a is None else a + b} for s, a, b in zip(ds_logs[0], *share)]
    assert any(a == 0 and b > 0 for a, b in zip(share[0][:-1], share[1][:-1]))  # one rank's rows empty, the other's not
    taken = [0]
    for e in empty:
        taken.append(taken[-1] + (not e))
    for log in (one_log, ds_log):
        assert [s["global_step"] for s in log] == list(range(len(empty) + 1))  # global_step counts every step
        assert [s["step_weight_sum"] == 0 for s in log[:-1]] == empty
        assert [s["sched_steps"] for s in log] == taken
        assert [s["opt_steps"] for s in log] == [[t] if t else [] for t in taken]
    assert [s["engine_steps"] for s in ds_log] == list(range(len(empty) + 1))
    assert [s["engine_skipped"] for s in ds_log] == [k - t for k, t in enumerate(taken)]
    if stage:  # the first step was skipped; DeepSpeed still finds AdamW's moments of each parameter after it
        assert ds_log[-1]["exp_avg_norm"] > 0
    for k in one:
        torch.testing.assert_close(ds[k], one[k], rtol=1e-4, atol=1e-6, msg=k)
