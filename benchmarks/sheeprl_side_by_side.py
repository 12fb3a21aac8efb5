"""The DreamerV3 update of this toolkit next to SheepRL's, same dims, same device, taking turns in one run.

    python benchmarks/sheeprl_side_by_side.py --setup                  # once: SheepRL into .bench/sheeprl-venv
    python benchmarks/sheeprl_side_by_side.py --threads 2 --sizes S --what full world_model
    python benchmarks/sheeprl_side_by_side.py --device cuda --sizes S M

SheepRL (``sheeprl==0.8.4`` from PyPI, never vendored) lives in its own virtual environment under the
git-ignored ``.bench/``; ``--setup`` makes it with ``python -m venv`` and ``pip install`` (pip resolves against
the torch this machine offers) and writes pip's output to ``.bench/sheeprl-install.log``.

Two worker processes, one per implementation, each build their model once; then their updates alternate,
one at a time (``dreamer_update.alternate``), so both see the same machine load:

* ours: ``benchmarks/dreamer_update.py`` (``--what full``: ``DreamerAgent.training_step``; ``world_model``:
  the RSSM update alone), variant ``--ours-variant`` (default ``base``, the toolkit's defaults);
* SheepRL: its own ``sheeprl.algos.dreamer_v3.dreamer_v3.train`` (``full``: world model, actor, critic) or
  ``world_model_learning`` (``world_model``), built by its ``build_agent`` from its Hydra configs
  ``exp=dreamer_v3_dmc_walker_walk algo=dreamer_v3_{XS,S,M}`` (batch 16 x 64, 64x64 frames) with its default
  optimizers (Adam, ``fused=True``), on a ``lightning.fabric.Fabric`` of ``--device`` and ``--precision``, with
  the global settings its CLI makes (no distribution argument checks, float32 matmul precision "high"). The
  timed step includes the target-critic EMA that SheepRL's loop runs before every ``train`` call. Its batch is
  time-major float, as its replay sampler returns it (``sample_batches``: ``.float()`` before ``train``).

Prints the JSON line of each worker (as ``dreamer_update.py``, with ``impl`` "worldmodels" or "sheeprl") and
then one line per case:

    {"what": "side_by_side", "case": "dreamer_update" | "world_model_update", "size", "device",
     "speedup" (SheepRL median / ours), "rss_ratio" (our peak memory / SheepRL's), "sheeprl", "torch"}
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dreamer_update import (  # noqa: E402
    ROOT,
    SIZES,
    VARIANTS,
    WHATS,
    add_common_args,
    rss_mb,
    run_workers,
    serve,
    worker_command,
)

SHEEPRL = "sheeprl==0.8.4"
VENV = ROOT / ".bench" / "sheeprl-venv"
INSTALL_LOG = ROOT / ".bench" / "sheeprl-install.log"
SHEEPRL_EXP = "exp=dreamer_v3_dmc_walker_walk"  # DreamerV3 DMC from pixels: batch 16 x 64, 64x64 frames


def venv_python() -> Path:
    return VENV / "bin" / "python"


def setup() -> None:
    """Make ``.bench/sheeprl-venv`` and install SheepRL into it; on failure print pip's last lines and exit 1."""
    INSTALL_LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(INSTALL_LOG, "w") as log:
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(VENV)],
            [str(venv_python()), "-m", "pip", "install", SHEEPRL],
        ]
        for command in steps:
            log.write("$ " + " ".join(command) + "\n")
            log.flush()
            if subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode:
                tail = INSTALL_LOG.read_text().splitlines()[-15:]
                print(
                    json.dumps({"what": "sheeprl_install", "ok": False, "command": command, "log_tail": tail})
                )
                sys.exit(1)
    freeze = subprocess.run(
        [str(venv_python()), "-m", "pip", "freeze"], capture_output=True, text=True
    ).stdout
    pins = [p for p in freeze.splitlines() if p.split("==")[0].lower() in ("sheeprl", "torch", "lightning")]
    print(json.dumps({"what": "sheeprl_install", "ok": True, "venv": str(VENV), "packages": pins}))


