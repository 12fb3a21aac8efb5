"""Learning curves of the MBPO head with and without model rollouts (k = 0 against k > 0), several seeds.

    python benchmarks/mbpo_curves.py --runs /tmp/mbpo_curves --out docs/mbpo

Each run folder ``<runs>/k<K>_s<SEED>/run`` holds the ``eval.csv`` written by ``--eval_every`` (env steps,
mean eval return); copies of them may also lie in ``<runs>`` as ``k<K>_s<SEED>.csv`` (docs/curves/mbpo/). Writes ``<out>.png`` (each seed thin, the mean over seeds thick, one colour per k) and prints
a table of per-seed returns at every evaluation and at the last one. Seeds may evaluate at different env steps
or stop at different lengths: the mean is taken where all of them have run (``seed_mean``).
"""

from __future__ import annotations

import argparse
import csv
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

RANDOM, OPTIMUM = 14.5, 29.5  # PixelPoint: a random policy and the optimum (worldmodels/pixel_point.py)


def read_runs(root: Path) -> dict[int, dict[int, list[tuple[int, float]]]]:
    """-> {k: {seed: [(env_steps, eval return), ...]}} from ``root/k<K>_s<SEED>/run/eval.csv``."""
    runs: dict[int, dict[int, list[tuple[int, float]]]] = defaultdict(dict)
    for path in sorted([*root.glob("k*_s*/run/eval.csv"), *root.glob("k*_s*.csv")]):
        match = re.fullmatch(r"k(\d+)_s(\d+)", path.stem if path.parent == root else path.parents[1].name)
        if match is None:
            continue
        with path.open() as f:
            points = [(int(r["env_steps"]), float(r["return_mean"])) for r in csv.DictReader(f)]
        runs[int(match[1])][int(match[2])] = points
    return dict(runs)


def seed_mean(curves: list[list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Seeds' curves (their evaluations may fall at different env steps) -> (env steps, mean return): each seed
    linearly interpolated onto the evaluation steps of all seeds that lie inside every seed's range."""
    low, high = max(c[0][0] for c in curves), min(c[-1][0] for c in curves)
    steps = np.unique([s for c in curves for s, _ in c if low <= s <= high])
    values = [np.interp(steps, *map(np.array, zip(*c))) for c in curves]
    return steps, np.mean(values, 0)


def plot(runs: dict[int, dict[int, list[tuple[int, float]]]], out: Path) -> None:
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    for (k, seeds), colour in zip(sorted(runs.items()), ("tab:gray", "tab:blue", "tab:orange", "tab:green")):
        for points in seeds.values():
            ax.plot(*zip(*points), color=colour, alpha=0.35, linewidth=1)
        steps, mean = seed_mean(list(seeds.values()))
        label = f"k = {k} ({'model-free' if k == 0 else 'model rollouts'}), mean of {len(seeds)} seeds"
        ax.plot(steps, mean, color=colour, linewidth=2.5, label=label)
    ax.axhline(RANDOM, color="k", linestyle=":", linewidth=1, label=f"random policy (~{RANDOM})")
    ax.axhline(OPTIMUM, color="k", linestyle="--", linewidth=1, label=f"optimum (~{OPTIMUM})")
    ax.set_ylim(0, 31)
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval return (mode, 5 episodes)")
    ax.set_title("MBPO head on PixelPoint 16x16: k = 0 vs k > 0")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out.with_suffix(".png"), dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("docs/mbpo"))
    args = parser.parse_args()
    runs = read_runs(args.runs)
    if not runs:
        raise SystemExit(f"no {args.runs}/k*_s*/run/eval.csv or {args.runs}/k*_s*.csv")
    plot(runs, args.out)
    for k, seeds in sorted(runs.items()):
        for seed, points in sorted(seeds.items()):
            curve = ", ".join(f"{s}: {r:.1f}" for s, r in points)
            print(f"k={k} seed={seed}: final {points[-1][1]:.1f} at {points[-1][0]} env steps | {curve}")
    for k, seeds in sorted(runs.items()):
        steps, mean = seed_mean(list(seeds.values()))
        print(f"k={k} mean of {len(seeds)} seeds: " + ", ".join(f"{s}: {m:.1f}" for s, m in zip(steps, mean)))
    print(f"wrote {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
