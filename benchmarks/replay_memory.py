"""Resident memory of the online collect-and-train loop over a long run, at a tiny model size.

Runs `worldmodels agent planet` (tiny PlaNet, dm_control cartpole at ``--size``, 64x64 by default) for ``--env-steps`` environment steps
with a small ``--replay-budget-mb`` and samples the RSS of the whole process tree (trainer + dataloader workers)
every few seconds. Once the replay budget is reached, memory should stay flat while the episode store on disk
keeps growing. Prints one JSON line per sample and a summary line:

    python benchmarks/replay_memory.py --env-steps 100000 --replay-budget-mb 8 --out runs/replay_memory
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, from /proc (MB)."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return total / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="dmc:cartpole-swingup")
    parser.add_argument("--env-steps", type=int, default=100_000)
    parser.add_argument("--replay-budget-mb", type=int, default=8)
    parser.add_argument(
        "--size", type=int, default=64, help="image size; 100k steps at 64x64 decode to ~155 MB of episodes"
    )
    parser.add_argument("--out", default="runs/replay_memory")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    args = parser.parse_args()
    out = Path(args.out)
    command = [
        sys.executable, "-m", "cli", "agent", "planet", "-c", "configs/planet_tiny.yaml",
        "--data.env", args.env, "--data.action_repeat", "8", "--data.size", str(args.size), "--data.path", str(out / "episodes"),
        "--trainer.default_root_dir", str(out / "run"), "--trainer.max_steps", "-1",
        "--data.max_env_steps", str(args.env_steps), "--data.replay_budget_mb", str(args.replay_budget_mb),
        "--data.workers", "1", "--checkpoint_every", "1000",
    ]  # fmt: skip
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), PYTHONPATH=".")
    start = time.monotonic()
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=open(out.with_suffix(".log"), "w")
    )
    samples = []
    while proc.poll() is None:
        time.sleep(args.every)
        episodes = list((out / "episodes").glob("*.npz"))
        steps = sum(int(p.stem.rsplit("-", 1)[1]) - 1 for p in episodes) * 8
        sample = {"t_s": round(time.monotonic() - start, 1), "env_steps": steps, "episodes": len(episodes),
                  "rss_mb": round(tree_rss_mb(proc.pid), 1)}  # fmt: skip
        if sample["rss_mb"] > 0:  # 0 once the process has exited
            samples.append(sample)
            print(json.dumps(sample), flush=True)
    late = [s["rss_mb"] for s in samples if s["env_steps"] >= args.env_steps // 2]
    early = [s["rss_mb"] for s in samples if 0 < s["env_steps"] < args.env_steps // 2]
    summary = {
        "what": "replay_memory", "impl": "worldmodels", "device": "cpu", "env": args.env,
        "env_steps": args.env_steps, "size": args.size, "replay_budget_mb": args.replay_budget_mb, "returncode": proc.returncode,
        "wall_s": round(time.monotonic() - start, 1), "rss_mb_first_half_max": max(early, default=None),
        "rss_mb_second_half_min": min(late, default=None), "rss_mb_second_half_max": max(late, default=None),
        "torch": torch.__version__,
    }  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
