"""Environment steps per second with a policy in the loop, against the bare environments.

    python benchmarks/env_throughput.py                                  # dmc:cartpole-swingup, 1 and 4 envs
    python benchmarks/env_throughput.py --policies none random dreamer planet --steps 100 --threads 1

Policies (``--policies``):

* ``none``: the bare vector env of ``worldmodels.envs.make_vector``, stepped with ``action_space.sample()``;
* ``random``: ``OnlineDataModule.collect`` (the online loop's acting code: episode buffers, episodes written to
  the store as they end) with uniform random actions and no model, i.e. the loop's own cost;
* ``dreamer``: the same loop with an untrained ``DreamerAgent`` (v3, RSSM preset ``--preset``) choosing actions
  by ``act(explore=True)``: one RSSM filter step on the new frames and one actor sample per vector step;
* ``planet``: the same loop with an untrained ``PlaNetAgent`` (RSSM preset planet): one CEM plan per vector step
  (horizon 12, 1000 candidates, 10 iterations: PlaNet App. A).

Weights do not change the cost. Frames are 64x64 (``--size``), action repeat 2 (DreamerV3 DMC, ``--action-repeat``).
More than one env runs in spawned worker processes (``make_vector``); the policy runs in this process. Prints
one JSON line per (num_envs, policy):

    {"what": "env_throughput", "impl": "worldmodels", "device", "env", "num_envs", "policy", "dims",
     "agent_steps_per_s" (policy steps: vector steps x num_envs / median), "env_steps_per_s" (x action repeat),
     "median_ms", "min_ms" (per vector step, over ``--repeats`` runs of ``--steps`` vector steps), "load1",
     "peak_mem_mb" (this process's peak resident set so far: the env workers are not counted), "threads", "torch"}
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.dreamer import DreamerAgent  # noqa: E402
from agents.online import OnlineDataModule  # noqa: E402
from agents.planet import PlaNetAgent  # noqa: E402
from worldmodels import envs  # noqa: E402

POLICIES = ("none", "random", "dreamer", "planet")


class RandomPolicy:
    """Uniform random actions in [-1, 1] (or one-hot), in the ``act`` layout of the online loop."""

    def __init__(self, action_dim: int, discrete: bool, seed: int = 0) -> None:
        self.action_dim, self.discrete = action_dim, discrete
        self.generator = torch.Generator().manual_seed(seed)

    def act(
        self, obs: torch.Tensor, is_first: torch.Tensor, state: Any, explore: bool
    ) -> tuple[torch.Tensor, Any]:
        """obs (N, H, W, 3) uint8 -> action (N, A)."""
        n = obs.shape[0]
        if self.discrete:
            index = torch.randint(self.action_dim, (n,), generator=self.generator)
            return torch.nn.functional.one_hot(index, self.action_dim).float(), None
        return torch.rand(n, self.action_dim, generator=self.generator) * 2 - 1, None


def build_policy(name: str, action_dim: int, discrete: bool, size: int, preset: str, device: str) -> Any:
    torch.manual_seed(0)
    if name == "random":
        return RandomPolicy(action_dim, discrete)
    if name == "dreamer":
        spec = {"class_path": "worldmodels.rssm.RSSM", "init_args": {"preset": preset}}
        agent = DreamerAgent(spec, version="v3", image_size=size, action_dim=action_dim, discrete=discrete)
    else:  # PlaNet's default world model: the planet preset
        agent = PlaNetAgent(image_size=size, action_dim=action_dim, discrete=discrete)
    return agent.to(device).eval()


def time_steps(step: Any, steps: int, warmup: int, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds per vector step of ``repeats`` runs of ``steps`` calls of ``step(n)``, after ``warmup`` steps;
    and the 1-min load before each run."""
    step(warmup)
    times, loads = [], []
    for _ in range(repeats):
        loads.append(os.getloadavg()[0])
        start = time.perf_counter()
        step(steps)
        times.append((time.perf_counter() - start) / steps)
    return times, loads


def bench(args: argparse.Namespace, num_envs: int, policy: str, store: Path) -> dict[str, Any]:
    dims: dict[str, Any] = {"size": args.size, "action_repeat": args.action_repeat}
    if policy == "none":
        vector_env = envs.make_vector(
            args.env, num_envs, size=args.size, action_repeat=args.action_repeat, seed=0
        )
        vector_env.reset(seed=0)

        def step(n: int) -> None:
            for _ in range(n):
                vector_env.step(vector_env.action_space.sample())

        try:
            times, loads = time_steps(step, args.steps, args.warmup, args.repeats)
        finally:
            vector_env.close()
    else:
        data = OnlineDataModule(
            str(store / f"{policy}-{num_envs}"),
            args.env,
            size=args.size,
            action_repeat=args.action_repeat,
            num_envs=num_envs,
            seed_episodes=1,  # the store needs one episode to know its image size and action space
            collect_steps=1,
        )
        agent = build_policy(policy, data.action_dim, data.discrete, args.size, args.preset, args.device)
        if policy == "dreamer":
            dims["preset"] = args.preset
        elif policy == "planet":
            planner = agent.planner
            dims |= {"preset": "planet", "horizon": planner.horizon, "candidates": planner.candidates}
            dims["iterations"] = planner.iterations

        def step(n: int) -> None:
            data.collect(agent, steps=n, explore=True)

        try:
            times, loads = time_steps(step, args.steps, args.warmup, args.repeats)
        finally:
            data.teardown("fit")
    median = statistics.median(times)
    return {
        "what": "env_throughput",
        "impl": "worldmodels",
        "device": args.device,
        "env": args.env,
        "num_envs": num_envs,
        "policy": policy,
        "dims": dims,
        "agent_steps_per_s": round(num_envs / median, 1),
        "env_steps_per_s": round(num_envs * args.action_repeat / median, 1),
        "median_ms": round(1000 * median, 2),
        "min_ms": round(1000 * min(times), 2),
        "load1": [round(x, 2) for x in loads],
        "peak_mem_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="dmc:cartpole-swingup")
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 4], help="environments stepped at once")
    parser.add_argument("--policies", nargs="+", default=["none", "random", "dreamer"], choices=POLICIES)
    parser.add_argument("--preset", default="dreamerv3-S", help="RSSM preset of the dreamer policy")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--action-repeat", type=int, default=2)  # DreamerV3 DMC: action repeat 2
    parser.add_argument("--steps", type=int, default=200, help="vector steps per timed run")
    parser.add_argument("--warmup", type=int, default=10, help="vector steps before timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    np.random.seed(0)
    with tempfile.TemporaryDirectory(prefix="env_throughput_") as tmp:
        for num_envs in args.envs:
            for policy in args.policies:
                print(json.dumps(bench(args, num_envs, policy, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
