"""GRPO: advantages and the clipped loss against hand computation, KL zero at init, reward rises on a trivial task,
exact resume mid-run, bad input as one clear error, and ZeRO-3 generation with 2 CPU ranks (slow)."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from cft.cli import main
from cft.errors import RewardError
from cft.modules.grpo_objective import aggregate_loss, clipped_surrogate, group_advantages
from cft.modules.rewards import compute_rewards, format_reward
from tests.helpers import REPO, run_cli

CONFIG = REPO / "configs/tiny/grpo.yaml"
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


# -- reward functions used through the CLI (import paths tests.test_grpo.*) ----------------------------------------
def starts_with_digit(completions: list[str], answers: list[str], **kwargs) -> list[float]:
    """The trivial task: 1 when the completion's first character is a digit."""
    return [float(c[:1].isdigit()) for c in completions]


def broken_reward(completions: list[str], answers: list[str], **kwargs) -> list[float]:
    raise KeyError("no such field")


def grpo_args(model_dir, root, name: str = "g", steps: int = 3, extra: list[str] | None = None) -> list[str]:
    """CLI args for a few tiny GRPO rounds (steps = optimizer steps): 2 prompts x 4 completions of <= 6 tokens."""
    return [
        "fit",
        "--config", str(CONFIG),
        "--model.init_args.model.name_or_path", str(model_dir),
        "--run.root", str(root),
        "--run.name", name,
        "--run.experiment", "exp",
        "--run.wandb_mode", "disabled",
        "--trainer.max_steps", str(steps),
        "--trainer.val_check_interval", str(steps),
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--model.init_args.num_generations", "4",
        "--model.init_args.max_new_tokens", "6",
        "--model.init_args.val_max_new_tokens", "6",
        "--model.init_args.lr_schedule.warmup_steps", "0",
        "--trainer.callbacks.init_args.every_n_rounds", "1",
        "--data.init_args.batch_size", "2",
        "--data.init_args.max_prompts", "16",
        "--data.init_args.n_val", "4",
        *(extra or []),
    ]  # fmt: skip


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _series(rows, key) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key)]


# -- the objective against hand computation ------------------------------------------------------------------------
def test_group_advantages_match_hand_computation():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 3.0]])
    std0 = math.sqrt((4 * 0.25) / 3)  # unbiased std of [1, 0, 0, 1]
    std2 = math.sqrt((3 * 0.75**2 + 2.25**2) / 3)
    expected = torch.tensor(
        [
            [0.5 / (std0 + 1e-4), -0.5 / (std0 + 1e-4), -0.5 / (std0 + 1e-4), 0.5 / (std0 + 1e-4)],
            [0.0, 0.0, 0.0, 0.0],  # no signal in a group whose rewards are all equal
            [-0.75 / (std2 + 1e-4)] * 3 + [2.25 / (std2 + 1e-4)],
        ]
    )
    torch.testing.assert_close(group_advantages(rewards, "group"), expected)
    centred = torch.tensor([[0.5, -0.5, -0.5, 0.5], [0.0] * 4, [-0.75, -0.75, -0.75, 2.25]])
    torch.testing.assert_close(group_advantages(rewards, "none"), centred)
    torch.testing.assert_close(group_advantages(rewards, "batch"), centred / (rewards.std() + 1e-4))


