"""Latency of latent planning at the PlaNet setting on an RSSM of PlaNet size: milliseconds per action.

    python benchmarks/planning_latency.py                       # CPU, CEM, batch 1 and 16 environments
    python benchmarks/planning_latency.py --planners cem gradient hybrid --batches 1 --threads 1
    python benchmarks/planning_latency.py --device cuda --batches 1 16 64

Times one planner call, i.e. one action for each of ``batch`` environments, after warm-up calls: CEM at
PlaNet App. A (horizon 12, 1000 candidates, 10 iterations, top 100), and the others at their own defaults
(agents/planners.py; the gradient planners keep autograd on, the sampling ones run under
``torch.inference_mode``). With several planners, the repeats alternate between them (round-robin), so a
load change on a shared CPU hits all of them alike; on an untrained ``RSSM(preset="planet")`` (GRU 200, Gaussian z 30, hidden 200) with 6-dim
actions (cheetah run) at 64 px, planning from a posterior state. Weights do not change the cost. Prints one
JSON line per batch size:

    {"what": "<planner>_plan", "impl": "worldmodels", "device", "dims": {...}, "batch", "median_ms", "min_ms",
     "first_call_ms" (the first, warm-up call: with --compile it includes compiling), "peak_mem_mb" (CUDA: max
     allocated; CPU: the process's peak resident set), "compile", "threads",
     "torch"}

On a CPU shared with other busy processes, ``--threads 1`` avoids OpenMP threads waiting on each other.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.planet import PLANNERS  # noqa: E402
from agents.planners import GradientPlanner  # noqa: E402
from worldmodels.interface import last_step  # noqa: E402
from worldmodels.rssm import RSSM  # noqa: E402

ACTION_DIM = 6  # cheetah run, PlaNet's largest action space
IMAGE_SIZE = 64  # PlaNet: 64 x 64 images


def peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def bench(
    names: list[str], batch: int, device: torch.device, repeats: int, warmup: int, compile: bool
) -> list[dict]:
    torch.manual_seed(0)
    model = RSSM(preset="planet", action_dim=ACTION_DIM, image_size=IMAGE_SIZE).to(device).eval()
    model.requires_grad_(False)  # a frozen model, as at test time: gradients only into the actions
    planners = {name: PLANNERS[name](compile=compile) for name in names}
    generator = torch.Generator(device).manual_seed(0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.no_grad():
        images = torch.randint(
            0, 256, (batch, 2, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=torch.uint8, device=device
        )
        actions = torch.zeros(batch, 2, ACTION_DIM, device=device)
        is_first = torch.tensor([True, False], device=device).expand(batch, 2)
        state = last_step(model.observe(images, actions, is_first))

    def call(planner) -> None:
        if isinstance(planner, GradientPlanner):  # the gradient planners need autograd (into the actions)
            planner(model, state, generator=generator)
            return
        with torch.inference_mode():
            planner(model, state, generator=generator)

    first_ms = {}
    for name, planner in planners.items():
        start = time.perf_counter()
        call(planner)  # the first call: with --compile it includes compiling
        first_ms[name] = round(1000 * (time.perf_counter() - start), 1)
        for _ in range(warmup - 1):
            call(planner)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name, planner in planners.items():  # alternate: a load change hits every planner alike
            sync()
            start = time.perf_counter()
            call(planner)
            sync()
            times[name].append(time.perf_counter() - start)
    rows = []
    for name, planner in planners.items():
        dims = dict(
            deter=model.config["deter"],
            stoch=model.config["stoch"],
            hidden=model.config["hidden"],
            action_dim=ACTION_DIM,
            **{
                k: getattr(planner, k)
                for k in ("horizon", "candidates", "iterations", "top_k", "restarts", "refine_steps")
                if getattr(planner, k, None) is not None
            },
        )
        rows.append(
            {
                "what": f"{name}_plan",
                "impl": "worldmodels",
                "device": device.type,
                "dims": dims,
                "batch": batch,
                "first_call_ms": first_ms[name],
                "median_ms": round(1000 * statistics.median(times[name]), 2),
                "min_ms": round(1000 * min(times[name]), 2),
                "peak_mem_mb": round(peak_mem_mb(device), 1),
                "compile": compile,
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "load": round(os.getloadavg()[0], 2),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--batches", type=int, nargs="+", default=[1, 16], help="environments planned at once"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--warmup", type=int, default=2, help="untimed calls per planner before timing (at least the first)"
    )
    parser.add_argument(
        "--planners",
        nargs="+",
        default=["cem"],
        choices=sorted(PLANNERS),
        help="planners to time, alternating",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the imagination scan")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible to torch")
    for batch in args.batches:
        for row in bench(args.planners, batch, device, args.repeats, args.warmup, args.compile):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
