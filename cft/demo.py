"""`make demo`: the embedded world end to end on CPU — pretrain, evaluate, SFT, annotate, CFT, compare, GRPO.

Each stage is the ordinary CLI command (printed before it runs), so the demo doubles as a walkthrough. Stages
whose outputs already exist are skipped (delete `runs/demo` to start over); `--stages` picks a subset.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from cft.compare import compare, read_curves
from cft.data.annotation_format import is_complete
from cft.threads import set_torch_threads

ROOT = "runs"
EXP = "demo"
CONFIGS = "configs/tiny"
# --world: where the configs live and the experiment the runs go to (the arithmetic world keeps runs/demo).
WORLDS = {"testbed": ("configs/testbed", "demo-testbed"), "arithmetic": ("configs/tiny", "demo")}


def _run_dir(name: str) -> Path:
    return Path(ROOT) / EXP / name


def _cli(args: list[str], log: Path) -> None:
    cmd = [sys.executable, "-m", "cft", *args, "--run.root", ROOT, "--run.experiment", EXP]
    print(f"\n$ python -m cft {shlex.join(cmd[3:])}", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "TERM": "dumb"})
    print(f"  ({time.time() - t0:.0f} s, log: {log})", flush=True)
    if proc.returncode != 0:
        print(log.read_text()[-3000:], file=sys.stderr)
        raise SystemExit(f"demo stage failed: python -m cft {shlex.join(args)}")


def fit(name: str, config: str, *overrides: str, method: str | None = None) -> Path:
    """Train run `name` unless its final export exists; `method` names it in the comparison table."""
    run = _run_dir(name)
    if (run / "hf" / "last" / "config.json").is_file():
        print(f"\n[skip] {name}: {run}/hf/last exists")
    else:
        tags = ["--run.method", method or name]
        _cli(
            ["fit", "--config", config, "--run.name", name, *tags, *overrides],
            Path(ROOT) / EXP / "logs" / f"{name}.log",
        )
    return run


def evaluate(name: str, model_dir: Path, *overrides: str) -> Path:
    """Evaluate `model_dir` as run `eval-<name>` unless its metrics.json exists; returns the run dir."""
    run = _run_dir(f"eval-{name}")
    if (run / "metrics.json").is_file():
        print(f"\n[skip] eval-{name}: {run}/metrics.json exists")
    else:
        _cli(
            [
                "test",
                "--config",
                f"{CONFIGS}/eval.yaml",
                "--run.name",
                f"eval-{name}",
                "--model.init_args.model.name_or_path",
                str(model_dir),
                *overrides,
            ],
            Path(ROOT) / EXP / "logs" / f"eval-{name}.log",
        )
    return run


def annotate(model_dir: Path, *overrides: str) -> Path:
    run = _run_dir("annotate")
    out = run / "annotations"
    if is_complete(out):
        print(f"\n[skip] annotate: {out} is complete")
    else:
        _cli(
            [
                "predict",
                "--config",
                f"{CONFIGS}/annotate.yaml",
                "--run.name",
                "annotate",
                "--model.init_args.model.name_or_path",
                str(model_dir),
                *overrides,
            ],
            Path(ROOT) / EXP / "logs" / "annotate.log",
        )
    return out


def _curve(metrics_csv: Path) -> list[tuple]:
    """(step, val/acc, mean rl/entropy, mean rl/reward_mean) at each validation, the means over the rounds since the
    previous validation, from the run's metrics.csv."""
    curves = read_curves(metrics_csv)
    out, ent, rew = [], [], []
    for step, r in curves.iterrows():
        if not math.isnan(r.get("rl/entropy", math.nan)):
            ent.append(float(r["rl/entropy"]))
            rew.append(float(r.get("rl/reward_mean", 0.0)))
        if not math.isnan(r.get("val/acc", math.nan)):
            h = sum(ent) / len(ent) if ent else math.nan
            m = sum(rew) / len(rew) if rew else math.nan
            out.append((int(step), f"{float(r['val/acc']):.3f}", f"{h:.3f}", f"{m:.2f}"))
            ent, rew = [], []
    return out


def table(runs: list[Path]) -> str:
    """The comparison of the trained and evaluated models (`python -m cft.compare`), written to runs/demo/compare/."""
    out = Path(ROOT) / EXP / "compare"
    print(f"\n$ python -m cft.compare {' '.join(map(str, runs))} --out {out}", flush=True)
    compare([str(r) for r in runs], out)
    return (out / "summary.md").read_text()


