"""Base LightningModule for everything that holds a causal LM: loading, optimiser, schedule, HF export."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable

from cft.errors import ConfigError, ModelLoadError
from cft.lm.engines import InferenceEngine, SamplingParams, build_engine
from cft.lm.generation import Generation
from cft.lm.loading import (
    ModelConfig,
    check_model_files,
    enable_checkpointing,
    load_model,
    load_tokenizer,
    write_tokenizer_fingerprint,
)
from cft.lm.lora import is_lora, merged_state_dict
from cft.modules.schedule import LRSchedule

# Module attributes that are generation budgets in tokens, checked against model.max_length.
_GENERATION_BUDGETS = ("max_new_tokens", "max_rollout_tokens", "val_max_new_tokens")


def _adamw(params) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)


class CausalLMModule(L.LightningModule):
    """Holds `self.model` (an HF causal LM, built in `configure_model` so sharded strategies can wrap it) and
    `self.tokenizer` (loaded at once: the DataModules read it from here).

    Args:
        model: which model and tokenizer to load.
        optimizer: optimiser factory, e.g. `class_path: torch.optim.AdamW` with `init_args: {lr: 1e-5}`.
        lr_schedule: warm-up and decay of the learning rate, in optimizer steps (None: constant, no warm-up).
        gradient_checkpointing: trade compute for memory on large models.
    """

    def __init__(
        self,
        model: ModelConfig,
        optimizer: OptimizerCallable = _adamw,
        lr_schedule: LRSchedule | None = None,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.model_config = model
        self.optimizer_factory = optimizer
        self.lr_schedule = lr_schedule or LRSchedule()
        self.gradient_checkpointing = gradient_checkpointing
        self._tokenizer = None
        self.model: torch.nn.Module | None = None
        # The tasks that grade each dataloader's problems, given by whoever composes the run (`python -m cft` passes
        # the DataModule's `tasks`); the module never reaches into the DataModule for them.
        self.tasks: list[Any] = []
        self.dataloader_names: list[str] = []  # the DataModule's `names`, given the same way (metric keys, files)
        # The DataModule's cap on row length (`data.max_length`), given the same way; checked against model.max_length.
        self.data_max_length: int | None = None

    @property
    def tokenizer(self):
        """The tokenizer, loaded on first use (so a bad path fails inside the run, as one clear error)."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.model_config)
        return self._tokenizer

    def check_inputs(self) -> None:
        """Fail before the run directory exists (the CLI calls this first): the tokenizer and the weight files load,
        and the optimizer accepts its settings (e.g. a negative learning rate)."""
        self.check_lengths()
        self.tokenizer  # noqa: B018 - loading it is the check
        check_model_files(self.model_config)
        try:
            self.optimizer_factory([torch.nn.Parameter(torch.zeros(1))])
        except ValueError as e:  # torch.optim validates lr, betas, eps, weight_decay with ValueError
            raise ConfigError(f"model.optimizer: {e}") from e

    def setup(self, stage: str) -> None:
        # Loaded here rather than in configure_model: Lightning wraps configure_model in deepspeed.zero.Init
        # under ZeRO-3, which breaks HF's from_pretrained weight init; DeepSpeed partitions the full model later.
        self.configure_model()
        if self.uses_deepspeed():
            allow_torch_optimizer_with_offload(self.trainer.strategy.config)
            if is_lora(self.model):  # the engine's checkpoint too holds the adapters only
                self.trainer.strategy.exclude_frozen_parameters = True

    def configure_model(self) -> None:
        if self.model is not None:
            return
        self.check_lengths()
        with self._zero3_init():
            self.model = load_model(self.model_config, self.tokenizer)
        if self.gradient_checkpointing and not self.model_config.gradient_checkpointing:
            enable_checkpointing(self.model)
        if is_lora(self.model):
            # Only the adapters are in the checkpoint (see on_save_checkpoint); the frozen base comes from disk.
            self.strict_loading = False
        self.on_model_loaded()

    @contextmanager
    def _zero3_init(self):
        """Under ZeRO-3, load the weights partitioned as they are read (transformers' DeepSpeed integration runs
        from_pretrained inside deepspeed.zero.Init), so N ranks do not each hold the whole model in host memory.
        Active only while the trained model loads: reference models loaded later stay whole, as they must."""
        if self.zero_stage() != 3:
            yield
            return
        from transformers.integrations import HfDeepSpeedConfig

        keep_alive = HfDeepSpeedConfig(self.trainer.strategy.config)  # transformers holds it by weak reference
        try:
            yield
        finally:
            del keep_alive

    def check_lengths(self) -> None:
        """Raise before loading anything when a stage's rows or generations exceed `model.max_length`."""
        limit = self.model_config.max_length
        if limit is None:
            return
        asked = {f"model.{k}": getattr(self, k, None) for k in _GENERATION_BUDGETS}
        settings = getattr(self, "settings", None)  # the scorer groups its budgets in ScorerSettings
        asked.update({f"model.settings.{k}": getattr(settings, k, None) for k in _GENERATION_BUDGETS})
        asked["data.max_length"] = self.data_max_length
        over = {k: v for k, v in asked.items() if isinstance(v, int) and v > limit}
        if over:
            raise ModelLoadError(
                f"{', '.join(f'{k}={v}' for k, v in over.items())} exceed(s) model.max_length={limit} "
                f"({self.model_config.name_or_path}); lower them or raise model.max_length if the model allows"
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if is_lora(self.model) and "state_dict" in checkpoint:
            trainable = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    def on_model_loaded(self) -> None:
        """Hook for subclasses: runs once, right after the model exists."""

    def training_method(self, datamodule: Any) -> str | None:
        """The training method this module runs with `datamodule` (run.method); None: not a training method."""
        return None

    def configure_optimizers(self) -> dict[str, Any]:
        opt = self.optimizer_factory([p for p in self.parameters() if p.requires_grad])
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer else 1
        sched = self.lr_schedule.build(opt, total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- distributed helpers ----------------------------------------------------------------------------------
    def zero_stage(self) -> int:
        """DeepSpeed ZeRO stage in use (0 when not under DeepSpeed)."""
        strategy = getattr(self.trainer, "strategy", None) if self._trainer else None
        cfg = getattr(strategy, "config", None)
        if cfg is None or "zero_optimization" not in cfg:
            return 0
        return int(cfg["zero_optimization"].get("stage", 0))

    def uses_deepspeed(self) -> bool:
        from lightning.pytorch.strategies import DeepSpeedStrategy

        return self._trainer is not None and isinstance(self.trainer.strategy, DeepSpeedStrategy)

    def synced_generation(self) -> bool:
        """Under ZeRO-3 every rank must run the same number of forward passes while generating."""
        return self.zero_stage() == 3 and self.trainer.world_size > 1

    def generation_engine(self, batch_size: int) -> InferenceEngine:
        """The inference engine named by this module's `engine` setting ("hf" when it has none) over the live
        model: engines generate with the current weights, so nothing needs syncing after an optimizer step (an
        engine with its own copy of the weights, vLLM, syncs in `generate`)."""
        return build_engine(getattr(self, "engine", "hf"), self.model, self.tokenizer, batch_size=batch_size,
                            synced_gpus=self.synced_generation())  # fmt: skip

    # -- greedy validation ------------------------------------------------------------------------------------
    def greedy_graded(
        self,
        prompt_ids: list[list[int]],
        answers: list[str],
        max_new_tokens: int,
        batch_size: int,
        return_entropy: bool = False,
    ) -> tuple[list[Generation], list[float]]:
        """Greedy completions of `prompt_ids` and their grades (1.0/0.0) by the task of dataloader 0."""
        params = SamplingParams(
            max_new_tokens=max_new_tokens,
            return_entropy=return_entropy,
            stop_strings=tuple(self.model_config.stop_strings),
        )
        gens = self.generation_engine(batch_size).generate(prompt_ids, params)
        task = self.task_for(0)
        flat = [g[0] for g in gens]
        return flat, [float(task.grade(g.text, a)) for g, a in zip(flat, answers)]

    def task_for(self, dataloader_idx: int = 0) -> Any:
        """The task that grades dataloader `dataloader_idx` (from `self.tasks`)."""
        if not self.tasks:
            raise RuntimeError(
                f"{type(self).__name__}.tasks is empty: set it to the DataModule's `tasks` (python -m cft does)"
            )
        return self.tasks[dataloader_idx if dataloader_idx < len(self.tasks) else 0]

    # -- export -----------------------------------------------------------------------------------------------
    def save_hf(self, path: str | os.PathLike) -> None:
        """Write a plain HF dir (model + tokenizer) atomically; call on every rank (ZeRO-3 gathers).

        With LoRA the dir holds the merged model (adapters folded into the base weights, loadable by transformers
        and vLLM as is) and `adapter/` the adapters alone (peft's `PeftModel.from_pretrained(base, path/adapter)`).
        """
        path = Path(path)
        ctx = _gathered(self.model) if self.zero_stage() == 3 else nullcontext()
        with ctx:
            if self.global_rank == 0 if self._trainer else True:
                tmp = hf_staging_dir(path)
                try:
                    if is_lora(self.model):
                        self.model.save_pretrained(tmp / "adapter")
                        self.model.get_base_model().save_pretrained(tmp, state_dict=merged_state_dict(self.model))
                    else:
                        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
                        self.model.save_pretrained(tmp, state_dict=state)
                    self.tokenizer.save_pretrained(tmp)
                    write_tokenizer_fingerprint(tmp, self.tokenizer)
                except BaseException:  # a full disk, an interrupt: no half-written export left behind
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
                old = path.with_name(path.name + ".old")
                shutil.rmtree(old, ignore_errors=True)  # left by an export that was killed between the renames
                if path.exists():
                    os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
        if self._trainer is not None:
            self.trainer.strategy.barrier("save_hf")


def hf_staging_dir(path: Path) -> Path:
    """A fresh, empty `.<name>.tmp-<pid>` beside `path` to write an export into before renaming it in place.

    Made with os.mkdir so it gets the umask's permissions (tempfile.mkdtemp makes 0700 dirs, which the rename
    would carry over to hf/best and hf/last); `HFExport` removes the ones a killed run left behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.mkdir(tmp)
    return tmp


def _gathered(model: torch.nn.Module):
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)


def allow_torch_optimizer_with_offload(config: dict) -> None:
    """With ZeRO-Offload DeepSpeed refuses any optimizer but its own CPU Adam unless `zero_force_ds_cpu_optimizer` is
    off; turn it off so the configured torch optimizer (AdamW in every shipped config) steps the offloaded fp32
    weights on the CPU. DeepSpeed's CPU Adam is faster: `--model.init_args.optimizer
    deepspeed.ops.adam.DeepSpeedCPUAdam` (compiled on first use); an explicit setting in the config is kept."""
    offload = (config.get("zero_optimization") or {}).get("offload_optimizer") or {}
    if offload.get("device", "none") not in (None, "none"):
        config.setdefault("zero_force_ds_cpu_optimizer", False)
