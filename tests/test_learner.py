"""Loss normalisation: sum(w * nll) / sum(w) over the whole optimisation step, whatever the micro-batching."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from cft.cli import main
from cft.data.collate import collate_weighted
from cft.tasks import ArithmeticTask
from cft.tasks.templates import PlainTemplate
from tests.helpers import fast_fit_args


def _sgd_args(model_dir, root, name, micro, accum, rows=8, steps=1, world_size=1):
    args = fast_fit_args(model_dir, root, name=name, steps=steps)
    return args + [
        "--data.init_args.micro_batch_size",
        str(micro),
        "--data.init_args.max_train_rows",
        str(rows),
        "--data.init_args.global_batch_size",
        str(micro * accum * world_size),
        "--model.init_args.optimizer",
        "torch.optim.SGD",
        "--model.init_args.optimizer.lr",
        "1.0",
        "--model.init_args.lr_schedule.warmup_steps",
        "0",
        "--model.init_args.lr_schedule.decay",
        "constant",
        "--model.init_args.val_max_new_tokens",
        "0",
    ]


def _rows(tokenizer, n=8):
    task = ArithmeticTask()
    rows = []
    for p in task.problems("train")[:n]:
        prompt = PlainTemplate().render(p.question)
        rows.append(
            {
                "prompt_ids": tokenizer(prompt)["input_ids"],
                "response_ids": tokenizer(p.solution, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id],
            }
        )
    for r in rows:
        r["weights"] = [1.0] * len(r["response_ids"])
    return rows


def _naive_loss(model, rows):
    """Hand computation: one row at a time, token by token, sum of w * -log p over sum of w."""
    total, denom = 0.0, 0.0
    for r in rows:
        ids = torch.tensor([r["prompt_ids"] + r["response_ids"]])
        logp = torch.log_softmax(model(ids).logits[0].float(), -1)
        start = len(r["prompt_ids"])
        for j, (tok, w) in enumerate(zip(r["response_ids"], r["weights"])):
            total = total + w * -logp[start + j - 1, tok]
            denom += w
    return total / denom


def test_training_step_loss_equals_hand_computation(tiny_model_dir):
    from cft.lm.loading import ModelConfig
    from cft.modules.learner import TokenWeightedLearner

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = _rows(tok, 3)
    rows[0]["weights"] = [0.0, 1.0] * (len(rows[0]["response_ids"]) // 2) + [1.0] * (len(rows[0]["response_ids"]) % 2)
    rows[2]["weights"] = [0.5] * len(rows[2]["response_ids"])
    learner = TokenWeightedLearner(ModelConfig(name_or_path=str(tiny_model_dir)))
    learner.configure_model()

    class _T:  # the minimum of a trainer that training_step reads
        accumulate_grad_batches, world_size = 1, 1

        class strategy:  # noqa: N801
            @staticmethod
            def reduce(t, reduce_op):
                return t

    learner._trainer = _T()
    learner.log = learner.log_dict = lambda *a, **k: None
    batch = collate_weighted(rows, tok.pad_token_id)
    batch["step_weight_sum"] = batch["weights"].sum().double()
    loss = learner.training_step(batch, 0)
    expected = _naive_loss(learner.model, rows)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    # and it is not the mean of per-row means
    per_row = torch.stack([_naive_loss(learner.model, [r]) for r in rows]).mean()
    assert abs(float(per_row) - float(expected)) > 1e-4


def test_gradient_accumulation_invariance(tiny_model_dir, tmp_path):
    """One SGD step: batch 8 x accumulation 1 == batch 2 x accumulation 4 == the hand-computed update."""
    main(_sgd_args(tiny_model_dir, tmp_path, "b8", micro=8, accum=1))
    main(_sgd_args(tiny_model_dir, tmp_path, "b2x4", micro=2, accum=4))
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "exp/b8/hf/last").state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "exp/b2x4/hf/last").state_dict()

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    _naive_loss(model, _rows(tok, 8)).backward()
    with torch.no_grad():
        expected = {k: p - 1.0 * p.grad for k, p in model.named_parameters()}
    for k in expected:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=f"{k}: 8x1 vs 2x4")
        torch.testing.assert_close(a[k], expected[k], rtol=1e-4, atol=1e-5, msg=f"{k}: vs hand-computed update")


def _one_line_error(args, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_more_rows_than_one_step_required(tiny_model_dir, tmp_path, capsys):
    err = _one_line_error(_sgd_args(tiny_model_dir, tmp_path, "few", micro=8, accum=2, rows=8), capsys)
    assert "8 training rows is fewer than one optimisation step" in err and "accumulate 2" in err


def test_accumulation_is_derived_from_the_global_batch_size(tiny_model_dir, tmp_path, capsys):
    """global 6 with micro 4 on one device is not a whole number of micro-batches; an explicit accumulation that
    disagrees with the global size is refused rather than silently overridden."""
    args = _sgd_args(tiny_model_dir, tmp_path, "odd", micro=4, accum=1)
    args[args.index("--data.init_args.global_batch_size") + 1] = "6"
    err = _one_line_error(args, capsys)
    assert err == "error: data.global_batch_size=6 is not a multiple of micro_batch_size 4 x 1 devices = 4"
    args = _sgd_args(tiny_model_dir, tmp_path, "both", micro=2, accum=4) + ["--trainer.accumulate_grad_batches", "2"]
    err = _one_line_error(args, capsys)
    assert err.startswith("error: trainer.accumulate_grad_batches=2 and data.global_batch_size=8 disagree")


def test_cross_entropy_matches_torch(tiny_model_dir):
    """token_nll is plain next-token cross-entropy (guards against an off-by-one shift)."""
    from cft.lm.loading import ModelConfig
    from cft.modules.learner import TokenWeightedLearner

    learner = TokenWeightedLearner(ModelConfig(name_or_path=str(tiny_model_dir)))
    learner.configure_model()
    tok = learner.tokenizer
    batch = collate_weighted(_rows(tok, 2), tok.pad_token_id)
    nll, _ = learner.token_nll(batch)
    logits = learner.model(batch["input_ids"]).logits
    ref = F.cross_entropy(logits[0, :-1], batch["input_ids"][0, 1:], reduction="none")
    n = int(batch["attention_mask"][0].sum()) - 1
    torch.testing.assert_close(nll[0, :n], ref[:n], rtol=1e-5, atol=1e-5)
