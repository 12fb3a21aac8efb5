"""Environment steps per second with a policy in the loop, against the bare environments and the CPU-time bound.

    python benchmarks/env_throughput.py                                  # dmc:cartpole-swingup, 1 and 4 envs
    python benchmarks/env_throughput.py --policies none random dreamer planet --steps 100 --threads 1
    python benchmarks/env_throughput.py --threads 1 --envs 4 --policies none dreamer --overlap on off

Policies (``--policies``):

* ``none``: the bare vector env of ``worldmodels.envs.make_vector``, stepped with ``action_space.sample()``;
* ``random``: ``OnlineDataModule.collect`` (the online loop's acting code: episode buffers, episodes written to
  the store as they end) with uniform random actions and no model, i.e. the loop's own cost;
* ``dreamer``: the same loop with an untrained ``DreamerAgent`` (v3, RSSM preset ``--preset``) choosing actions
  by ``act(explore=True)``: one RSSM filter step on the new frames and one actor sample per vector step;
* ``planet``: the same loop with an untrained ``PlaNetAgent`` (RSSM preset planet): one CEM plan per vector step
  (horizon 12, 1000 candidates, 10 iterations: PlaNet App. A).

Weights do not change the cost. Frames are 64x64 (``--size``), action repeat 2 (DreamerV3 DMC, ``--action-repeat``).
More than one env runs in spawned worker processes (``make_vector``); the policy runs in this process. Each loop
policy runs once per variant of ``--overlap`` (``OnlineDataModule(overlap=...)``: on, two env groups, one acting
while the other steps; off, act for all envs, then step them all) and ``--act-threads`` (the torch threads while
acting); the variants take turns run by run. On a shared machine ``--max-load`` makes each timed run wait (at
most ``--wait`` s, workers idle) for a 1-min load that low. Prints one JSON line per (num_envs, policy, variant):

    {"what": "env_throughput", "impl": "worldmodels", "device", "env", "num_envs", "policy", "cores",
     "overlap", "act_threads" (loop policies), "dims",
     "agent_steps_per_s" (policy steps: vector steps x num_envs / median), "env_steps_per_s" (x action repeat),
     "median_ms", "min_ms" (per vector step, over ``--repeats`` runs of ``--steps`` vector steps),
     "cpu_ms" (CPU time per vector step of this process and the env workers, user + system, median),
     "load1" (before each run), and for ``dreamer``:
     "policy_cpu_ms", "policy_ms" (CPU and wall time of ``act`` alone per vector step, called as the loop calls
     it: once on all envs, or once per group with overlap; the variant's act threads; envs idle),
     "env_cpu_ms" (the bare envs' CPU time per vector step: ``none``'s cpu_ms, run first),
     "cpu_bound_agent_steps_per_s" = num_envs / ((env_cpu + policy_cpu) / cores), "of_bound" (achieved / bound),
     "thread_switch_us" (one switch of torch's thread count to act_threads and back, where they differ),
     "peak_mem_mb" (this process's peak resident set so far: the env workers are not counted), "threads", "torch"}

The bound counts the two costs that cannot be avoided, on every core of this process's affinity; the loop's own
work (buffers, store writes, pipes) and the frames' copies come on top (``random`` shows them).
"""

from __future__ import annotations

