"""Replay from a folder of videos against replay from an episode store of the same frames: ms per batch.

    python benchmarks/video_replay.py --episodes 8 --length 250 --batches 40
    python benchmarks/video_replay.py --cache-mb 0          # the folder without its decoded-video cache

Writes ``--episodes`` synthetic episodes (a square moving on noise, 64x64) once as an episode store and once as
mp4 videos with sidecars, then times ``SequenceDataModule.train_dataloader()`` batches (B 16 x T 64, the
DreamerV3 batch, no workers) from each, alternating one batch each so both see the same machine load, after
one untimed pass over every episode (the store's and the folder's caches warm). Prints one JSON line per source
and one with the ratio (video / store): the number training on videos pays per batch for its data.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worldmodels.data import SequenceDataModule  # noqa: E402
from worldmodels.dreaming import write_video  # noqa: E402
from worldmodels.store import EpisodeStore  # noqa: E402


def episodes(count: int, length: int, size: int = 64, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """count episodes of (length, size, size, 3) uint8 frames with 2-dim actions and rewards."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        image = rng.integers(0, 40, (length, size, size, 3), dtype=np.uint8)
        x = np.cumsum(rng.integers(-2, 3, length)) % (size - 8)
        for t in range(length):
            image[t, 20:28, x[t] : x[t] + 8] = 220
        flags = np.zeros(length, bool)
        first, last = flags.copy(), flags.copy()
        first[0], last[-1] = True, True
        action = rng.uniform(-1, 1, (length, 2)).astype(np.float32)
        action[0] = 0
        out.append(
            dict(
                image=image,
                action=action,
                reward=rng.random(length).astype(np.float32),
                is_first=first,
                is_last=last,
                is_terminal=flags.copy(),
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--length", type=int, default=250)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--cache-mb", type=int, default=2048, help="replay_budget_mb for both sources")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="video_replay_"))
    store = EpisodeStore(root / "store", create=True, metadata={"env": "synthetic"})
    for i, episode in enumerate(episodes(args.episodes, args.length)):
        store.add(episode)
        write_video(root / "videos" / f"ep{i:03d}.mp4", episode["image"], fps=30, scale=1)
        np.savez(root / "videos" / f"ep{i:03d}.npz", action=episode["action"], reward=episode["reward"])
    loaders = {}
    for name in ("store", "videos"):
        dm = SequenceDataModule(str(root / name), batch_size=16, length=64, replay_budget_mb=args.cache_mb)
        dm.setup("fit")
        loaders[name] = iter(dm.train_dataloader())
        for _ in range(max(1, args.episodes * args.length // (16 * 64) * 3)):  # warm: every episode read
            next(loaders[name])
    times: dict[str, list[float]] = {"store": [], "videos": []}
    for _ in range(args.batches):
        for name, loader in loaders.items():
            start = time.perf_counter()
            next(loader)
            times[name].append(time.perf_counter() - start)
    medians = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    for name, ms in medians.items():
        print(
            json.dumps(
                {
                    "what": "video_replay",
                    "source": name,
                    "ms_per_batch": round(ms, 2),
                    "min_ms": round(min(times[name]) * 1e3, 2),
                    "cache_mb": args.cache_mb,
                }
            )
        )
    ratio = medians["videos"] / medians["store"]
    print(
        json.dumps(
            {"what": "video_replay_ratio", "videos_over_store": round(ratio, 2), "batches": args.batches}
        )
    )


if __name__ == "__main__":
    main()
