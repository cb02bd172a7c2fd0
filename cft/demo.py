"""`make demo`: the embedded world end to end on CPU — pretrain, evaluate, SFT, annotate, CFT, compare, GRPO.

Each stage is the ordinary CLI command (printed before it runs), so the demo doubles as a walkthrough. Stages
whose outputs already exist are skipped (delete `runs/demo` to start over); `--stages` picks a subset.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = "runs"
EXP = "demo"


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


def fit(name: str, config: str, *overrides: str) -> Path:
    run = _run_dir(name)
    if (run / "hf" / "last" / "config.json").is_file():
        print(f"\n[skip] {name}: {run}/hf/last exists")
    else:
        _cli(["fit", "--config", config, "--run.name", name, *overrides], Path(ROOT) / EXP / "logs" / f"{name}.log")
    return run


def evaluate(name: str, model_dir: Path, *overrides: str) -> dict:
    run = _run_dir(f"eval-{name}")
    if not (run / "metrics.json").is_file():
        _cli(
            [
                "test",
                "--config",
                "configs/tiny/eval.yaml",
                "--run.name",
                f"eval-{name}",
                "--model.init_args.model.name_or_path",
                str(model_dir),
                *overrides,
            ],
            Path(ROOT) / EXP / "logs" / f"eval-{name}.log",
        )
    return json.loads((run / "metrics.json").read_text())


def annotate(model_dir: Path, *overrides: str) -> Path:
    run = _run_dir("annotate")
    out = run / "annotations"
    if (out / "metadata.json").is_file() and json.loads((out / "metadata.json").read_text()).get("complete"):
        print(f"\n[skip] annotate: {out} exists")
    else:
        _cli(
            [
                "predict",
                "--config",
                "configs/tiny/annotate.yaml",
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
    """(step, val/acc, mean rl/entropy, mean rl/reward_mean) at each validation, from the run's metrics.csv."""
    import csv

    rows = list(csv.DictReader(open(metrics_csv)))
    out, ent, rew = [], [], []
    for r in rows:
        if r.get("rl/entropy"):
            ent.append(float(r["rl/entropy"]))
            rew.append(float(r.get("rl/reward_mean") or 0))
        if r.get("val/acc"):
            h = sum(ent) / len(ent) if ent else float("nan")
            m = sum(rew) / len(rew) if rew else float("nan")
            out.append((r["step"], f"{float(r['val/acc']):.3f}", f"{h:.3f}", f"{m:.2f}"))
            ent, rew = [], []
    return out


def _fmt(x) -> str:
    return "  -  " if x is None else f"{x:.3f}"


def table(results: dict[str, dict], extra: dict[str, dict]) -> str:
    cols = ["eval/test/acc", "eval/test_hard/acc", "eval/test/entropy"]
    head = f"{'model':<22}{'test acc':>10}{'hard acc':>10}{'entropy':>10}{'tokens trained':>16}"
    lines = [head, "-" * len(head)]
    for name, m in results.items():
        frac = extra.get(name, {}).get("frac_tokens_selected")
        lines.append(f"{name:<22}" + "".join(f"{_fmt(m.get(c)):>10}" for c in cols) + f"{_fmt(frac):>16}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--stages", default="pretrain,sft,annotate,cft,study,grpo", help="comma-separated subset")
    p.add_argument("--fast", action="store_true", help="smaller eval sets and fewer annotation problems")
    args = p.parse_args(argv)
    stages = set(args.stages.split(","))
    os.environ.setdefault("WANDB_MODE", "offline")
    t0 = time.time()
    limit = ["--data.init_args.limit", "200"] if args.fast else []
    results: dict[str, dict] = {}
    extra: dict[str, dict] = {}

    base = fit("pretrain", "configs/tiny/pretrain.yaml") / "hf" / "last"
    results["base"] = evaluate("base", base, *limit)
    if "sft" in stages:
        sft = fit("sft", "configs/tiny/sft.yaml", "--model.init_args.model.name_or_path", str(base))
        results["sft (reference sol.)"] = evaluate("sft", sft / "hf" / "best", *limit)
        extra["sft (reference sol.)"] = json.loads((sft / "data_stats.json").read_text())
    if "annotate" in stages or "cft" in stages:
        ann = annotate(base)
        meta = json.loads((ann / "metadata.json").read_text())
        print(
            f"\nannotation: kept {meta['counts']['kept']} of {meta['counts']['questions']} questions; "
            f"critical fraction {meta['counts']['critical_fraction']:.3f}"
        )
    if "cft" in stages:
        common = ["--model.init_args.model.name_or_path", str(base), "--data.init_args.annotations", str(ann)]
        sft_c = fit(
            "sft-dcorrect", "configs/tiny/cft.yaml", *common, "--data.init_args.selector", "cft.selectors.AllTokens"
        )
        results["sft (own correct)"] = evaluate("sft-dcorrect", sft_c / "hf" / "best", *limit)
        extra["sft (own correct)"] = json.loads((sft_c / "data_stats.json").read_text())
        cft = fit("cft", "configs/tiny/cft.yaml", *common)
        results["cft (critical)"] = evaluate("cft", cft / "hf" / "best", *limit)
        extra["cft (critical)"] = json.loads((cft / "data_stats.json").read_text())
    if "study" in stages and "cft" in stages:
        # The baselines on the same rows, one seed (the full 3-seed study: configs/experiments/tiny_study.yaml).
        for method, sel in [
            ("random", "cft.selectors.RandomTokens"),
            ("entropy", "cft.selectors.EntropyTokens"),
            ("numeric", "cft.selectors.NumericTokens"),
        ]:
            run = fit(method, "configs/tiny/cft.yaml", *common, "--data.init_args.selector", sel)
            results[method] = evaluate(method, run / "hf" / "best", *limit)
            extra[method] = json.loads((run / "data_stats.json").read_text())
        run = fit(
            "dft",
            "configs/tiny/cft.yaml",
            *common,
            "--data.init_args.selector",
            "cft.selectors.AllTokens",
            "--model.init_args.weighting",
            "cft.modules.weighting.DFTWeighting",
        )
        results["dft"] = evaluate("dft", run / "hf" / "best", *limit)
        extra["dft"] = json.loads((run / "data_stats.json").read_text())
        evals = [str(_run_dir(f"eval-{n}")) for n in ("sft-dcorrect", "cft", "random", "entropy", "numeric", "dft")]
        cmd = [sys.executable, "-m", "cft.compare", *evals, "--out", str(Path(ROOT) / EXP / "compare")]
        print(f"\n$ python -m cft.compare ... --out {Path(ROOT) / EXP / 'compare'}", flush=True)
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    print("\n" + table(results, extra))
    print("(one seed, so differences of a few points are noise; 3-seed results: docs/results/README.md)")
    if "grpo" in stages and "cft" in stages:
        curves = {}
        for name, init in (("grpo-from-sft", sft_c), ("grpo-from-cft", cft)):
            run = fit(
                name,
                "configs/tiny/grpo.yaml",
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
