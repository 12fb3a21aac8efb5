"""One training update of DreamerV3 at its paper sizes, on a synthetic batch: seconds per update.

    python benchmarks/dreamer_update.py --device cpu --threads 2 --sizes S --repeats 3
    python benchmarks/dreamer_update.py --sizes XS S M --what full world_model
    python benchmarks/dreamer_update.py --sizes S --variants base fused channels_last    # fast paths on/off
    python benchmarks/dreamer_update.py --device cuda --sizes S M --variants base bf16
    python benchmarks/dreamer_update.py --sizes S --max-load 0.8 --wait 90    # on a shared machine

``--what full`` times ``DreamerAgent.training_step`` (version v3): the world-model update, the actor update
through 15 imagined steps from every posterior state, the critic update and the slow-critic EMA, three Adam
steps with gradient clipping. ``--what world_model`` times the world-model update alone: ``RSSM.training_step``,
backward, clipping (``configure_gradient_clipping``) and one Adam step. Sizes are the RSSM presets
``dreamerv3-XS|S|M`` (DreamerV3 Table B.1); the batch is B 16 x T 64 of 64x64 uint8 frames with 6-dim
continuous actions (DreamerV3 DMC), random values, episodes starting at t = 0. Weights and values do not change
the cost. The module is attached to a ``lightning.fabric.Fabric`` (as ``training_step`` expects a trainer or a
fabric), which is how SheepRL drives its update (``benchmarks/sheeprl_side_by_side.py``).

Each case (size x what x variant) runs in its own worker process, so that its peak resident set is its own;
with several variants the workers take turns update by update, so that all see the same machine load. On a
shared machine ``--max-load`` makes every timed update wait (at most ``--wait`` seconds, workers idle) until the
1-minute load average is that low: 2-thread kernels slow down several-fold when other processes take a core.
Prints one JSON line per case:

    {"what": "dreamer_update" | "world_model_update", "impl": "worldmodels", "device", "size", "variant",
     "switches": {...}, "dims": {...}, "median_s", "min_s", "times_s", "load1" (1-min load average before each
     timed update), "warmup_s" (the untimed updates first: with ``compile`` the first includes compiling),
     "peak_mem_mb" (CUDA: max allocated; CPU: the worker's peak resident set), "base_rss_mb"
     (resident set with torch imported, before the model's code is imported), "threads", "torch", "lightning",
     "python"}

Variants (fast paths; ``base`` is the toolkit's default):

    base            fp32, torch's default Adam implementation, no compile
    fused           Adam(fused=True)            foreach         Adam(foreach=True)
    channels_last   RSSM(channels_last=True)    compile         RSSM(compile=True): torch.compile of the RSSM step
    bf16            Fabric precision bf16-mixed (autocast: GPUs, and CPUs with AMX-BF16); only the networks
                    compute in bf16, the code between them in float32 (encoders/precision.py)
    bf16_step       bf16-mixed with the whole training step under the one autocast (the layout before issue #19)
    novalidate      torch.distributions.Distribution.set_default_validate_args(False): the Categorical inside
                    OneHotCategorical checks its logits at every construction (a host sync on a GPU)
    fast            fused + channels_last + compile

This file's top-level imports are the standard library and torch only: ``sheeprl_side_by_side.py`` runs its
SheepRL worker with ``serve`` from here, inside SheepRL's own virtual environment.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
BATCH, LENGTH, IMAGE_SIZE, ACTION_DIM = 16, 64, 64, 6  # DreamerV3: batch 16 x length 64; DMC 64x64; walker 6
SIZES = ("XS", "S", "M")
WHATS = {"full": "dreamer_update", "world_model": "world_model_update"}
VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},
    "fused": {"optimizer": "fused"},
    "foreach": {"optimizer": "foreach"},
    "channels_last": {"channels_last": True},
    "compile": {"compile": True},
    "bf16": {"precision": "bf16-mixed"},
    "bf16_step": {"precision": "bf16-mixed", "autocast": "step"},
    "novalidate": {"validate_args": False},
    "fast": {"optimizer": "fused", "channels_last": True, "compile": True},
}
DEFAULT_SWITCHES = {
    "optimizer": "default",
    "channels_last": False,
    "compile": False,
    "precision": "32-true",
    "autocast": "networks",
    "validate_args": True,
}


# --- measuring ----------------------------------------------------------------------------------------------


def rss_mb() -> float:
    """This process's current resident set (Linux /proc), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def load1() -> float:
    """The 1-minute load average of the machine."""
    return os.getloadavg()[0]


