"""Dream rollouts for CMA-ES fitness: one generation of population x rollouts dreams, batched on one device.

    python benchmarks/dream_rollouts.py --device cpu --horizon 20
    python benchmarks/dream_rollouts.py --device cuda                      # horizon 1000, as CarRacing

Times ``agents.controller.dream_returns`` (a linear controller on the features, ``model.imagine``,
``model.reward``, ``model.cont``) for untrained models of the papers' sizes: the MDN-RNN of World Models
(z 32, LSTM 256, 5 mixtures) and the RSSM presets dreamerv3-S and planet, with 3-dim actions at 64 px.
Weights do not change the cost; predicted episode ends are ignored (every dream runs the full horizon). Prints one JSON line per model:

    {"what": "dream_rollout", "impl": "worldmodels", "device", "model", "population", "rollouts", "horizon",
     "steps_per_s" (latent steps: population x rollouts x horizon / median_s), "median_s", "min_s",
     "peak_mem_mb" (CUDA: max allocated; CPU: the process's peak resident set), "torch"}
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

from agents.controller import Controller, dream_returns  # noqa: E402
from worldmodels.mdnrnn import MDNRNN  # noqa: E402
from worldmodels.rssm import RSSM  # noqa: E402
from worldmodels.vae import VAE  # noqa: E402

ACTION_DIM = 3  # CarRacing: steer, gas, brake


def build(name: str) -> torch.nn.Module:
    if name == "mdnrnn":  # World Models CarRacing: z 32, LSTM 256, 5 mixtures
        return MDNRNN(vae=VAE(64, 32), action_dim=ACTION_DIM, hidden=256, mixtures=5)
    preset = name.removeprefix("rssm-")
    return RSSM(preset=preset, image_size=64, action_dim=ACTION_DIM)


def peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def bench(
    name: str, device: torch.device, population: int, rollouts: int, horizon: int, repeats: int
) -> dict:
    torch.manual_seed(0)
    model = build(name).to(device).eval()
    # Untrained heads predict episode ends at random, and dream_returns stops once every row has ended: keep
    # computing P(continue) but report 1, so every case runs the full horizon.
    model.cont = lambda state, cont=model.cont: torch.ones_like(cont(state))
    controller = Controller(model.feature_dim, model.action_dim, model.discrete)
    params = 0.1 * torch.randn(population, controller.num_params, device=device)  # CMA-ES sigma 0.1
    starts = model.initial(rollouts)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    dream_returns(model, controller, params, starts, min(horizon, 5))  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        dream_returns(model, controller, params, starts, horizon, done="threshold")
        sync()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "what": "dream_rollout",
        "impl": "worldmodels",
        "device": device.type,
        "model": name,
        "population": population,
        "rollouts": rollouts,
        "horizon": horizon,
        "steps_per_s": round(population * rollouts * horizon / median, 1),
        "median_s": round(median, 4),
        "min_s": round(min(times), 4),
        "peak_mem_mb": round(peak_mem_mb(device), 1),
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--models", nargs="+", default=["mdnrnn", "rssm-dreamerv3-S", "rssm-planet"])
    parser.add_argument("--population", type=int, default=64)  # World Models: population 64
    parser.add_argument("--rollouts", type=int, default=16)  # World Models: 16 rollouts per candidate
    parser.add_argument("--horizon", type=int, default=1000)  # CarRacing: 1000-step episodes
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    for name in args.models:
        print(
            json.dumps(bench(name, device, args.population, args.rollouts, args.horizon, args.repeats)),
            flush=True,
        )


if __name__ == "__main__":
    main()