def fast_annotation(world: str) -> list[str]:
    """The annotation overrides of `--fast`: rank-3 rollouts only where rank 2 left the verdict open (the mask is the
    same, see ScorerSettings.skip_decided_rollouts) and, in the testbed world, the first 200 of its 400 questions."""
    out = ["--model.init_args.settings.skip_decided_rollouts", "true"]
    return out + (["--data.init_args.limit", "200"] if world == "testbed" else [])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--stages", default="pretrain,sft,annotate,cft,study,grpo", help="comma-separated subset")
    p.add_argument(
        "--fast",
        action="store_true",
        help="smaller eval sets (200 problems per split); annotation skips decided rollouts (same masks) and, in the "
        "testbed world, annotates 200 of its 400 questions",
    )
    p.add_argument(
        "--world",
        choices=sorted(WORLDS),
        default="testbed",
        help="arithmetic: the bare world of the tests (configs/tiny; ~10-15 min); testbed: paraphrase-rich word "
        "problems where CFT's premise can be seen (cft/tasks/testbed.py; with --fast 11.6 min on 2 quiet cores, 18 on "
        "one)",
    )
    args = p.parse_args(argv)
    global CONFIGS, EXP
    CONFIGS, EXP = WORLDS[args.world]
    stages = set(args.stages.split(","))
    os.environ.setdefault("WANDB_MODE", "offline")
    # Every stage's `python -m cft` sizes torch's thread pool the same way (cft.threads).
    print(f"[demo] {set_torch_threads()} torch threads per stage (override: CFT_NUM_THREADS)", flush=True)
    t0 = time.time()
    limit = ["--data.init_args.limit", "200"] if args.fast else []
    ann_fast = fast_annotation(args.world) if args.fast else []
    # Training and evaluation runs, paired by the comparison through the training run's run.method and seed.
    runs: list[Path] = []

    pretrain = fit("pretrain", f"{CONFIGS}/pretrain.yaml", method="base")
    if args.world == "testbed":
        # The testbed base is pretrained in two stages (configs/testbed/pretrain_continue.yaml says why).
        stage1 = ["--model.init_args.model.name_or_path", str(pretrain / "hf" / "last")]
        more = ["--config", f"{CONFIGS}/pretrain_continue.yaml", *stage1]
        pretrain = fit("pretrain2", f"{CONFIGS}/pretrain.yaml", *more, method="base")
    base = pretrain / "hf" / "last"
    runs += [pretrain, evaluate("base", base, *limit)]
    if "sft" in stages:
        sft = fit("sft", f"{CONFIGS}/sft.yaml", "--model.init_args.model.name_or_path", str(base), method="sft-ref")
        runs += [sft, evaluate("sft", sft / "hf" / "best", *limit)]
    if "annotate" in stages or "cft" in stages:
        ann = annotate(base, *ann_fast)
        meta = json.loads((ann / "metadata.json").read_text())
        counts = meta["counts"]
        by_class = ", ".join(
            f"{name} {c['critical_fraction']:.2f} ({c['tokens']} tokens)"
            for name, c in counts["by_class"].items()
            if c["tokens"]
        )
        print(
            f"\nannotation: kept {counts['kept']} of {counts['questions']} questions; "
            f"critical fraction {counts['critical_fraction']:.3f} of scored tokens; by class: {by_class}"
        )
    if "cft" in stages:
        common = ["--model.init_args.model.name_or_path", str(base), "--data.init_args.annotations", str(ann)]
        all_tokens = ["--data.init_args.selector", "cft.selectors.AllTokens"]
        sft_c = fit("sft-dcorrect", f"{CONFIGS}/cft.yaml", *common, *all_tokens, method="sft")
        runs += [sft_c, evaluate("sft-dcorrect", sft_c / "hf" / "best", *limit)]
        cft = fit("cft", f"{CONFIGS}/cft.yaml", *common)
        runs += [cft, evaluate("cft", cft / "hf" / "best", *limit)]
    if "study" in stages and "cft" in stages:
        # The baselines on the same rows, one seed (the full 3-seed study: configs/experiments/tiny_study.yaml).
        for method, sel in [
            ("random", "cft.selectors.RandomTokens"),
            ("entropy", "cft.selectors.EntropyTokens"),
            ("numeric", "cft.selectors.NumericTokens"),
        ]:
            run = fit(method, f"{CONFIGS}/cft.yaml", *common, "--data.init_args.selector", sel)
            runs += [run, evaluate(method, run / "hf" / "best", *limit)]
        dft = ["--model.init_args.weighting", "cft.modules.weighting.DFTWeighting"]
        run = fit("dft", f"{CONFIGS}/cft.yaml", *common, *all_tokens, *dft)
        runs += [run, evaluate("dft", run / "hf" / "best", *limit)]
    print("\n" + table(runs))
    study = (
        "5-seed results: docs/results/testbed/README.md"
        if args.world == "testbed"
        else "3-seed results: docs/results/README.md"
    )
    print(f"(one seed, so differences of a few points are noise; {study})")
    if "grpo" in stages and "cft" in stages:
        curves = {}
        for name, init in (("grpo-from-sft", sft_c), ("grpo-from-cft", cft)):
            run = fit(
                name,
                f"{CONFIGS}/grpo.yaml",
                "--model.init_args.model.name_or_path",
                str(init / "hf" / "best"),
                "--trainer.max_steps",
                "40",
                "--trainer.val_check_interval",
                "10",
                "--data.init_args.n_val",
                "100",
            )
            curves[name] = _curve(run / "metrics.csv")
        print("\nGRPO (40 steps of 8 prompts x 8 samples): step, greedy val acc, policy entropy, reward")
        for name, rows in curves.items():
            print(f"  {name}: " + "  ".join(f"[{s}: acc {a}, H {h}, r {r}]" for s, a, h, r in rows))
    print(f"\ndemo finished in {(time.time() - t0) / 60:.1f} min; runs under {Path(ROOT) / EXP}")


if __name__ == "__main__":
    main()