def serve(step: Callable[[], None], device: torch.device, info: dict[str, Any]) -> None:
    """Worker loop: print ``info`` as a JSON line, then answer stdin commands, one JSON line each:
    ``step`` (one update, timed: {"s"}), ``reset`` (CUDA peak-memory counter), ``stats`` ({"peak_mem_mb"}),
    ``quit``."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "step":
            sync()
            start = time.perf_counter()
            step()
            sync()
            reply: dict[str, Any] = {"s": time.perf_counter() - start}
        elif command == "reset":
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            reply = {}
        elif command == "stats":
            reply = {"peak_mem_mb": round(peak_mem_mb(device), 1)}
        else:
            return
        print(json.dumps(reply), flush=True)


class Worker:
    """A worker process started with ``command``; its first stdout line is its JSON info."""

    def __init__(self, command: list[str], label: dict[str, Any]) -> None:
        self.label = label
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        self.info = self._reply()
        self.times: list[float] = []
        self.loads: list[float] = []
        self.warmup: list[float] = []  # the untimed updates' seconds: the first includes any compiling

    def _reply(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker {self.label} exited with status {self.proc.wait()}")
        return json.loads(line)

    def ask(self, command: str) -> dict[str, Any]:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait()


def wait_quiet(max_load: float | None, wait_s: float) -> None:
    """Sleep (polling every 5 s, at most ``wait_s``) until the 1-min load average is at most ``max_load``: the
    workers are idle meanwhile, so the average falls towards what other processes put on the machine."""
    deadline = time.monotonic() + wait_s
    while max_load is not None and load1() > max_load and time.monotonic() < deadline:
        time.sleep(5)


def alternate(
    workers: list[Worker], warmup: int, repeats: int, max_load: float | None = None, wait_s: float = 0
) -> None:
    """Warm every worker up, then time ``repeats`` updates of each, taking turns (the order rotates every round,
    so no worker always follows the same one). Before each timed update, waits for a quiet machine
    (``wait_quiet``), then records the 1-min load with the time."""
    for _ in range(warmup):
        for worker in workers:
            worker.warmup.append(worker.ask("step")["s"])
    for worker in workers:
        worker.ask("reset")
    for r in range(repeats):
        for worker in workers[r % len(workers) :] + workers[: r % len(workers)]:
            wait_quiet(max_load, wait_s)
            worker.loads.append(load1())
            worker.times.append(worker.ask("step")["s"])


def result(worker: Worker) -> dict[str, Any]:
    """The JSON line of one finished worker: its info, the times and loads, and its peak memory."""
    times = worker.times
    return {
        **worker.info,
        "median_s": round(statistics.median(times), 3),
        "min_s": round(min(times), 3),
        "times_s": [round(t, 3) for t in times],
        "load1": [round(x, 2) for x in worker.loads],
        "warmup_s": [round(t, 3) for t in worker.warmup],
        **worker.ask("stats"),
    }


def run_workers(
    commands: list[tuple[list[str], dict[str, Any]]], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Start one worker per (command, label), alternate them (``alternate``), return their JSON lines."""
    workers: list[Worker] = []
    try:
        for command, label in commands:
            workers.append(Worker(command, label))
        alternate(workers, args.warmup, args.repeats, args.max_load, args.wait)
        return [result(w) for w in workers]
    finally:
        for worker in workers:
            worker.close()


# --- the toolkit's update -------------------------------------------------------------------------------------


