"""GRPO step time: our Lightning module against TRL's GRPOTrainer, same tiny model and settings, in one process.

    python benchmarks/bench_grpo.py [--rounds 6] [--prompts 4] [--generations 8] [--max-new-tokens 32]
                                    [--iterations 2] [--repeats 2] [--threads 1] [--device cpu]

A round = sample G completions for each of the batch's prompts, reward them, and take `iterations` optimizer steps
(TRL: per_device_train_batch_size = prompts x G, steps_per_generation = 1, num_iterations = iterations, beta = 0,
loss "dapo" = our token-mean, no vLLM). The first round of each run is a warm-up and is not timed; runs alternate
(ours, TRL, ours, TRL, ...) so drift on a shared machine hits both. Prints the median seconds per round and the ratio
TRL / ours (>= 1.0: ours is at least as fast). Completion lengths are printed too: a random-init model rarely stops
early, so both sides generate close to the limit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L  # noqa: E402
import torch  # noqa: E402

from cft.data.prompts import PromptDataModule  # noqa: E402
from cft.lm.loading import ModelConfig, TinyArch, save_tiny_world_model  # noqa: E402
from cft.modules.grpo import GRPO  # noqa: E402
from cft.tasks import ArithmeticTask, PlainTemplate  # noqa: E402


def digit_reward(completions: list, answers: list | None = None, **kwargs) -> list[float]:
    """A cheap reward with some signal on a random model (grading cost is not what is measured)."""
    return [float(str(c)[:1].isdigit()) for c in completions]


def trl_digit_reward(prompts: list, completions: list, **kwargs) -> list[float]:
    return digit_reward(completions)


class _RoundTimer(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self.lengths: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._t)
        self.lengths.append(float(trainer.callback_metrics.get("rl/completions/mean_length", float("nan"))))


def run_ours(model_dir: Path, args: argparse.Namespace) -> tuple[list[float], list[float]]:
    module = GRPO(
        model=ModelConfig(name_or_path=str(model_dir)),
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-5, weight_decay=0.0),
        reward_funcs=[digit_reward],
        num_generations=args.generations,
        max_new_tokens=args.max_new_tokens,
        temperature=1.0,
        num_iterations=args.iterations,
        beta=0.0,
        loss_agg="token-mean",
        max_grad_norm=1.0,
        generation_batch_size=args.prompts * args.generations,
        val_max_new_tokens=0,
    )
    data = PromptDataModule(ArithmeticTask(), PlainTemplate(), batch_size=args.prompts, n_val=1)
    data.tokenizer, module.tasks = module.tokenizer, data.tasks  # what python -m cft connects
    timer = _RoundTimer()
    trainer = L.Trainer(
        accelerator=args.device,
        devices=1,
        max_steps=args.rounds * args.iterations,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(module, datamodule=data)
    return timer.times[1:], timer.lengths[1:]


def run_trl(model_dir: Path, args: argparse.Namespace, out_dir: str) -> tuple[list[float], list[float]]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    template = PlainTemplate()
    prompts = [{"prompt": template.render(p.question)} for p in ArithmeticTask().problems("train")]
    times: list[float] = []
    lengths: list[float] = []
    start: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if state.global_step % args.iterations == 0:  # a new round: TRL generates at this step
                start.append(time.perf_counter())

        def on_step_end(self, a, state, control, **kw):
            if state.global_step % args.iterations == 0:
                if args.device == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start[-1])

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                lengths.append(float(logs["completions/mean_length"]))

    config = GRPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=args.prompts * args.generations,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_generations=args.generations,
        max_completion_length=args.max_new_tokens,
        num_iterations=args.iterations,
        beta=0.0,
        loss_type="dapo",
        learning_rate=1e-5,
        weight_decay=0.0,
        lr_scheduler_type="constant",
        max_grad_norm=1.0,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        max_steps=args.rounds * args.iterations,
        logging_steps=args.iterations,
        save_strategy="no",
        report_to="none",
        use_cpu=args.device == "cpu",
        bf16=False,
        dataloader_num_workers=0,
        seed=0,
        disable_tqdm=True,
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[trl_digit_reward],
        args=config,
        train_dataset=Dataset.from_list(prompts),
        processing_class=tok,
        callbacks=[Timer()],
    )
    trainer.train()
    return times[1:], lengths[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="rounds per run (the first is a warm-up)")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per round")
    parser.add_argument("--generations", type=int, default=8, help="completions per prompt (G)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="completion length limit")
    parser.add_argument("--iterations", type=int, default=2, help="optimizer steps per round (mu)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a shared CPU)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--arch", default="128x4", help="tiny model: hidden x layers (the tiny world's base is 128x4)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    hidden, layers = (int(x) for x in args.arch.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        arch = TinyArch(hidden_size=hidden, num_layers=layers, intermediate_size=3 * hidden)
        save_tiny_world_model(model_dir, arch, cache_dir=Path(tmp) / "tok")
        from transformers import AutoModelForCausalLM

        n_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir).parameters())
        ours: list[float] = []
        trl: list[float] = []
        ours_len: list[float] = []
        trl_len: list[float] = []
        for r in range(args.repeats):
            t, n = run_ours(model_dir, args)
            ours += t
            ours_len += n
            t, n = run_trl(model_dir, args, str(Path(tmp) / f"trl{r}"))
            trl += t
            trl_len += n
    print()
    print(f"GRPO step time, tiny Qwen2 {hidden}x{layers} ({n_params / 1e6:.2f}M params) on {args.device} "
          f"({args.threads} thread(s)); {args.prompts} prompts x G={args.generations}, max_new_tokens="
          f"{args.max_new_tokens}, num_iterations={args.iterations}, {args.rounds - 1} timed rounds x {args.repeats} runs")  # fmt: skip
    med_ours, med_trl = statistics.median(ours), statistics.median(trl)
    print(f"  cft GRPO    : {med_ours:.3f} s/round (median of {len(ours)}; mean completion {_mean(ours_len):.1f} tok)")
    print(f"  TRL GRPO    : {med_trl:.3f} s/round (median of {len(trl)}; mean completion {_mean(trl_len):.1f} tok)")
    print(f"  ratio TRL/cft: {med_trl / med_ours:.2f} (>= 1.0: cft at least as fast)")
    per_tok = (med_trl / _mean(trl_len)) / (med_ours / _mean(ours_len))
    print(f"  ratio per generated token (lengths differ by sampling): {per_tok:.2f}")


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if x == x]
    return sum(xs) / len(xs) if xs else float("nan")


if __name__ == "__main__":
    main()