def test_clipped_surrogate_matches_hand_computation():
    eps_low, eps_high = 0.2, 0.3
    ratios = [1.0, 1.5, 1.5, 0.5, 0.5, 1.1]
    advs = [2.0, 1.0, -1.0, -1.0, 1.0, -2.0]
    old = torch.full((6,), -1.0)
    logp = old + torch.log(torch.tensor(ratios))
    out = clipped_surrogate(logp.view(1, 6), old.view(1, 6), torch.tensor(advs).view(1, 6), eps_low, eps_high)
    expected, low, high = [], [], []
    for r, a in zip(ratios, advs):
        clipped = min(max(r, 1 - eps_low), 1 + eps_high)
        expected.append(-min(r * a, clipped * a))
        low.append(r < 1 - eps_low and a < 0)
        high.append(r > 1 + eps_high and a > 0)
    # by hand: 1.0*2 -> -2; 1.5 clipped to 1.3 (A>0) -> -1.3; 1.5 with A<0 stays -> 1.5; 0.5 clipped to 0.8 (A<0)
    # -> 0.8; 0.5 with A>0 stays -> -0.5; 1.1 inside the range -> 2.2
    torch.testing.assert_close(out["loss"].flatten(), torch.tensor([-2.0, -1.3, 1.5, 0.8, -0.5, 2.2]))
    torch.testing.assert_close(out["loss"].flatten(), torch.tensor(expected))
    assert out["low"].flatten().tolist() == low == [False, False, False, True, False, False]
    assert out["high"].flatten().tolist() == high == [False, True, False, False, False, False]
    # gradient: zero where clipped, -A * ratio elsewhere (d ratio / d logp = ratio)
    logp.requires_grad_(True)
    out = clipped_surrogate(logp.view(1, 6), old.view(1, 6), torch.tensor(advs).view(1, 6), eps_low, eps_high)
    out["loss"].sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([-2.0, 0.0, 1.5, 0.0, -0.5, 2.2]))


def test_k3_kl_and_loss_aggregation_match_hand_computation():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.0, -1.0, -1.5], [-2.0, -1.0, -1.0]])
    out = clipped_surrogate(logp, logp, torch.tensor([1.0, -1.0]), 0.2, 0.2, ref_logp=ref, beta=0.5)
    # k3 = e^d - d - 1 with d = ref - logp = [[0, 1, -1], [-1, 0, 0]]: e - 2 at d = 1, 1/e at d = -1, 0 at d = 0
    e = math.e
    torch.testing.assert_close(out["kl"], torch.tensor([[0.0, e - 2, 1 / e], [1 / e, 0.0, 0.0]]))
    # ratio 1: the surrogate is -A per token, plus beta * kl
    torch.testing.assert_close(out["loss"], -torch.tensor([[1.0], [-1.0]]) + 0.5 * out["kl"])

    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert float(aggregate_loss(per_token, mask, "token-mean", 3.0)) == pytest.approx((1 + 2 + 4) / 3)
    assert float(aggregate_loss(per_token, mask, "seq-mean-token-sum", 2.0)) == pytest.approx((3 + 4) / 2)
    assert float(aggregate_loss(per_token, mask, "seq-mean-token-mean", 2.0)) == pytest.approx((1.5 + 4) / 2)


def test_rewards_combine_with_weights_and_a_raising_function_is_named():
    total, per_fn = compute_rewards(
        [starts_with_digit, format_reward], [1.0, 0.5], ["1 + 2 = 3\n#### 3", "no answer"], ["3", "3"]
    )
    assert total == [1.5, 0.0] and per_fn == {"starts_with_digit": [1.0, 0.0], "format_reward": [1.0, 0.0]}
    with pytest.raises(RewardError, match="reward function 'broken_reward' raised KeyError"):
        compute_rewards([broken_reward], [1.0], ["x"], ["1"])
    with pytest.raises(RewardError, match="returned 1 rewards for 2 completions"):
        compute_rewards([lambda c, a, **k: [1.0]], [1.0], ["x", "y"], ["1", "2"])