def synthetic_batch(batch: int, length: int, image_size: int, action_dim: int, device: torch.device) -> dict:
    """image (B, T, H, W, 3) uint8, action (B, T, A) in [-1, 1], reward (B, T), flags (B, T): random, seeded;
    every sequence starts an episode at t = 0."""
    g = torch.Generator().manual_seed(0)
    is_first = torch.zeros(batch, length, dtype=torch.bool)
    is_first[:, 0] = True
    out = {
        "image": torch.randint(
            0, 256, (batch, length, image_size, image_size, 3), generator=g, dtype=torch.uint8
        ),
        "action": torch.rand(batch, length, action_dim, generator=g) * 2 - 1,
        "reward": torch.rand(batch, length, generator=g),
        "is_first": is_first,
        "is_last": torch.zeros(batch, length, dtype=torch.bool),
        "is_terminal": torch.zeros(batch, length, dtype=torch.bool),
    }
    return {k: v.to(device) for k, v in out.items()}


def with_optimizer_kind(optimizers: list[torch.optim.Optimizer], kind: str) -> list[torch.optim.Optimizer]:
    """The same optimizers over the same parameter groups with ``fused=True`` or ``foreach=True`` ("default":
    unchanged, as the modules' ``configure_optimizers`` make them)."""
    if kind == "default":
        return optimizers
    flags = {"fused": kind == "fused", "foreach": kind == "foreach"}
    return [
        type(opt)([{**group, **flags} for group in opt.param_groups], **{**opt.defaults, **flags})
        for opt in optimizers
    ]


def build_ours(args: argparse.Namespace) -> tuple[Callable[[], None], dict[str, Any]]:
    """The toolkit's module for ``args.size`` / ``args.what`` on a Fabric, and one update of it as a closure."""
    sys.path.insert(0, str(ROOT))
    from lightning.fabric import Fabric

    from agents.dreamer import DreamerAgent
    from worldmodels.rssm import PRESETS, RSSM

    device = torch.device(args.device)
    if args.autocast == "step":  # float32_between_networks finds no autocast to narrow: one step-wide context
        import encoders.precision

        encoders.precision.DEVICE_TYPES = ()
    torch.manual_seed(0)
    overrides = {"channels_last": args.channels_last, "compile": args.compile}
    preset = f"dreamerv3-{args.size}"
    if args.what == "full":
        sizes = PRESETS[preset]  # actor and critic as wide and deep as the model's MLPs (DreamerV3 Table B.1)
        module = DreamerAgent(
            {"class_path": "worldmodels.rssm.RSSM", "init_args": {"preset": preset, **overrides}},
            version="v3",
            image_size=args.image_size,
            action_dim=args.action_dim,
            hidden=sizes["hidden"],
            actor_layers=sizes["mlp_layers"],
            critic_layers=sizes["mlp_layers"],
        )
        rssm = module.world_model
    else:
        module = rssm = RSSM(preset, image_size=args.image_size, action_dim=args.action_dim, **overrides)
    fabric = Fabric(accelerator=device.type, devices=1, precision=args.precision)
    optimizers = module.configure_optimizers()  # RSSM: one optimizer; DreamerAgent: a list of three
    optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
    module, *optimizers = fabric.setup(module, *with_optimizer_kind(optimizers, args.optimizer))
    module = module.module  # call training_step itself: it steps its own optimizers (manual optimization)
    batch = synthetic_batch(args.batch, args.length, args.image_size, args.action_dim, device)

    def full() -> None:
        with fabric.autocast():
            module.training_step(batch, 0)

    def world_model() -> None:  # Lightning's automatic optimization of RSSM, step by step
        optimizer = optimizers[0]
        optimizer.zero_grad(set_to_none=True)
        with fabric.autocast():
            loss = module.training_step(batch, 0)
        fabric.backward(loss)
        module.configure_gradient_clipping(optimizer)
        optimizer.step()

    cfg = rssm.config
    dims = dict(
        deter=cfg["deter"],
        stoch=cfg["stoch"],
        classes=cfg["classes"],
        hidden=cfg["hidden"],
        mlp_layers=cfg["mlp_layers"],
        cnn_depth=cfg["cnn_depth"],
        batch=args.batch,
        length=args.length,
        image_size=args.image_size,
        action_dim=args.action_dim,
        horizon=module.horizon if args.what == "full" else 0,
        params=sum(p.numel() for p in module.parameters() if p.requires_grad),  # not the slow critic
    )
    return (full if args.what == "full" else world_model), dims