import argparse
import functools
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dreamer_update import wait_quiet  # noqa: E402

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


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds so far of this process (all its threads) and of the processes ``pids``
    (``/proc/<pid>/stat`` fields 14 and 15, clock ticks: 10 ms resolution)."""
    ticks, total = os.sysconf("SC_CLK_TCK"), time.process_time()
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the fields after the command name; field 3 first
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def time_variants(
    steps_fns: list[Any], pids: list[list[int]], args: argparse.Namespace
) -> list[dict[str, list[float]]]:
    """Seconds, CPU seconds (this process + ``pids``) per vector step and the 1-min load before each run, for
    ``args.repeats`` runs of ``args.steps`` calls of each ``steps_fns[k](n)`` after ``args.warmup`` steps. The
    variants take turns, run after run (the order rotates every round), so a change of load hits them alike;
    with ``args.max_load`` each run first waits (at most ``args.wait`` s, all workers idle) for that load."""
    for step in steps_fns:
        step(args.warmup)
    runs: list[dict[str, list[float]]] = [{"times": [], "cpu": [], "loads": []} for _ in steps_fns]
    for round_ in range(args.repeats):
        for k in np.roll(np.arange(len(steps_fns)), -round_):
            step, run = steps_fns[k], runs[k]
            wait_quiet(args.max_load, args.wait)
            run["loads"].append(os.getloadavg()[0])
            cpu, start = cpu_seconds(pids[k]), time.perf_counter()
            step(args.steps)
            run["times"].append((time.perf_counter() - start) / args.steps)
            run["cpu"].append((cpu_seconds(pids[k]) - cpu) / args.steps)
    return runs


def worker_pids(vector_envs: list[Any]) -> list[int]:
    """The worker processes of ``AsyncVectorEnv`` s (a ``SyncVectorEnv`` steps in this process)."""
    return [process.pid for env in vector_envs for process in getattr(env, "processes", [])]


def policy_cpu(agent: Any, data: OnlineDataModule, threads: int | None, calls: int) -> tuple[float, float]:
    """CPU and wall seconds of ``agent.act`` alone per vector step, as the loop calls it (once per env group)
    on the groups' current frames, with ``threads`` torch threads (None: the count set); envs idle. Medians
    of 5 blocks of ``calls // 5`` vector steps."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        groups = [
            (torch.from_numpy(obs), torch.zeros(len(obs), dtype=torch.bool), state)
            for obs, state in zip(data._obs, data._policy_state)
        ]
        with torch.no_grad():
            for _ in range(3):
                for obs, is_first, state in groups:
                    agent.act(obs, is_first, state, True)
            blocks, n = [], max(1, calls // 5)  # the median of 5 blocks shrugs off a burst of load
            for _ in range(5):
                cpu, start = time.process_time(), time.perf_counter()
                for _ in range(n):
                    for obs, is_first, state in groups:
                        agent.act(obs, is_first, state, True)
                blocks.append(((time.process_time() - cpu) / n, (time.perf_counter() - start) / n))
            return statistics.median(b[0] for b in blocks), statistics.median(b[1] for b in blocks)
    finally:
        torch.set_num_threads(previous)


def thread_switch_us(threads: int, repeats: int = 20) -> float:
    """Microseconds of one switch of torch's thread count to ``threads`` and back, as ``collect`` does."""
    previous = torch.get_num_threads()
    start = time.perf_counter()
    for _ in range(repeats):
        torch.set_num_threads(threads)
        torch.mm(
            torch.ones(64, 64), torch.ones(64, 64)
        )  # the pool is resized lazily, on the next parallel op
        torch.set_num_threads(previous)
        torch.mm(torch.ones(64, 64), torch.ones(64, 64))
    return 1e6 * (time.perf_counter() - start) / repeats


def summary(run: dict[str, list[float]], num_envs: int, args: argparse.Namespace) -> dict[str, Any]:
    median = statistics.median(run["times"])
    return {
        "agent_steps_per_s": round(num_envs / median, 1),
        "env_steps_per_s": round(num_envs * args.action_repeat / median, 1),
        "median_ms": round(1000 * median, 2),
        "min_ms": round(1000 * min(run["times"]), 2),
        "cpu_ms": round(1000 * statistics.median(run["cpu"]), 2),
        "load1": [round(x, 2) for x in run["loads"]],
    }


def bench(
    args: argparse.Namespace, num_envs: int, policy: str, store: Path, env_cpu: dict[int, float]
) -> list[dict[str, Any]]:
    """One JSON row per variant (overlap x act threads) of ``policy`` with ``num_envs`` envs. The bare envs'
    CPU time per vector step is kept in ``env_cpu[num_envs]`` for the bound of the policies after."""
    dims: dict[str, Any] = {"size": args.size, "action_repeat": args.action_repeat}
    cores = len(os.sched_getaffinity(0))
    common = {"what": "env_throughput", "impl": "worldmodels", "device": args.device, "env": args.env}
    common |= {"num_envs": num_envs, "policy": policy, "cores": cores}
    if policy == "none":
        vector_env = envs.make_vector(
            args.env, num_envs, size=args.size, action_repeat=args.action_repeat, seed=0
        )
        vector_env.reset(seed=0)

        def step(n: int) -> None:
            for _ in range(n):
                vector_env.step(vector_env.action_space.sample())

        try:
            (run,) = time_variants([step], [worker_pids([vector_env])], args)
        finally:
            vector_env.close()
        env_cpu[num_envs] = statistics.median(run["cpu"])
        return [common | {"dims": dims} | summary(run, num_envs, args) | versions()]
    overlaps = args.overlap if num_envs > 1 else args.overlap[:1]  # one env: one group either way
    variants = [(overlap, threads) for overlap in overlaps for threads in args.act_threads]
    datas = [
        OnlineDataModule(
            str(store / f"{policy}-{num_envs}-{k}"),
            args.env,
            size=args.size,
            action_repeat=args.action_repeat,
            num_envs=num_envs,
            seed_episodes=1,  # the store needs one episode to know its image size and action space
            collect_steps=1,
            **({} if overlap is None else {"overlap": overlap == "on"}),
            **({} if threads is None else {"act_threads": threads or None}),
        )
        for k, (overlap, threads) in enumerate(variants)
    ]
    agent = build_policy(policy, datas[0].action_dim, datas[0].discrete, args.size, args.preset, args.device)
    if policy == "dreamer":
        dims["preset"] = args.preset
    elif policy == "planet":
        planner = agent.planner
        dims |= {"preset": "planet", "horizon": planner.horizon, "candidates": planner.candidates}
        dims["iterations"] = planner.iterations
    steps_fns = [functools.partial(collect_steps, data, agent) for data in datas]
    rows = []
    try:
        for data in datas:
            data.collect(agent, steps=1)  # starts the envs
        runs = time_variants(steps_fns, [worker_pids(data._envs) for data in datas], args)
        for data, run in zip(datas, runs):
            overlap = "on" if data.overlap and num_envs > 1 else "off"
            row = common | {"overlap": overlap, "act_threads": data.act_threads, "dims": dims}
            row |= summary(run, num_envs, args)
            if policy == "dreamer":  # (CEM's act alone would take minutes; its bound is its act time)
                wait_quiet(args.max_load, args.wait)
                cpu, wall = policy_cpu(agent, data, data.act_threads, args.policy_calls)
                row |= {"policy_cpu_ms": round(1000 * cpu, 2), "policy_ms": round(1000 * wall, 2)}
                if num_envs in env_cpu:
                    bound = num_envs * cores / (env_cpu[num_envs] + cpu)
                    row |= {"env_cpu_ms": round(1000 * env_cpu[num_envs], 2)}
                    row |= {"cpu_bound_agent_steps_per_s": round(bound, 1)}
                    row |= {"of_bound": round(row["agent_steps_per_s"] / bound, 3)}
            if data.act_threads and data.act_threads != torch.get_num_threads():
                row["thread_switch_us"] = round(thread_switch_us(data.act_threads), 1)
            rows.append(row | versions())
    finally:
        for data in datas:
            data.teardown("fit")
    return rows


def collect_steps(data: OnlineDataModule, agent: Any, n: int) -> None:
    data.collect(agent, steps=n, explore=True)


def versions() -> dict[str, Any]:
    return {
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
    parser.add_argument(
        "--overlap",
        nargs="+",
        default=[None],
        choices=["on", "off"],
        help="OnlineDataModule(overlap=...) variants of each loop policy, timed in turns (default: the module's)",
    )
    parser.add_argument(
        "--act-threads",
        nargs="+",
        type=int,
        default=[None],
        help="OnlineDataModule(act_threads=...) variants (0: keep --threads; default: the module's default)",
    )
    parser.add_argument("--policy-calls", type=int, default=50, help="act() calls timed alone for the bound")
    parser.add_argument(
        "--max-load", type=float, default=None, help="before each timed run, wait for a 1-min load <= this"
    )
    parser.add_argument("--wait", type=float, default=300, help="longest wait for --max-load, seconds")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    np.random.seed(0)
    policies = sorted(args.policies, key=lambda p: p != "none")  # the bare envs first: the bound needs them
    env_cpu: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="env_throughput_") as tmp:
        for num_envs in args.envs:
            for policy in policies:
                for row in bench(args, num_envs, policy, Path(tmp), env_cpu):
                    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