def test_training_logprobs_are_the_samplers(tiny_model_dir):
    """The ratio's denominator: log-probs from the training forward (left-padded prompts, completions with EOS,
    temperature) equal those the sampler drew each token with."""
    from cft.lm.generation import Generation, left_pad
    from cft.lm.loading import ModelConfig
    from cft.modules.grpo import GRPO

    module = GRPO(ModelConfig(name_or_path=str(tiny_model_dir)), num_generations=2, temperature=0.7)
    module.configure_model()
    tok, model = module.tokenizer, module.model
    prompts = [tok(q)["input_ids"] for q in ("Question: Compute 1 + 2.\nAnswer:\n", "Compute 3 * 4 - 5 + 6.\n")]
    ids, mask = left_pad(prompts, tok.pad_token_id)
    torch.manual_seed(0)
    out = model.eval().generate(
        input_ids=ids, attention_mask=mask, do_sample=True, temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=24,
        return_dict_in_generate=True, output_scores=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    new = out.sequences[:, ids.shape[1] :]
    sampler = torch.stack(out.scores, 1).log_softmax(-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
    gens = []
    for row in new.tolist():
        n = row.index(tok.eos_token_id) if tok.eos_token_id in row else len(row)
        gens.append(Generation(token_ids=row[:n], text="", finished=n < len(row)))
    logp, _, _ = module.completion_logps(model.train(), module.build_rollout(prompts, gens), torch.arange(2))
    for i, g in enumerate(gens):
        k = len(g.token_ids) + int(g.finished)
        torch.testing.assert_close(logp[i, :k], sampler[i, :k], rtol=0, atol=1e-4)


@pytest.mark.parametrize("engine", ["hf", "continuous"])
def test_engine_samples_and_trainer_logprobs_agree(tiny_model_dir, engine):
    """GRPO samples through the engine; the old log-probs the trainer recomputes for those samples equal the
    log-probs the engine drew them with (fp32), for the HF engine and for continuous batching alike."""
    from cft.lm.engines import SamplingParams
    from cft.lm.loading import ModelConfig
    from cft.modules.grpo import GRPO

    module = GRPO(ModelConfig(name_or_path=str(tiny_model_dir)), num_generations=2, temperature=0.7, engine=engine)
    module.configure_model()
    tok, model = module.tokenizer, module.model
    prompts = [tok(q)["input_ids"] for q in ("Question: Compute 1 + 2.\nAnswer:\n", "Compute 3 * 4 - 5 + 6.\n")]
    params = SamplingParams(max_new_tokens=16, temperature=0.7, n=2, seed=5, return_logprobs=True)
    gens = [g for group in module.generation_engine(8).generate(prompts, params) for g in group]
    assert len(gens) == 4 and all(len(g.logprobs) == len(g.token_ids) for g in gens)
    repeated = [p for p in prompts for _ in range(2)]  # completion j of prompt i sits at i * G + j
    logp, _, _ = module.completion_logps(model.train(), module.build_rollout(repeated, gens), torch.arange(4))
    for i, g in enumerate(gens):
        torch.testing.assert_close(logp[i, : len(g.token_ids)], torch.tensor(g.logprobs), rtol=0, atol=1e-4)


# -- the module through the CLI ------------------------------------------------------------------------------------
def test_fit_logs_rl_metrics_ratio_one_and_kl_zero_at_init(tiny_model_dir, tmp_path):
    main(grpo_args(tiny_model_dir, tmp_path, steps=2, extra=["--model.init_args.beta", "0.1"]))
    run = tmp_path / "exp" / "g"
    rows = _rows(run / "metrics.csv")
    header = set(rows[0])
    for key in ("rl/reward_mean", "rl/reward_std", "rl/frac_reward_zero_std", "rl/entropy", "rl/kl",
                "rl/clip_ratio", "rl/clip_ratio/low", "rl/clip_ratio/high", "rl/completions/mean_length",
                "rl/completions/max_length", "rl/completions/frac_truncated", "val/acc", "val/entropy"):  # fmt: skip
        assert key in header, key
    # Before the first update the policy is the reference and the sampler: KL 0, every ratio exactly 1.
    assert _series(rows, "rl/kl")[0] == 0.0
    assert _series(rows, "rl/ratio") == [1.0, 1.0] and _series(rows, "rl/clip_ratio") == [0.0, 0.0]
    assert 0 < _series(rows, "rl/entropy")[0] <= math.log(len(AutoModelForCausalLM.from_pretrained(run / "hf/last")
                                                              .get_input_embeddings().weight))  # fmt: skip
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 * 2 * 4 and {"prompt", "completion", "reward", "advantage"} <= set(samples[0])
    assert (run / "hf/last/config.json").is_file() and (run / "checkpoints/last.ckpt").is_file()
    ckpt = torch.load(run / "checkpoints/last.ckpt", weights_only=False)
    assert all(k.startswith("model.") for k in ckpt["state_dict"]), "the frozen reference must stay out of checkpoints"


def test_reward_rises_on_a_trivial_task(tiny_model_dir, tmp_path):
    extra = [
        "--model.init_args.reward_funcs", "[tests.test_grpo.starts_with_digit]",
        "--model.init_args.reward_weights", "[1.0]",
        "--model.init_args.num_generations", "8",
        "--model.init_args.max_new_tokens", "1",
        "--model.init_args.optimizer.lr", "0.05",
        "--data.init_args.batch_size", "4",
        "--model.init_args.val_max_new_tokens", "0",
        "--trainer.callbacks.init_args.every_n_rounds", "0",
    ]  # fmt: skip
    main(grpo_args(tiny_model_dir, tmp_path, steps=12, extra=extra))
    reward = _series(_rows(tmp_path / "exp/g/metrics.csv"), "rl/reward_mean")
    assert len(reward) == 12
    assert sum(reward[-3:]) / 3 > sum(reward[:3]) / 3 + 0.3, reward


def test_micro_batches_give_the_same_update_as_one_batch(tiny_model_dir, tmp_path):
    """4 prompts x 8 completions in one backward, or in 8 micro-batches of 4 (gradients accumulated)."""
    extra = ["--model.init_args.reward_funcs", "[tests.test_grpo.starts_with_digit]",
             "--model.init_args.reward_weights", "[1.0]", "--model.init_args.num_generations", "8",
             "--model.init_args.max_new_tokens", "3", "--data.init_args.batch_size", "4",
             "--model.init_args.optimizer", "torch.optim.SGD", "--model.init_args.optimizer.lr", "1.0",
             "--model.init_args.max_grad_norm", "null", "--model.init_args.val_max_new_tokens", "0"]  # fmt: skip
    main(grpo_args(tiny_model_dir, tmp_path, name="one", steps=2, extra=extra))
    main(
        grpo_args(
            tiny_model_dir, tmp_path, name="micro", steps=2, extra=[*extra, "--model.init_args.micro_batch_size", "4"]
        )
    )
    one, micro = _weights(tmp_path / "exp/one/hf/last"), _weights(tmp_path / "exp/micro/hf/last")
    init = _weights(tiny_model_dir)
    assert any(not torch.equal(init[k], one[k]) for k in one)
    for k in one:
        torch.testing.assert_close(one[k], micro[k], rtol=1e-4, atol=1e-6, msg=k)


def _weights(path):
    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def test_resume_mid_run_gives_same_weights(tiny_model_dir, tmp_path):
    from tests.helpers import SimulatedCrash

    # 2 inner updates per round (ratio against the stored sampling log-probs): max_steps 8 = 4 rounds.
    extra = ["--run.checkpoint_every_n_steps", "1", "--model.init_args.num_iterations", "2",
             "--model.init_args.optimizer.lr", "0.01", "--model.init_args.val_max_new_tokens", "0",
             "--model.init_args.reward_funcs", "[tests.test_grpo.starts_with_digit]",
             "--model.init_args.reward_weights", "[1.0]"]  # fmt: skip
    main(grpo_args(tiny_model_dir, tmp_path / "a", name="r", steps=8, extra=extra))
    crash = ["--trainer.callbacks+=tests.helpers.CrashAtStep", "--trainer.callbacks.step", "4"]
    with pytest.raises(SimulatedCrash):
        main(grpo_args(tiny_model_dir, tmp_path / "b", name="r", steps=8, extra=extra + crash))
    assert torch.load(tmp_path / "b/exp/r/checkpoints/last.ckpt", weights_only=False)["global_step"] == 2
    main(grpo_args(tiny_model_dir, tmp_path / "b", name="r", steps=8, extra=extra))
    a, b = _weights(tmp_path / "a/exp/r/hf/last"), _weights(tmp_path / "b/exp/r/hf/last")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=f"{k} differs after resume")
    init = _weights(tiny_model_dir)
    assert any(not torch.equal(init[k], a[k]) for k in a)
    ra, rb = _rows(tmp_path / "a/exp/r/metrics.csv"), _rows(tmp_path / "b/exp/r/metrics.csv")
    last = {r["step"]: r for r in rb}  # readers keep the last row per step
    for r in ra:
        if r.get("rl/reward_mean"):
            assert last[r["step"]]["rl/reward_mean"] == r["rl/reward_mean"], r["step"]


# -- bad input -----------------------------------------------------------------------------------------------------
def _error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, lines
    return lines[0]


def test_checkpoint_dir_that_is_not_a_causal_lm_is_one_clear_error(tmp_path, world_tokenizer, capsys):
    from transformers import ViTConfig, ViTModel

    vit = tmp_path / "vit"
    ViTModel(
        ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    ).save_pretrained(vit)
    world_tokenizer.save_pretrained(vit)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "config.json").write_text("{not json")
    world_tokenizer.save_pretrained(garbage)
    for bad in (vit, garbage):
        with pytest.raises(SystemExit) as e:
            main(grpo_args(bad, tmp_path / "runs", steps=1))
        assert e.value.code == 2
        line = _error_line(capsys)
        assert str(bad) in line and ("could not be loaded" in line or "not a causal LM" in line), line


