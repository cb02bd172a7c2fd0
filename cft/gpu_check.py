"""`make gpu-check`: annotate -> CFT -> evaluate a small model on this machine's GPUs under bf16, sdpa and ZeRO-2,
and print wall time, training tokens/s, MFU and peak memory per stage. On a machine without CUDA it says so and
exits 1 without running anything.

    python -m cft.gpu_check [--model Qwen/Qwen2.5-0.5B-Instruct] [--steps 50] [--limit 256] [--no-bench]
                            [--out runs/gpu_check]

The model is the named one when its weights are in the local HF cache, else a tiny random Qwen2 with the arithmetic
world's tokenizer (no download either way). Annotation uses the world's reference solutions (`responses: reference`)
so that a random model still yields rows to train on; the figures are for throughput, not accuracy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

# Dense bf16 tensor-core peak of common training GPUs, in FLOP/s (vendor data sheets, without sparsity).
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A6000": 155e12, "L4": 121e12}


def peak_flops(device_name: str) -> float | None:
    """The GPU's dense bf16 peak, from its name (None when unknown: MFU is then not printed)."""
    for key, flops in PEAK_BF16_FLOPS.items():
        if key in device_name:
            return flops
    return None


def _cached(model: str) -> str | None:
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(model, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached (or no hub client): use the tiny random model
        return None


def _tiny_base(out: Path) -> str:
    from cft.lm.loading import TinyArch, save_tiny_world_model

    path = out / "tiny_base"
    if not (path / "config.json").is_file():
        arch = TinyArch(hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=4, intermediate_size=1536)
        save_tiny_world_model(path, arch)
    return str(path)


def _run(args: list[str]) -> None:
    cmd = [sys.executable, "-m", "cft", *args]
    print("[gpu-check] " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cft.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="Qwen/Qwen2.5-0.5B-Instruct", help="hub id used when it is in the local cache")
    p.add_argument("--steps", type=int, default=50, help="CFT optimizer steps")
    p.add_argument("--limit", type=int, default=256, help="questions annotated, and examples per evaluation split")
    p.add_argument("--no-bench", action="store_true", help="skip the inference-engine benchmark after the stages")
    p.add_argument("--out", default="runs/gpu_check", help="run root of the three stages")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "gpu-check needs a CUDA GPU: torch.cuda.is_available() is False on this machine, so nothing was run. "
            "Run `make gpu-check` on a GPU node (with a CUDA build of torch: make setup TORCH_SPEC=...).",
            file=sys.stderr,
        )
        return 1
    out = Path(args.out)
    base = _cached(args.model) or _tiny_base(out)
    common = ["--run.root", str(out), "--run.experiment", "gpu_check", "--run.wandb_mode", "disabled"]
    common += ["--model.init_args.model.name_or_path", base, "--model.init_args.model.dtype", "bfloat16"]
    common += ["--model.init_args.model.attn_implementation", "sdpa", "--trainer.precision", "bf16-mixed"]
    common += ["--trainer.enable_progress_bar", "false", "--trainer.callbacks+=cft.callbacks.gpu_stats.GPUStats"]
    annotations = out / "gpu_check" / "annotate" / "annotations"
    _run(["predict", "--config", "configs/tiny/annotate.yaml", *common, "--run.name", "annotate",
          "--trainer.accelerator", "gpu", "--trainer.devices", "1", "--data.init_args.responses", "reference",
          "--data.init_args.limit", str(args.limit)])  # fmt: skip
    _run(["fit", "--config", "configs/tiny/cft.yaml", "--config", "configs/strategy/deepspeed_zero2.yaml", *common,
          "--run.name", "cft", "--trainer.devices", "-1", "--trainer.max_steps", str(args.steps),
          "--trainer.max_epochs", "-1", "--data.init_args.annotations", str(annotations),
          "--trainer.val_check_interval", str(args.steps), "--trainer.check_val_every_n_epoch", "null"])  # fmt: skip
    _run(["test", "--config", "configs/tiny/eval.yaml", *common, "--run.name", "eval", "--trainer.accelerator", "gpu",
          "--trainer.devices", "1", "--model.init_args.model.name_or_path", str(out / "gpu_check/cft/hf/last"),
          "--data.init_args.limit", str(args.limit)])  # fmt: skip
    print(f"\n{'stage':<10}{'wall s':>9}{'train tok/s':>13}{'MFU':>8}{'peak GiB':>10}  device")
    for stage in ("annotate", "cft", "eval"):
        s = json.loads((out / "gpu_check" / stage / "gpu_stats.json").read_text())
        tps, flops = s["train_tokens_per_s"], peak_flops(s["device"])
        mfu = 6 * s["n_params"] * tps / (flops * s["world_size"]) if tps and flops and s["n_params"] else None
        print(
            f"{stage:<10}{s['wall_s']:>9.1f}{tps or float('nan'):>13.0f}{(mfu or float('nan')) * 100:>7.1f}%"
            f"{s['peak_memory_gib_rank0'] or float('nan'):>10.2f}  {s['device']} x {s['world_size']}"
        )
    print("MFU: 6 x parameters x training tokens/s over the GPUs' dense bf16 peak (attention FLOPs not counted).")
    # The inference engines on this GPU: rollout tokens/s against plain generate, and bf16 vs fp32 agreement.
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_engines.py"
    if bench.is_file() and not args.no_bench:
        subprocess.run([sys.executable, str(bench), "--size", "0.5b", "--device", "cuda", "--dtype", "bfloat16",
                        "--engines", "hf", "hf-graphs", "continuous", "--examples", "8", "--prompt-len", "128",
                        "--response-len", "64", "--rollout-tokens", "64", "--batch-size", "256"], check=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