# --- SheepRL's update (runs inside SheepRL's virtual environment) -------------------------------------------


def build_sheeprl(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """SheepRL's DreamerV3 for ``args.size`` on a Fabric, and one update of it as a closure."""
    import gymnasium as gym
    import hydra
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf
    from sheeprl.algos.dreamer_v3.agent import build_agent
    from sheeprl.algos.dreamer_v3.dreamer_v3 import train, world_model_learning
    from sheeprl.algos.dreamer_v3.utils import Moments
    from sheeprl.utils.utils import dotdict

    overrides = [SHEEPRL_EXP, f"algo=dreamer_v3_{args.size}", "env.num_envs=1"]
    overrides += [f"fabric.accelerator={args.device}", f"fabric.precision={args.precision}"]
    overrides += [f"algo.per_rank_batch_size={args.batch}", f"algo.per_rank_sequence_length={args.length}"]
    overrides += [f"env.screen_size={args.image_size}"]
    with initialize_config_module("sheeprl.configs", version_base="1.3"):
        cfg = dotdict(OmegaConf.to_container(compose("config", overrides=overrides), resolve=True))
    # as SheepRL's CLI (sheeprl/cli.py run_algorithm) does before it builds the agent; threads are --threads
    torch.distributions.Distribution.set_default_validate_args(cfg.distribution.validate_args)
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    torch.manual_seed(0)
    fabric = hydra.utils.instantiate(cfg.fabric, callbacks=[], _convert_="all")
    device = torch.device(args.device)
    obs_space = gym.spaces.Dict(
        {"rgb": gym.spaces.Box(0, 255, (3, args.image_size, args.image_size), "uint8")}
    )
    actions_dim = (args.action_dim,)
    world_model, actor, critic, target_critic, _ = build_agent(fabric, actions_dim, True, cfg, obs_space)
    algo = cfg.algo
    optimizers = fabric.setup_optimizers(
        *[
            hydra.utils.instantiate(part.optimizer, params=module.parameters(), _convert_="all")
            for part, module in ((algo.world_model, world_model), (algo.actor, actor), (algo.critic, critic))
        ]
    )
    p = algo.actor.moments
    moments = Moments(p.decay, p.max, p.percentile.low, p.percentile.high)
    g = torch.Generator().manual_seed(0)
    shape = (args.length, args.batch)  # time-major
    batch = {
        "rgb": torch.randint(0, 256, (*shape, 3, args.image_size, args.image_size), generator=g).float(),
        "actions": torch.rand(*shape, args.action_dim, generator=g) * 2 - 1,
        "rewards": torch.rand(*shape, 1, generator=g),
        "terminated": torch.zeros(*shape, 1),
        "truncated": torch.zeros(*shape, 1),
        "is_first": torch.zeros(*shape, 1),
    }
    batch = {k: v.to(device) for k, v in batch.items()}
    tau = algo.critic.tau

    def full() -> None:  # as SheepRL's main loop: target-critic EMA, then train()
        for param, target in zip(critic.module.parameters(), target_critic.parameters()):
            target.data.copy_(tau * param.data + (1 - tau) * target.data)
        train(
            fabric,
            world_model,
            actor,
            critic,
            target_critic,
            *optimizers,
            batch,
            None,
            cfg,
            True,
            actions_dim,
            moments,
        )

    def world_model_only() -> None:
        world_model_learning(fabric, cfg, world_model, optimizers[0], batch)
        optimizers[0].zero_grad(set_to_none=True)

    wm = algo.world_model
    dims = dict(
        deter=wm.recurrent_model.recurrent_state_size,
        stoch=wm.stochastic_size,
        classes=wm.discrete_size,
        hidden=algo.dense_units,
        mlp_layers=algo.mlp_layers,
        cnn_depth=wm.encoder.cnn_channels_multiplier,
        batch=args.batch,
        length=args.length,
        image_size=args.image_size,
        action_dim=args.action_dim,
        horizon=algo.horizon if args.what == "full" else 0,
        params=sum(p.numel() for m in (world_model, actor, critic) for p in m.parameters())
        if args.what == "full"
        else sum(p.numel() for p in world_model.parameters()),
    )
    return (full if args.what == "full" else world_model_only), dims


def sheeprl_worker(args: argparse.Namespace) -> None:
    import platform
    from importlib.metadata import version

    base_rss = rss_mb()
    step, dims = build_sheeprl(args)
    info = {
        "what": WHATS[args.what],
        "impl": "sheeprl",
        "device": args.device,
        "size": args.size,
        "variant": "sheeprl-defaults",
        "switches": {
            "optimizer": "fused",
            "precision": args.precision,
            "validate_args": torch.distributions.Distribution._validate_args,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        },
        "dims": dims,
        "threads": torch.get_num_threads(),
        "base_rss_mb": round(base_rss, 1),
        "torch": torch.__version__,
        "lightning": version("lightning"),
        "sheeprl": version("sheeprl"),
        "python": platform.python_version(),
    }
    serve(step, torch.device(args.device), info)


# --- command line ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--setup", action="store_true", help=f"install {SHEEPRL} into {VENV} and exit")
    parser.add_argument("--sizes", nargs="+", default=["S"], choices=SIZES)
    parser.add_argument("--what", nargs="+", default=["full"], choices=list(WHATS))
    parser.add_argument("--ours-variant", default="base", choices=list(VARIANTS))
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"], help="both")
    parser.add_argument(
        "--sheeprl-python",
        default=None,
        help=f"the Python that has SheepRL (default {VENV}/bin/python); e.g. a GPU machine's own python3 with "
        "SheepRL's wheels on PYTHONPATH (scripts/gpu_check.sh)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", choices=SIZES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.setup:
        setup()
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        args.what = args.what[0]
        sheeprl_worker(args)
        return
    sheeprl_python = args.sheeprl_python or str(venv_python())
    if args.sheeprl_python is None and not venv_python().exists():
        parser.error(f"no SheepRL environment at {VENV}: run `python {Path(__file__).name} --setup` first")
    for size in args.sizes:
        for what in args.what:
            ours = worker_command(args, size, what, args.ours_variant, precision=args.precision)
            theirs = [
                sheeprl_python,
                str(Path(__file__).resolve()),
                "--worker",
                "--size",
                size,
                "--what",
                what,
            ]
            theirs += ["--device", args.device, "--precision", args.precision, "--batch", str(args.batch)]
            theirs += ["--length", str(args.length), "--image-size", str(args.image_size)]
            theirs += ["--action-dim", str(args.action_dim)] + (
                ["--threads", str(args.threads)] if args.threads else []
            )
            label = {"size": size, "what": what}
            lines = run_workers(
                [(ours, {**label, "impl": "ours"}), (theirs, {**label, "impl": "sheeprl"})], args
            )
            for line in lines:
                print(json.dumps(line), flush=True)
            mine, sheeprl = lines
            print(
                json.dumps(
                    {
                        "what": "side_by_side",
                        "case": WHATS[what],
                        "size": size,
                        "device": args.device,
                        "threads": mine["threads"],
                        "ours_variant": args.ours_variant,
                        "precision": args.precision,
                        "speedup": round(sheeprl["median_s"] / mine["median_s"], 2),
                        "rss_ratio": round(mine["peak_mem_mb"] / sheeprl["peak_mem_mb"], 2),
                        "ours_median_s": mine["median_s"],
                        "sheeprl_median_s": sheeprl["median_s"],
                        "load1": [a for pair in zip(mine["load1"], sheeprl["load1"]) for a in pair],
                        "sheeprl": sheeprl.get("sheeprl"),
                        "torch": mine["torch"],
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