def test_fewer_than_two_generations_is_one_clear_error(tiny_model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(grpo_args(tiny_model_dir, tmp_path, extra=["--model.init_args.num_generations", "1"]))
    assert e.value.code == 2
    assert "num_generations=1" in _error_line(capsys)


def test_raising_reward_function_is_one_clear_error(tiny_model_dir, tmp_path, capsys):
    extra = ["--model.init_args.reward_funcs", "[tests.test_grpo.broken_reward]", "--model.init_args.reward_weights",
             "[1.0]"]  # fmt: skip
    with pytest.raises(SystemExit) as e:
        main(grpo_args(tiny_model_dir, tmp_path, steps=1, extra=extra))
    assert e.value.code == 2
    line = _error_line(capsys)
    assert "'broken_reward' raised KeyError" in line, line


# -- ZeRO-3: every rank runs the same collectives while generating -------------------------------------------------
@pytest.mark.slow
def test_zero3_two_cpu_ranks_generate_and_train_without_hanging(tiny_model_dir, tmp_path):
    extra = [
        "--config", "configs/strategy/deepspeed_zero3_cpu.yaml",
        "--model.init_args.num_iterations", "2",
        "--model.init_args.beta", "0.05",
        "--model.init_args.max_new_tokens", "12",  # ranks' completions end at different lengths
        "--model.init_args.reward_funcs", "[tests.test_grpo.starts_with_digit]",
        "--model.init_args.reward_weights", "[1.0]",
        "--model.init_args.optimizer.lr", "0.01",
        "--trainer.val_check_interval", "2",
    ]  # fmt: skip
    res = run_cli(grpo_args(tiny_model_dir, tmp_path, name="z3", steps=4, extra=extra), timeout=600, env=ONE_THREAD)
    assert res.returncode == 0, res.stderr[-4000:]
    rows = _rows(tmp_path / "exp/z3/metrics.csv")
    assert len(_series(rows, "rl/reward_mean")) == 2 and len(_series(rows, "val/acc")) == 1
    # The KL to the frozen reference starts at 0 and moves once an update has changed the policy (recorded run:
    # [0.0, 0.0168]; the first round's rewards were all equal, so its advantages and update were zero).
    assert max(_series(rows, "rl/kl")) > 0.0
    trained = _weights(tmp_path / "exp/z3/hf/last")
    init = _weights(tiny_model_dir)
    assert any(not torch.equal(init[k], trained[k]) for k in init)


@pytest.mark.slow
def test_ddp_two_cpu_ranks_micro_batches_give_the_same_update(tiny_model_dir, tmp_path):
    """Under DDP, micro-batches accumulate locally (no_sync) and the token-mean divides by the tokens of all ranks."""
    extra = ["--trainer.strategy", "ddp", "--trainer.devices", "2",
             "--model.init_args.reward_funcs", "[tests.test_grpo.starts_with_digit]",
             "--model.init_args.reward_weights", "[1.0]", "--model.init_args.num_generations", "8",
             "--model.init_args.max_new_tokens", "3", "--data.init_args.batch_size", "4",
             "--model.init_args.optimizer", "torch.optim.SGD", "--model.init_args.optimizer.lr", "1.0",
             "--model.init_args.max_grad_norm", "null", "--model.init_args.val_max_new_tokens", "0"]  # fmt: skip
    for name, more in (("one", []), ("micro", ["--model.init_args.micro_batch_size", "4"])):
        res = run_cli(grpo_args(tiny_model_dir, tmp_path, name=name, steps=2, extra=extra + more), env=ONE_THREAD)
        assert res.returncode == 0, res.stderr[-4000:]
    one, micro = _weights(tmp_path / "exp/one/hf/last"), _weights(tmp_path / "exp/micro/hf/last")
    init = _weights(tiny_model_dir)
    assert any(not torch.equal(init[k], one[k]) for k in one)
    for k in one:
        torch.testing.assert_close(one[k], micro[k], rtol=1e-4, atol=1e-6, msg=k)


def test_options_reach_the_computations_they_name(tiny_model_dir, tmp_path, monkeypatch):
    """Every objective and sampling option set on the command line arrives where it is used, in one round of
    2 prompts x 4 completions: 2 iterations x 2 mini-batches = 4 optimizer steps."""
    import cft.modules.grpo as grpo_mod
    from cft.modules.grpo import GRPO

    seen: dict[str, list] = {"generate": [], "advantages": [], "surrogate": [], "aggregate": [], "clip": []}

    def spy(name, fn, record):
        def wrapped(*args, **kwargs):
            seen[name].append(record(*args, **kwargs))
            return fn(*args, **kwargs)

        monkeypatch.setattr(grpo_mod, fn.__name__, wrapped)  # the name the module calls it by

    spy(
        "generate",
        grpo_mod.SamplingParams,
        lambda **k: {x: k[x] for x in ("temperature", "top_p", "n", "max_new_tokens")},
    )
    spy("advantages", grpo_mod.group_advantages, lambda rewards, scale: (tuple(rewards.shape), scale))
    spy("surrogate", grpo_mod.clipped_surrogate, lambda lp, old, adv, lo, hi, ref_logp, beta: (lo, hi, beta))
    spy("aggregate", grpo_mod.aggregate_loss, lambda terms, mask, mode, denom: (mode, denom))
    build, clip = GRPO.build_rollout, GRPO.clip_gradients
    rollouts = []
    monkeypatch.setattr(
        GRPO, "build_rollout", lambda self, p, gens: rollouts.append((gens, build(self, p, gens))) or rollouts[-1][1]
    )
    monkeypatch.setattr(
        GRPO,
        "clip_gradients",
        lambda self, opt, **k: seen["clip"].append(k["gradient_clip_val"]) or clip(self, opt, **k),
    )
    extra = [
        "--model.init_args.temperature", "0.7", "--model.init_args.top_p", "0.9",
        "--model.init_args.scale_rewards", "batch",
        "--model.init_args.epsilon_low", "0.1", "--model.init_args.epsilon_high", "0.3",
        "--model.init_args.beta", "0.05", "--model.init_args.loss_agg", "seq-mean-token-sum-norm",
        "--model.init_args.num_iterations", "2", "--model.init_args.num_mini_batches", "2",
        "--model.init_args.mask_truncated_completions", "true", "--model.init_args.max_grad_norm", "0.5",
        "--model.init_args.max_new_tokens", "5", "--model.init_args.val_max_new_tokens", "0",
    ]  # fmt: skip
    main(grpo_args(tiny_model_dir, tmp_path, steps=4, extra=extra))
    assert seen["generate"] == [{"temperature": 0.7, "top_p": 0.9, "n": 4, "max_new_tokens": 5}]
    assert seen["advantages"] == [((2, 4), "batch")]
    assert seen["surrogate"] == [(0.1, 0.3, 0.05)] * 4  # one micro-batch per mini-batch, 2 x 2 updates
    # "-norm": a mini-batch's 4 sequences x max_new_tokens 5
    assert seen["aggregate"] == [("seq-mean-token-sum-norm", 20.0)] * 4
    assert seen["clip"] == [0.5] * 4
    ((gens, roll),) = rollouts
    finished = torch.tensor([[float(g.finished)] for g in gens])
    assert not finished.all(), "the test needs a completion cut at max_new_tokens"
    torch.testing.assert_close(roll["loss_mask"], roll["completion_mask"].float() * finished)  # cut ones: no loss
    rows = _rows(tmp_path / "exp/g/metrics.csv")
    assert len(_series(rows, "rl/reward_mean")) == 1 and _series(rows, "rl/kl")  # one round; the KL is measured
