"""Latency of CEM planning at the PlaNet setting on an RSSM of PlaNet size: milliseconds per action.

    python benchmarks/planning_latency.py                       # CPU, batch 1 and 16 environments
    python benchmarks/planning_latency.py --device cuda --batches 1 16 64

Times one ``agents.planners.CEMPlanner`` call (horizon 12, 1000 candidates, 10 iterations, top 100:
PlaNet App. A), i.e. one action for each of ``batch`` environments, under ``torch.inference_mode`` after
warm-up calls, on an untrained ``RSSM(preset="planet")`` (GRU 200, Gaussian z 30, hidden 200) with 6-dim
actions (cheetah run) at 64 px, planning from a posterior state. Weights do not change the cost. Prints one
JSON line per batch size:

    {"what": "cem_plan", "impl": "worldmodels", "device", "dims": {...}, "batch", "median_ms", "min_ms",
     "peak_mem_mb" (CUDA: max allocated; CPU: the process's peak resident set), "compile", "threads",
     "torch"}

On a CPU shared with other busy processes, ``--threads 1`` avoids OpenMP threads waiting on each other.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.planners import CEMPlanner  # noqa: E402
from worldmodels.interface import last_step  # noqa: E402
from worldmodels.rssm import RSSM  # noqa: E402

ACTION_DIM = 6  # cheetah run, PlaNet's largest action space
IMAGE_SIZE = 64  # PlaNet: 64 x 64 images


def peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def bench(batch: int, device: torch.device, repeats: int, warmup: int, compile: bool) -> dict:
    torch.manual_seed(0)
    model = RSSM(preset="planet", action_dim=ACTION_DIM, image_size=IMAGE_SIZE).to(device).eval()
    planner = CEMPlanner(compile=compile)
    generator = torch.Generator(device).manual_seed(0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        images = torch.randint(
            0, 256, (batch, 2, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=torch.uint8, device=device
        )
        actions = torch.zeros(batch, 2, ACTION_DIM, device=device)
        is_first = torch.tensor([True, False], device=device).expand(batch, 2)
        state = last_step(model.observe(images, actions, is_first))
        for _ in range(warmup):
            planner(model, state, generator=generator)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            planner(model, state, generator=generator)
            sync()
            times.append(time.perf_counter() - start)
    dims = dict(
        deter=model.config["deter"],
        stoch=model.config["stoch"],
        hidden=model.config["hidden"],
        action_dim=ACTION_DIM,
        horizon=planner.horizon,
        candidates=planner.candidates,
        iterations=planner.iterations,
        top_k=planner.top_k,
    )
    return {
        "what": "cem_plan",
        "impl": "worldmodels",
        "device": device.type,
        "dims": dims,
        "batch": batch,
        "median_ms": round(1000 * statistics.median(times), 2),
        "min_ms": round(1000 * min(times), 2),
        "peak_mem_mb": round(peak_mem_mb(device), 1),
        "compile": compile,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--batches", type=int, nargs="+", default=[1, 16], help="environments planned at once"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="torch.compile the imagination scan")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible to torch")
    for batch in args.batches:
        print(json.dumps(bench(batch, device, args.repeats, args.warmup, args.compile)), flush=True)


if __name__ == "__main__":
    main()
