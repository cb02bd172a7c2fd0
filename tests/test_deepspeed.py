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


# Rows 0-3 of the hand-made annotations select a token, the other 28 none. In steps of 8 rows (seed 0), the first,
# a middle and the last of these 6 steps select nothing.
EMPTY = [True, False, False, True, False, True]


def _run_with_empty_steps(model_dir, tmp_path, tokenizer, name, *extra):
    """CFT on those annotations for len(EMPTY) steps of 8 rows, AdamW with weight decay (a step on a zero gradient
    would still move the weights) and the configs' warm-up from lr 0: (final weights, each rank's StepLog, stderr)."""
    import json

    from cft.data.batching import StepBatches
    from tests.test_nothing_to_train import ROWS, _cft_args, _write_annotations

    plans = [StepBatches([{}] * ROWS, collate=None, micro_batch_size=4, accumulate=2, seed=0).plan(e) for e in (0, 1)]
    assert [all(i >= 4 for mb in step for i in mb) for plan in plans for step in plan][: len(EMPTY)] == EMPTY
    ann = tmp_path / "ann"
    if not ann.exists():
        _write_annotations(ann, tokenizer, critical_rows=range(4))
    args = _cft_args(model_dir, tmp_path, ann, steps=len(EMPTY))
    args[args.index("--run.name") + 1] = name
    args += ["--data.init_args.global_batch_size", "8", "--model.init_args.val_max_new_tokens", "0"]
    args += ["--model.init_args.optimizer.init_args.weight_decay", "0.1"]
    args += ["--trainer.callbacks+=tests.helpers.StepLog", "--trainer.callbacks.out_dir", str(tmp_path / name)]
    res = run_cli([*args, *extra], timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    weights = AutoModelForCausalLM.from_pretrained(tmp_path / f"runs/exp/{name}/hf/last").state_dict()
    logs = [json.loads(p.read_text()) for p in sorted((tmp_path / name).glob("steps-rank*.json"))]
    return weights, logs, res.stderr


def _assert_empty_steps_skipped(logs: list[list[dict]], deepspeed: bool) -> None:
    """Per rank: an empty step moves neither the weights nor AdamW's step counts nor the schedule; a step that selects
    moves all three (the weights only once the warm-up's lr is above 0); global_step counts both. The ranks agree."""
    taken = [0]
    for e in EMPTY:
        taken.append(taken[-1] + (not e))
    total = [
        sum(s) if s[0] is not None else None for s in zip(*[[r.pop("step_weight_sum") for r in log] for log in logs])
    ]
    for log in logs:
        weights = [r.pop("weights") for r in log]  # under ZeRO-3 each rank hashes its own partition
        assert [weights[k + 1] != weights[k] for k in range(len(EMPTY))] == [
            not e and t > 0 for e, t in zip(EMPTY, taken)
        ]
        assert log == logs[0]
    log = logs[0]
    assert [t == 0 for t in total[:-1]] == EMPTY  # the sum over ranks; one rank's share may be 0 on a step taken
    assert [r["global_step"] for r in log] == list(range(len(EMPTY) + 1))
    assert [r["sched_steps"] for r in log] == taken
    assert [r["opt_steps"] for r in log] == [[t] if t else [] for t in taken]
    if deepspeed:
        assert [r["engine_steps"] for r in log] == list(range(len(EMPTY) + 1))
        assert [r["engine_skipped"] for r in log] == [k - t for k, t in enumerate(taken)]


@pytest.fixture(scope="module")
def without_deepspeed(tiny_model_dir, tmp_path_factory, world_tokenizer):
    """The reference: the same run on one process without DeepSpeed (micro-batch 4 x accumulation 2)."""
    one, logs, _ = _run_with_empty_steps(tiny_model_dir, tmp_path_factory.mktemp("one"), world_tokenizer, "one")
    _assert_empty_steps_skipped(logs, deepspeed=False)
    return one


@pytest.mark.slow
@pytest.mark.parametrize("stage", [0, 2, 3])
def test_deepspeed_skips_steps_selecting_nothing(stage, without_deepspeed, tiny_model_dir, tmp_path, world_tokenizer):
    """ZeRO 0/2/3 on CPU, 2 ranks x micro-batch 2 x accumulation 2: the steps whose 8 rows select nothing move neither
    the weights nor AdamW's step counts nor the LR schedule (DeepSpeed's engine counts them as skipped), and the run
    ends with the weights of the same run without DeepSpeed on one process, which skips them too."""
    one = without_deepspeed
    strategy = ["--config", f"configs/strategy/deepspeed_zero{max(stage, 2)}_cpu.yaml"]
    strategy += ["--trainer.strategy.init_args.stage", str(stage), "--data.init_args.micro_batch_size", "2"]
    ds, ds_logs, stderr = _run_with_empty_steps(tiny_model_dir, tmp_path, world_tokenizer, "ds", *strategy)
    assert "epoch 0: 2 of 4 optimisation steps selected no tokens (the optimizer and LR schedule skipped" in stderr
    assert len(ds_logs) == 2
    shares = [[r["step_weight_sum"] for r in log[:-1]] for log in ds_logs]
    assert any(a == 0 and b > 0 for a, b in zip(*shares))  # one rank's rows select nothing, the other's do
    _assert_empty_steps_skipped(ds_logs, deepspeed=True)
    if stage:  # the first step was skipped; DeepSpeed still finds AdamW's moments of each parameter after it
        assert ds_logs[0][-1]["exp_avg_norm"] > 0
    for k in one:
        torch.testing.assert_close(ds[k], one[k], rtol=1e-4, atol=1e-6, msg=k)


@pytest.mark.slow
def test_deepspeed_resume_across_skipped_steps_is_exact(tiny_model_dir, tmp_path, world_tokenizer):
    """ZeRO-2 on CPU: killed after step 4 (two of them skipped) and resumed from the checkpoint of step 3, the run ends
    with the uninterrupted run's weights, bit for bit, and the engine's and schedule's counts carry over."""
    zero2 = ["--config", "configs/strategy/deepspeed_zero2_cpu.yaml", "--data.init_args.micro_batch_size", "2"]
    zero2 += ["--run.checkpoint_every_n_steps", "1"]
    ref, (ref_log, _), _ = _run_with_empty_steps(tiny_model_dir, tmp_path / "ref", world_tokenizer, "t", *zero2)
    crash = ["--trainer.callbacks+=tests.helpers.CrashAtStep", "--trainer.callbacks.step", "4"]
    with pytest.raises(AssertionError, match="SimulatedCrash"):
        _run_with_empty_steps(tiny_model_dir, tmp_path / "cut", world_tokenizer, "t", *zero2, *crash)
    got, (log, _), _ = _run_with_empty_steps(tiny_model_dir, tmp_path / "cut", world_tokenizer, "t", *zero2)
    for k in ref:
        assert torch.equal(got[k], ref[k]), f"{k} differs after resume"
    assert log[0]["global_step"] == 3 and log == ref_log[3:]  # the same weights and counts from step 3 on


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bf16 DeepSpeed on the GPU)")
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_gpu_bf16_skips_steps_selecting_nothing(stage, tiny_model_dir, tmp_path, world_tokenizer):
    """The same on one GPU in bf16-mixed (configs/strategy/deepspeed_zero{2,3}.yaml, micro-batch 4 x accumulation 2):
    the bf16 weights copied back from the fp32 master on a skipped step are bit for bit the ones before it."""
    args = ["--config", f"configs/strategy/deepspeed_zero{stage}.yaml", "--trainer.devices", "1"]
    _, logs, stderr = _run_with_empty_steps(tiny_model_dir, tmp_path, world_tokenizer, "gpu", *args)
    assert "epoch 0: 2 of 4 optimisation steps selected no tokens (the optimizer and LR schedule skipped" in stderr
    _assert_empty_steps_skipped(logs, deepspeed=True)
    assert logs[0][-1]["exp_avg_norm"] > 0
