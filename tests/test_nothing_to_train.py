"""Nothing trains on nothing and exits 0: a model dir without tokenizer files, a tokenizer with other ids than the
model was trained with, annotation values that would train silently wrong, steps or whole runs that select no
token, an empty benchmark file. Each through `python -m cft`'s entry point."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from cft.cli import main
from cft.data.annotation_format import write_part
from cft.data.batching import StepBatches
from cft.lm.loading import tokenizer_fingerprint
from cft.lm.tokenizer import tokenizer_world
from tests.helpers import REPO, TrainingState, fast_fit_args

ROWS = 32  # fast_fit_args: max_train_rows 32, micro-batch 4 -> 8 steps per epoch


def _last_error(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def _fails(args, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    return _last_error(capsys)


def test_model_dir_without_tokenizer_is_refused(tiny_model_dir, tmp_path, capsys):
    bare = tmp_path / "weights-only"
    bare.mkdir()
    for f in ("config.json", "model.safetensors", "generation_config.json"):
        if (tiny_model_dir / f).is_file():
            shutil.copy(tiny_model_dir / f, bare / f)
    err = _fails(fast_fit_args(bare, tmp_path / "runs", steps=1), capsys)
    assert err.startswith("error: model.name_or_path") and "has no tokenizer files" in err and str(bare) in err
    assert not (tmp_path / "runs/exp/t/checkpoints").exists() and not (tmp_path / "runs/exp/t/hf").exists()


def test_tokenizer_with_other_ids_than_the_export_is_refused(tiny_model_dir, tmp_path, world_tokenizer, capsys):
    main(fast_fit_args(tiny_model_dir, tmp_path / "runs", name="a", steps=1))
    export = tmp_path / "runs/exp/a/hf/last"
    assert json.loads((export / "cft_tokenizer.json").read_text()) == tokenizer_fingerprint(world_tokenizer)
    # Same size, two ids swapped: the size check cannot see it, the recorded fingerprint does.
    other = tmp_path / "swapped"
    world_tokenizer.save_pretrained(other)
    tj = json.loads((other / "tokenizer.json").read_text())
    vocab = tj["model"]["vocab"]
    a, b = "7", "8"
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (other / "tokenizer.json").write_text(json.dumps(tj))
    args = fast_fit_args(export, tmp_path / "runs", name="b", steps=1) + [
        "--model.init_args.model.tokenizer",
        str(other),
    ]
    err = _fails(args, capsys)
    assert "tokenizer does not match" in err and "another vocabulary" in err and "cft_tokenizer.json" in err
    # Its own tokenizer (the export's) passes.
    main(fast_fit_args(export, tmp_path / "runs", name="c", steps=1))


def _write_annotations(out: Path, tokenizer, edit=None, critical_rows=range(ROWS)) -> Path:
    """A hand-made annotation part of ROWS reference solutions; rows in `critical_rows` are all-critical, the others
    have no critical token; `edit(rows)` then spoils a value."""
    problems = tokenizer_world("arithmetic").problems("train")[:ROWS]
    rows = []
    for i, p in enumerate(problems):
        prompt_ids = tokenizer(p.question, add_special_tokens=True)["input_ids"]
        resp = tokenizer(p.solution, add_special_tokens=False)["input_ids"]
        rows.append(
            {
                "id": p.id,
                "question": p.question,
                "answer": p.answer,
                "prompt": p.question,
                "response": p.solution,
                "prompt_token_ids": prompt_ids,
                "response_token_ids": resp,
                "critical": [int(i in critical_rows)] * len(resp),
                "entropy": [0.5] * len(resp),
            }
        )
    if edit is not None:
        edit(rows)
    out.mkdir(parents=True)
    write_part(out / "part-00000.parquet", rows, {"tokenizer": tokenizer_fingerprint(tokenizer)})
    return out


def _cft_args(model_dir, tmp_path, annotations, steps=1):
    return fast_fit_args(model_dir, tmp_path / "runs", steps=steps) + [
        "--data.init_args.annotations",
        str(annotations),
        "--data.init_args.selector",
        "cft.selectors.CriticalTokens",
    ]


def _set(field, row, k, value):
    def edit(rows):
        rows[row][field][k] = value

    return edit


@pytest.mark.parametrize(
    "edit,expected",
    [
        (_set("critical", 5, 3, -1), "row 5 (id {id!r}): critical[3] = -1; critical flags must be 0 or 1"),
        (_set("critical", 6, 0, 100), "row 6 (id {id!r}): critical[0] = 100"),
        (_set("entropy", 7, 2, float("nan")), "row 7 (id {id!r}): entropy[2] = nan; entropies must be finite"),
        (_set("response_token_ids", 8, 1, 99999), "row 8 (id {id!r}): response_token_ids[1] = 99999 is outside"),
        (_set("prompt_token_ids", 9, 0, -3), "row 9 (id {id!r}): prompt_token_ids[0] = -3 is outside"),
    ],
    ids=["critical=-1", "critical=100", "entropy=nan", "response-id-out-of-vocab", "prompt-id-negative"],
)
def test_bad_annotation_values_are_one_clear_error(tiny_model_dir, tmp_path, world_tokenizer, capsys, edit, expected):
    ann = _write_annotations(tmp_path / "ann", world_tokenizer, edit)
    row = int(expected.split()[1])
    pid = tokenizer_world("arithmetic").problems("train")[row].id
    err = _fails(_cft_args(tiny_model_dir, tmp_path, ann), capsys)
    assert err.startswith(f"error: {ann / 'part-00000.parquet'} ") and expected.format(id=pid) in err, err


def test_run_selecting_nothing_is_an_error(tiny_model_dir, tmp_path, world_tokenizer, capsys):
    ann = _write_annotations(tmp_path / "ann", world_tokenizer, critical_rows=())
    err = _fails(_cft_args(tiny_model_dir, tmp_path, ann), capsys)
    assert "selector 'critical' selects none of the" in err and "nothing to train on" in err


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_steps_selecting_nothing_are_counted_and_skipped(tiny_model_dir, tmp_path, world_tokenizer):
    ann = _write_annotations(tmp_path / "ann", world_tokenizer, critical_rows=range(4))
    # The steps of epoch 0 whose four rows are all among the rows without a critical token, from the step plan.
    plan = StepBatches([{}] * ROWS, collate=None, micro_batch_size=4, seed=0).plan(0)
    empty = [all(i >= 4 for mb in step for i in mb) for step in plan]
    want = sum(empty)
    assert 0 < want < len(plan)
    # Weight decay on, so that an AdamW step on a zero gradient would still move the weights.
    args = _cft_args(tiny_model_dir, tmp_path, ann, steps=len(plan))
    args += [
        "--model.init_args.optimizer.init_args.weight_decay",
        "0.1",
        "--trainer.callbacks+=tests.helpers.TrainingState",
    ]
    TrainingState.seen = []
    with pytest.warns(UserWarning, match=rf"epoch 0: {want} of {len(plan)} optimisation steps selected no tokens "
                      r"\(the optimizer and LR schedule skipped them; global_step counts them\)"):  # fmt: skip
        main(args)
    lines = (tmp_path / "runs/exp/t/metrics.csv").read_text().splitlines()
    col = lines[0].split(",").index("train/empty_steps")
    assert [float(r.split(",")[col]) for r in lines[1:] if r.split(",")[col]] == [want]

    seen = TrainingState.seen
    assert len(seen) == len(plan) + 1
    assert [s["step_weight_sum"] == 0 for s in seen[:-1]] == empty  # the plan's empty steps are the ones we checked
    for k, is_empty in enumerate(empty):
        before, after = seen[k], seen[k + 1]
        assert after["global_step"] == before["global_step"] + 1  # global_step counts every step batch
        if is_empty:  # nothing moves: weights, AdamW's moments and step counts, the lr and the schedule
            assert _same(before["weights"], after["weights"]), k
            assert before["opt"].keys() == after["opt"].keys()
            assert all(_same(before["opt"][i], after["opt"][i]) for i in before["opt"]), k
            assert (after["lr"], after["sched_steps"]) == (before["lr"], before["sched_steps"]), k
        else:  # (the first step of the warm-up has lr 0: only the moments move)
            assert _same(before["weights"], after["weights"]) == (before["lr"] == 0), k
            assert after["sched_steps"] == before["sched_steps"] + 1 and after["lr"] > before["lr"], k
            assert all(int(after["opt"][i]["step"]) == int(before["opt"].get(i, {"step": 0})["step"]) + 1
                       for i in after["opt"]), k  # fmt: skip
    # Warm-up of 10 steps from 0 (configs/tiny/sft.yaml, lr 3e-4): the schedule stepped only on the selecting steps.
    taken = len(plan) - want
    assert seen[-1]["global_step"] == len(plan) and seen[-1]["sched_steps"] == taken
    assert seen[-1]["lr"] == pytest.approx(3e-4 * taken / 10)
    assert all(int(s["step"]) == taken for s in seen[-1]["opt"].values())


def test_empty_benchmark_file_is_an_error(tiny_model_dir, tmp_path, capsys):
    empty = tmp_path / "gsm8k.jsonl"
    empty.write_text("")
    args = ["test", "--config", str(REPO / "configs/tiny/eval.yaml"), "--model.init_args.model.name_or_path"]
    args += [str(tiny_model_dir), "--run.root", str(tmp_path / "runs"), "--run.name", "e", "--run.wandb_mode"]
    args += ["disabled", "--trainer.enable_progress_bar", "false", "--data.init_args.task", "null"]
    args += ["--data.init_args.benchmarks", "[gsm8k]", "--data.init_args.local_paths", f"{{gsm8k: {empty}}}"]
    err = _fails(args, capsys)
    assert str(empty) in err and "has no rows" in err
    assert not (tmp_path / "runs/tiny/e/metrics.json").exists()


def test_resume_across_skipped_steps_is_exact(tiny_model_dir, tmp_path, world_tokenizer):
    """Gradient accumulation 2 (8 rows a step, 4 steps an epoch), two epochs, rows 0-1 the only ones that select:
    killed after step 3 and resumed, the run ends with the uninterrupted run's weights, and the checkpoint's schedule
    has stepped once per selecting step before it."""
    from transformers import AutoModelForCausalLM

    from tests.helpers import SimulatedCrash

    ann = _write_annotations(tmp_path / "ann", world_tokenizer, critical_rows=range(2))
    plans = [StepBatches([{}] * ROWS, collate=None, micro_batch_size=4, accumulate=2, seed=0).plan(e) for e in (0, 1)]
    empty = [all(i >= 2 for mb in step for i in mb) for plan in plans for step in plan]
    assert len(empty) == 8 and any(empty[:3]) and not all(empty[:3]) and any(empty[3:]) and not all(empty[3:])

    def run(root, *extra):
        args = _cft_args(tiny_model_dir, root, ann, steps=8)
        args += ["--data.init_args.global_batch_size", "8", "--run.checkpoint_every_n_steps", "1"]
        args += ["--model.init_args.optimizer.init_args.weight_decay", "0.1", "--model.init_args.val_max_new_tokens"]
        main([*args, "0", *extra])
        return AutoModelForCausalLM.from_pretrained(root / "runs/exp/t/hf/last").state_dict()

    ref = run(tmp_path / "ref")
    with pytest.raises(SimulatedCrash):
        run(tmp_path / "cut", "--trainer.callbacks+=tests.helpers.CrashAtStep", "--trainer.callbacks.step", "4")
    ckpt = torch.load(tmp_path / "cut/runs/exp/t/checkpoints/last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 3 and ckpt["lr_schedulers"][0]["last_epoch"] == 3 - sum(empty[:3])
    got = run(tmp_path / "cut")
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-6, msg=f"{k} differs after resume")


@pytest.mark.slow
def test_two_ranks_skip_together(tiny_model_dir, tmp_path, world_tokenizer):
    """DDP, 2 ranks x micro-batch 4, rows 0-1 the only ones that select: a step where one rank's rows select nothing
    but the other's do is taken on both ranks, a step empty on both is skipped on both (the decision comes from the
    sum over ranks). Both ranks end with the same weights, equal to one process running the same rows as 2
    accumulated micro-batches."""
    from tests.helpers import run_cli

    ann = _write_annotations(tmp_path / "ann", world_tokenizer, critical_rows=range(2))
    plan = StepBatches([{}] * ROWS, collate=None, micro_batch_size=4, accumulate=2, seed=0).plan(0)
    ranks_empty = [[all(i >= 2 for i in mb) for mb in step] for step in plan]  # micro-batch k of a step = rank k
    assert [True, False] in ranks_empty or [False, True] in ranks_empty
    assert [True, True] in ranks_empty

    def run(name, *extra):
        args = _cft_args(tiny_model_dir, tmp_path, ann, steps=4)
        args[args.index("--run.name") + 1] = name
        args += ["--data.init_args.global_batch_size", "8", "--model.init_args.val_max_new_tokens", "0"]
        args += ["--model.init_args.optimizer.init_args.weight_decay", "0.1"]
        args += ["--model.init_args.lr_schedule.warmup_steps", "0"]
        args += ["--trainer.callbacks+=tests.helpers.RankWeights", "--trainer.callbacks.out_dir", str(tmp_path / name)]
        res = run_cli([*args, *extra], timeout=900)
        assert res.returncode == 0, res.stderr[-4000:]
        return [torch.load(p) for p in sorted((tmp_path / name).glob("rank*.pt"))]

    (one,) = run("one")
    two = run("two", "--trainer.devices", "2", "--trainer.strategy", "ddp")
    assert len(two) == 2
    for k in one:
        assert torch.equal(two[0][k], two[1][k]), f"{k}: the ranks disagree"
        torch.testing.assert_close(two[0][k], one[k], rtol=1e-4, atol=1e-6, msg=k)
