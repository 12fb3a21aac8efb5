"""World-model losses of a DreamerV3 run in bf16-mixed against float32, on one fixed store (issue #19 item 1).

    python benchmarks/bf16_numerics.py                                   # DreamerV3-S, 64x64, B 16 x T 16, 200 updates
    python benchmarks/bf16_numerics.py --device cuda
    python benchmarks/bf16_numerics.py --tiny --size 16 --threads 1      # a CPU without bf16 units (below)

The store: 64 episodes of ``PixelPoint`` (worldmodels/pixel_point.py, 30 steps, random actions, seed 0) at
``--size`` pixels. Every run starts from the same weights and draws the same windows (B x T, seed 0) and the
same noise (torch seed 1), and makes ``--updates`` ``DreamerAgent.training_step`` updates (world model, actor,
critic) on a Fabric of ``--precision``. Modes (``--modes``):

* ``modules``: the toolkit's mixed precision: only the networks compute in bf16, the code between them in
  float32 (encoders/precision.py);
* ``step``: the whole training step under one autocast, as before issue #19 (the same code with
  ``float32_between_networks`` switched off).

Prints one JSON line per run: {"what": "bf16_numerics", "precision", "mode", "last_losses" (the world-model
loss terms averaged over the last ``--last`` updates), "rel_diff" (against the float32 run: |bf16 - fp32| /
|fp32| per term), "s_per_update", "device", "dims", "torch"}.

A CPU without AVX512-BF16 or AMX (e.g. AMD EPYC Zen 3) emulates bf16 matmuls at a few GFLOP/s, 8-15x slower
than float32: there only ``--tiny`` dims run in reasonable time.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import encoders.precision as precision  # noqa: E402
from agents.dreamer import DreamerAgent  # noqa: E402
from worldmodels import envs  # noqa: E402
from worldmodels.rssm import PRESETS  # noqa: E402

PIXEL_POINT = "worldmodels.pixel_point:PixelPoint-v0"
TERMS = ("loss", "image", "reward", "cont", "kl")
TINY = dict(deter=32, stoch=4, classes=4, hidden=32, mlp_layers=1, cnn_depth=4)


def pixel_point_store(episodes: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """episodes of PixelPoint with uniform random actions -> image (E, 31, size, size, 3), action (E, 31, 1),
    reward, is_first, is_terminal (E, 31): the store layout, the reset frame first."""
    env = envs.make(PIXEL_POINT, size=size, seed=seed)
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {k: [] for k in ("image", "action", "reward", "is_first", "is_terminal")}
    for _ in range(episodes):
        obs, _ = env.reset()
        image, action, reward = [obs], [np.zeros(1, np.float32)], [0.0]
        done = False
        while not done:
            a = rng.uniform(-1, 1, 1).astype(np.float32)
            obs, r, terminated, truncated, _ = env.step(a)
            image.append(obs), action.append(a), reward.append(r)
            done = terminated or truncated
        out["image"].append(np.stack(image))
        out["action"].append(np.stack(action))
        out["reward"].append(np.array(reward, np.float32))
        first = np.zeros(len(image), bool)
        first[0] = True
        out["is_first"].append(first)
        out["is_terminal"].append(np.zeros(len(image), bool))
    return {k: np.stack(v) for k, v in out.items()}


def windows(
    store: dict[str, np.ndarray], batch: int, length: int, count: int
) -> list[dict[str, torch.Tensor]]:
    """``count`` batches of ``batch`` windows of ``length`` steps, drawn with seed 0."""
    rng = np.random.default_rng(0)
    episodes, steps = store["reward"].shape
    out = []
    for _ in range(count):
        e = rng.integers(episodes, size=batch)
        t = rng.integers(steps - length + 1, size=batch)
        index = (e[:, None], t[:, None] + np.arange(length))
        window = {k: torch.from_numpy(v[index]) for k, v in store.items()}
        window["is_first"][:, 0] = True
        out.append(window)
    return out


def run(agent: DreamerAgent, batches: list, device: str, prec: str, mode: str, last: int) -> dict[str, Any]:
    from lightning.fabric import Fabric

    precision.DEVICE_TYPES = ("cuda", "cpu") if mode == "modules" else ()  # "step": the one-context layout
    fabric = Fabric(accelerator=device, devices=1, precision=prec)
    fresh = copy.deepcopy(agent)  # the same initial weights for every run; its own optimizers
    module, *_ = fabric.setup(fresh, *fresh.configure_optimizers())
    logged: list[dict[str, float]] = []
    fabric.log_dict = lambda metrics, step=None: logged.append(
        {k: float(v) for k, v in metrics.items() if k.removeprefix("train/") in TERMS}
    )
    torch.manual_seed(1)
    times = []
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        with fabric.autocast():
            module.module.training_step({k: v.to(fabric.device) for k, v in batch.items()}, i)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    means = {k.removeprefix("train/"): statistics.fmean(x[k] for x in logged[-last:]) for k in logged[-1]}
    return {"precision": prec, "mode": mode, "last_losses": means, "s_per_update": statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="dreamerv3-S")
    parser.add_argument("--tiny", action="store_true", help=f"RSSM dims {TINY}, actor/critic 16 x 1")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--length", type=int, default=16, help="window length (PixelPoint episodes: 31 frames)"
    )
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--last", type=int, default=20, help="updates averaged at the end")
    parser.add_argument("--modes", nargs="+", default=["modules", "step"], choices=["modules", "step"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = TINY if args.tiny else {}
    width = 16 if args.tiny else PRESETS[args.preset]["hidden"]
    layers = 1 if args.tiny else PRESETS[args.preset]["mlp_layers"]
    torch.manual_seed(0)
    spec = {"class_path": "worldmodels.rssm.RSSM", "init_args": {"preset": args.preset, **sizes}}
    agent = DreamerAgent(spec, version="v3", image_size=args.size, action_dim=1, hidden=width,
                         actor_layers=layers, critic_layers=layers)  # fmt: skip
    batches = windows(pixel_point_store(64, args.size), args.batch, args.length, args.updates)
    dims = {"preset": args.preset, "tiny": args.tiny, "size": args.size, "batch": args.batch}
    dims |= {"length": args.length, "updates": args.updates, "last": args.last}
    reference = run(agent, batches, args.device, "32-true", "modules", args.last)
    for result in [reference] + [
        run(agent, batches, args.device, "bf16-mixed", m, args.last) for m in args.modes
    ]:
        fp32 = reference["last_losses"]
        result["rel_diff"] = {
            k: round(abs(v - fp32[k]) / max(abs(fp32[k]), 1e-8), 5) for k, v in result["last_losses"].items()
        }
        extra = {
            "device": args.device,
            "dims": dims,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        }
        print(json.dumps({"what": "bf16_numerics", **result, **extra}), flush=True)


if __name__ == "__main__":
    main()
