"""Training throughput of the SFT learner (Lightning) against TRL's SFTTrainer: same tiny model, data, batch, steps.

    python benchmarks/bench_sft.py [--steps 60] [--batch 32] [--warmup 5]

Both train with completion-only loss on the same (prompt, completion) rows of the arithmetic world, from the same
initial weights, fp32 on CPU, in this one process (run one after the other, then again in the other order).
Tokens/s counts real (non-pad) tokens of the rows each trainer consumed in the timed steps.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build(tmp: str):
    from cft.lm.loading import save_tiny_world_model

    return save_tiny_world_model(tmp)


def rows(n: int):
    from cft.tasks import ArithmeticTask
    from cft.tasks.templates import PlainTemplate

    probs = ArithmeticTask().problems("train")[:n]
    return [PlainTemplate().render(p.question) for p in probs], [p.solution for p in probs]


def run_ours(model_dir: str, n_rows: int, steps: int, batch: int, warmup: int) -> dict:
    import lightning as L

    from cft.data import TrainDataModule
    from cft.lm.loading import ModelConfig
    from cft.modules import TokenWeightedLearner
    from cft.tasks import ArithmeticTask

    class Timer(L.Callback):
        def __init__(self):
            self.t0, self.tokens, self.rows = None, 0, 0

        def on_train_batch_start(self, trainer, pl_module, batch_, batch_idx):
            if batch_idx == warmup:
                self.t0 = time.perf_counter()
            if batch_idx >= warmup:
                self.tokens += int(batch_["attention_mask"].sum())
                self.rows += batch_["input_ids"].shape[0]

        def on_train_end(self, trainer, pl_module):
            self.dt = time.perf_counter() - self.t0

    timer = Timer()
    module = TokenWeightedLearner(
        ModelConfig(name_or_path=model_dir),
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-4),
        val_max_new_tokens=0,
    )
    data = TrainDataModule(ArithmeticTask(n_train=n_rows), micro_batch_size=batch, n_val=8)
    data.tokenizer, module.tasks = module.tokenizer, data.tasks  # what python -m cft connects
    with tempfile.TemporaryDirectory() as root:
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=warmup + steps,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[timer],
            default_root_dir=root,
        )
        trainer.fit(module, datamodule=data)
    return {
        "tokens_per_s": timer.tokens / timer.dt,
        "rows_per_s": timer.rows / timer.dt,
        "s_per_step": timer.dt / steps,
    }


def run_trl(model_dir: str, n_rows: int, steps: int, batch: int, warmup: int) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    prompts, completions = rows(n_rows)
    tok = AutoTokenizer.from_pretrained(model_dir)
    ds = Dataset.from_dict({"prompt": prompts, "completion": completions})

    class Timer(TrainerCallback):
        def __init__(self):
            self.t0, self.step = None, 0

        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == warmup and self.t0 is None:
                self.t0 = time.perf_counter()

        def on_train_end(self, args, state, control, **kw):
            self.dt = time.perf_counter() - self.t0

    timer = Timer()
    with tempfile.TemporaryDirectory() as out:
        cfg = SFTConfig(
            output_dir=out,
            per_device_train_batch_size=batch,
            max_steps=warmup + steps,
            learning_rate=1e-4,
            completion_only_loss=True,
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            use_cpu=True,
            dataloader_num_workers=0,
            max_length=256,
            bf16=False,
            fp16=False,
        )
        trainer = SFTTrainer(
            model=AutoModelForCausalLM.from_pretrained(model_dir),
            args=cfg,
            train_dataset=ds,
            processing_class=tok,
            callbacks=[timer],
        )
        lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
        trainer.train()
    mean_len = sum(lengths) / len(lengths)
    rows_done = steps * batch
    return {
        "tokens_per_s": rows_done * mean_len / timer.dt,
        "rows_per_s": rows_done / timer.dt,
        "s_per_step": timer.dt / steps,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rows", type=int, default=2000)
    a = p.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as model_dir:
        build(model_dir)
        res = {"ours": [], "trl": []}
        for order in (("ours", "trl"), ("trl", "ours")):
            for who in order:
                fn = run_ours if who == "ours" else run_trl
                res[who].append(fn(model_dir, a.rows, a.steps, a.batch, a.warmup))
    for who, rs in res.items():
        tps = [r["tokens_per_s"] for r in rs]
        print(f"{who:>5}: tokens/s {' / '.join(f'{t:,.0f}' for t in tps)}  s/step {rs[0]['s_per_step']:.3f}")
    ours = sum(r["tokens_per_s"] for r in res["ours"]) / 2
    trl = sum(r["tokens_per_s"] for r in res["trl"]) / 2
    print(
        f"RESULT sft tokens/s: cft {ours:,.0f} vs TRL SFTTrainer {trl:,.0f} -> ratio {ours / trl:.2f} "
        f"(batch {a.batch}, {a.steps} timed steps, {torch.get_num_threads()} threads)"
    )


if __name__ == "__main__":
    main()
