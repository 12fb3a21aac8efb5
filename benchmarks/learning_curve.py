"""A learning curve from an online run's evaluations, beside DreamerV3's published curve and a random policy.

    python benchmarks/learning_curve.py --run runs/dreamer_cartpole_cpu --task dmc_cartpole_swingup \
        --random 33.6 --out docs/curves/dreamer_cartpole_cpu
    python benchmarks/learning_curve.py --extract SCORES.json.gz --task dmc_cartpole_swingup \
        --out docs/curves/dreamerv3_published_cartpole_swingup.csv

The run's curve is ``<run>/eval.csv`` (written by ``--eval_every``: env steps, eval return over its episodes).
``--sampled`` adds the DreamerV3 protocol's curve: each ``<run>/checkpoints/step<N>.ckpt`` evaluated over
``--episodes`` episodes with sampled actions (as ``worldmodels eval --explore``), at the env steps the run had
logged by that step, into ``<run>/eval_sampled.csv`` (checkpoints already there are skipped: it resumes).
The published curve is DreamerV3's score file ``scores/dmc_vision-dreamerv3.json.gz`` of danijar/dreamerv3
(10 seeds; each seed logs 8 evaluation episodes every ~8k env steps): ``--extract`` averages each seed's
episodes per logging point and writes env_steps, mean and std over seeds, seeds, to a CSV kept in
``docs/curves/`` (the score file is not part of this repo). Writes ``<out>.png`` (returns against env steps) and
``<out>.csv`` (the run's points with the published mean at the nearest logged env step).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PUBLISHED = Path(__file__).resolve().parents[1] / "docs" / "curves" / "dreamerv3_published_{task}.csv"
LOG_EVERY = 8000  # DreamerV3's dmc_vision score files: evaluation episodes logged every ~8k env steps


def extract(scores: Path, task: str, out: Path) -> Path:
    """DreamerV3 score file -> CSV of env_steps, mean, std over seeds (each seed's episodes averaged first)."""
    runs = [r for r in json.load(gzip.open(scores)) if r["task"] == task]
    if not runs:
        raise SystemExit(f"{scores}: no runs of task {task!r}")
    points: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        xs, ys = np.asarray(run["xs"]), np.asarray(run["ys"])
        logged = np.round(xs / LOG_EVERY).astype(int)
        for k in np.unique(logged):
            points[int(k) * LOG_EVERY].append(float(ys[logged == k].mean()))
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["env_steps", "mean", "std", "seeds"])
        for steps in sorted(points):
            values = points[steps]
            writer.writerow([steps, f"{np.mean(values):.1f}", f"{np.std(values):.1f}", len(values)])
    return out


def read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def evaluate_checkpoints(run: Path, episodes: int = 10, seed: int = 10_000) -> Path:
    """Each step<N>.ckpt of ``run`` over ``episodes`` sampled-action episodes -> <run>/eval_sampled.csv."""
    import torch

    from agents.evaluate import evaluate, load_agent, trained_action_repeat

    torch.set_num_threads(1)
    logged: dict[int, int] = {}  # training step -> env steps, from the run's CSV logs
    for table in sorted(run.glob("csv/version_*/metrics.csv")):
        for row in read(table):
            if row.get("env/steps"):
                logged[int(row["step"])] = int(float(row["env/steps"]))
    out = run / "eval_sampled.csv"
    done = {int(r["step"]) for r in read(out)} if out.exists() else set()
    for path in sorted(run.glob("checkpoints/step*.ckpt"), key=lambda p: int(p.stem[4:])):
        step = int(path.stem[4:])
        if step in done:
            continue
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        env = checkpoint["OnlineDataModule"]["env"]
        repeat = trained_action_repeat(path, env)
        returns, _ = evaluate(load_agent(path), env, episodes, None, repeat, seed, explore=True)
        env_steps = logged[max(s for s in logged if s <= step)]
        new = not out.exists()
        with open(out, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["env_steps", "step", "return_mean", "return_std", "returns"])
            row = [env_steps, step, f"{np.mean(returns):.2f}", f"{np.std(returns):.2f}", json.dumps(returns)]
            writer.writerow(row)
        print(
            f"{path}: env steps {env_steps}, sampled return {np.mean(returns):.1f} +- {np.std(returns):.1f}"
        )
    return out


def plot(run: Path, task: str, random_return: float | None, out: Path) -> tuple[Path, Path]:
    """<run>/eval.csv and eval_sampled.csv (+ the published CSV of ``task``) -> <out>.png and <out>.csv."""
    curves = {"policy mode (in-run eval)": read(run / "eval.csv")}
    if (run / "eval_sampled.csv").exists():
        curves["sampled actions (DreamerV3 protocol)"] = read(run / "eval_sampled.csv")
    published = read(Path(str(PUBLISHED).format(task=task)))
    p_steps = np.array([int(r["env_steps"]) for r in published])
    p_mean = np.array([float(r["mean"]) for r in published])
    p_std = np.array([float(r["std"]) for r in published])
    last = max(int(r["env_steps"]) for rows in curves.values() for r in rows)
    shown = p_steps <= max(last * 1.5, 2 * LOG_EVERY)

    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    ax = fig.add_subplot()
    for name, rows in curves.items():
        steps = np.array([int(r["env_steps"]) for r in rows])
        mean = np.array([float(r["return_mean"]) for r in rows])
        std = np.array([float(r["return_std"]) for r in rows])
        episodes = len(json.loads(rows[0]["returns"]))
        ax.plot(steps, mean, "o-", label=f"ours, {name}, {episodes} episodes")
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    label = "DreamerV3 published (10 seeds, size S)"
    ax.plot(p_steps[shown], p_mean[shown], "s--", color="gray", label=label)
    ax.fill_between(
        p_steps[shown], (p_mean - p_std)[shown], (p_mean + p_std)[shown], color="gray", alpha=0.15
    )
    if random_return is not None:
        label = f"uniform random policy ({random_return:.1f})"
        ax.axhline(random_return, color="red", linestyle=":", label=label)
    ax.set_xlabel("environment steps (action repeat included)")
    ax.set_ylabel(f"{task} return (higher is better)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_suffix(".png")
    fig.savefig(png, bbox_inches="tight")
    table = out.with_suffix(".csv")
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "eval",
                "env_steps",
                "step",
                "return_mean",
                "return_std",
                "published_env_steps",
                "published_mean",
            ]
        )
        for name, rows in curves.items():
            for r in rows:
                near = int(np.argmin(np.abs(p_steps - int(r["env_steps"]))))
                fields = [
                    r["env_steps"],
                    r["step"],
                    r["return_mean"],
                    r["return_std"],
                    p_steps[near],
                    p_mean[near],
                ]
                writer.writerow([name, *fields])
    return png, table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, help="an online run folder holding eval.csv")
    parser.add_argument("--task", required=True, help="the score file's task name, e.g. dmc_cartpole_swingup")
    parser.add_argument("--random", type=float, default=None, help="the random policy's mean return")
    parser.add_argument("--extract", type=Path, default=None, help="a DreamerV3 score file (.json.gz)")
    parser.add_argument("--out", type=Path, default=None, help="output path without suffix (--extract: .csv)")
    parser.add_argument("--sampled", action="store_true", help="first evaluate the run's step checkpoints")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per checkpoint with --sampled")
    args = parser.parse_args()
    if args.extract:
        print(extract(args.extract, args.task, args.out))
        return
    if args.sampled:
        print(evaluate_checkpoints(args.run, args.episodes))
    if args.out is not None:
        print(*plot(args.run, args.task, args.random, args.out))


if __name__ == "__main__":
    main()
