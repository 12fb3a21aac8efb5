"""Where one DreamerV3 update spends its time: ``torch.profiler`` over ours or SheepRL's, per op and per shape.

    python benchmarks/profile_update.py --impl ours --size M --threads 2
    .bench/sheeprl-venv/bin/python benchmarks/profile_update.py --impl sheeprl --size M --threads 2

The update is the one ``dreamer_update.py`` / ``sheeprl_side_by_side.py`` time (same synthetic batch, dims and
settings; ``--what full`` or ``world_model``). Two untimed warm-up updates, one timed update printed as
``update s``, then one profiled update: the ops by self CPU time, then the same grouped by input shapes (where
a surprising ``aten::bmm`` or copy shows up with its shapes). SheepRL runs in its own virtual environment
(``sheeprl_side_by_side.py --setup``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dreamer_update  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    dreamer_update.add_common_args(parser)
    parser.add_argument("--impl", default="ours", choices=["ours", "sheeprl"])
    parser.add_argument("--size", default="S", choices=dreamer_update.SIZES)
    parser.add_argument("--what", default="full", choices=list(dreamer_update.WHATS))
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    parser.add_argument("--rows", type=int, default=30, help="rows of each table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads or torch.get_num_threads())
    if args.impl == "ours":
        for key, value in dreamer_update.DEFAULT_SWITCHES.items():
            if key != "precision":
                setattr(args, key, value)
        step, dims = dreamer_update.build_ours(args)
    else:
        import sheeprl_side_by_side

        step, dims = sheeprl_side_by_side.build_sheeprl(args)
    for _ in range(2):
        step()
    start = time.perf_counter()
    step()
    print(
        f"{args.impl} {args.size} {args.what} {args.precision}: update s {time.perf_counter() - start:.3f} {dims}"
    )
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    by_shape = prof.key_averages(group_by_input_shape=True)
    print(by_shape.table(sort_by="self_cpu_time_total", row_limit=args.rows, max_shapes_column_width=80))


if __name__ == "__main__":
    main()