def info(args: argparse.Namespace, impl: str, dims: dict[str, Any], base_rss: float) -> dict[str, Any]:
    """The fields every JSON line of a worker starts with."""
    import lightning

    return {
        "what": WHATS[args.what],
        "impl": impl,
        "device": args.device,
        "size": args.size,
        "variant": args.variant,
        "switches": {k: getattr(args, k) for k in DEFAULT_SWITCHES},
        "dims": dims,
        "threads": torch.get_num_threads(),
        "base_rss_mb": round(base_rss, 1),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
    }


# --- command line ---------------------------------------------------------------------------------------------


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed updates per case")
    parser.add_argument("--warmup", type=int, default=1, help="untimed updates per case first")
    parser.add_argument(
        "--max-load", type=float, default=None, help="before each timed update, wait for a 1-min load <= this"
    )
    parser.add_argument("--wait", type=float, default=300, help="longest wait for --max-load, seconds")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--length", type=int, default=LENGTH)
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    parser.add_argument("--action-dim", type=int, default=ACTION_DIM)


def worker_command(
    args: argparse.Namespace, size: str, what: str, variant: str, precision: str | None = None
) -> list[str]:
    """The command line of one of this script's workers; ``precision`` overrides the variant's."""
    switches = {**DEFAULT_SWITCHES, **VARIANTS[variant], **({"precision": precision} if precision else {})}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--size", size, "--what", what]
    command += ["--variant", variant, "--device", args.device]
    command += [
        "--batch",
        str(args.batch),
        "--length",
        str(args.length),
        "--image-size",
        str(args.image_size),
    ]
    command += ["--action-dim", str(args.action_dim), "--optimizer", switches["optimizer"]]
    command += ["--precision", switches["precision"], "--autocast", switches["autocast"]]
    command += ["--channels-last"] * switches["channels_last"] + ["--compile"] * switches["compile"]
    command += ["--no-validate-args"] * (not switches["validate_args"])
    return command + (["--threads", str(args.threads)] if args.threads else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--sizes", nargs="+", default=["S"], choices=SIZES)
    parser.add_argument("--what", nargs="+", default=["full"], choices=list(WHATS))
    parser.add_argument("--variants", nargs="+", default=["base"], choices=list(VARIANTS))
    # one worker: the case to build and serve (set by main for its workers)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", choices=SIZES, help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="base", help=argparse.SUPPRESS)
    parser.add_argument("--optimizer", default="default", choices=["default", "fused", "foreach"])
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    parser.add_argument("--channels-last", action="store_true", help="RSSM(channels_last=True)")
    parser.add_argument("--compile", action="store_true", help="RSSM(compile=True)")
    parser.add_argument(
        "--autocast",
        default="networks",
        choices=["networks", "step"],
        help="bf16: networks only, or the whole step",
    )
    parser.add_argument(
        "--no-validate-args",
        dest="validate_args",
        action="store_false",
        help="no distribution argument checks",
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible to torch")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        args.what = args.what[0]
        torch.distributions.Distribution.set_default_validate_args(args.validate_args)
        base_rss = rss_mb()
        step, dims = build_ours(args)
        serve(step, torch.device(args.device), info(args, "worldmodels", dims, base_rss))
        return
    for size in args.sizes:
        for what in args.what:
            commands = [
                (worker_command(args, size, what, v), {"size": size, "what": what, "variant": v})
                for v in args.variants
            ]
            for line in run_workers(commands, args):
                print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
