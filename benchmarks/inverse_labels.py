"""World models trained on video with actions inferred by an inverse model, against action-free and true actions.

    python benchmarks/inverse_labels.py --root runs/inverse_labels                    # docs/inverse.md's table
    python benchmarks/inverse_labels.py --root runs/inverse_labels --reuse --seed 1   # the RSSMs of another seed

On PixelPoint (worldmodels/pixel_point.py: a dot moved by 0.25 a per step, 16x16 frames, 31 frames an episode),
with the `worldmodels` commands a user would run:

1. ``collect`` a small labelled store (``--labelled`` episodes), the episodes behind a folder of videos
   (``--videos`` episodes) and a test store (``--test`` episodes), each from its own seeds;
2. write the video episodes as png frame folders three times: without sidecars (action-free), with sidecars of
   the recorded actions (true), and without, to be labelled (inferred);
3. ``fit`` the inverse model of configs/inverse_1step.yaml on the labelled store, ``label`` the third folder;
4. ``fit`` the same small RSSM on each folder for ``--rssm_steps`` steps;
5. dream open loop on the test store's episodes (never trained on): ``--context`` frames observed, then
   ``--horizon`` frames dreamed with the *recorded* actions (none for the action-free model); per-frame MSE of
   pixels in [0, 1], and the copy-last-frame baseline's.

Prints and writes ``<root>/results_seed<seed>.json``: per model the dream MSE (mean over the horizon and over its first and
last 5 steps), and the inverse model's held-out skill and its labels' error on the video folder's true actions.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from worldmodels.checkpoints import WORLD_MODEL_CLASSES, load_model  # noqa: E402
from worldmodels.data import SequenceDataModule  # noqa: E402
from worldmodels.dreaming import dream, frame_metrics  # noqa: E402
from worldmodels.store import EpisodeStore  # noqa: E402

ENV = "worldmodels.pixel_point:PixelPoint-v0"
SIZE = 16
MODELS = ("action-free", "inferred", "true")
RSSM = [  # a small DreamerV3-style RSSM for 16x16 frames (configs/tiny_rssm.yaml, widened)
    "-c",
    "configs/tiny_rssm.yaml",
    "--model.init_args.deter=64",
    "--model.init_args.hidden=64",
    "--model.init_args.cnn_depth=8",
    "--model.init_args.stoch=8",
    "--model.init_args.classes=8",
    "--model.init_args.lr=1e-3",
    "--data.size=16",
    "--data.batch_size=16",
    "--data.length=16",
    "--checkpoint_every=1000",  # the recipe's 25 is for tests
]


def worldmodels(*args: str) -> float:
    """Run `worldmodels ARGS` as a user would (a subprocess); its wall time in seconds. Raises on failure."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    command = [sys.executable, "-m", "cli", *args]
    print("$ worldmodels " + " ".join(args), flush=True)
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"`worldmodels {' '.join(args)}` failed:\n{run.stderr[-3000:]}")
    return time.perf_counter() - start


def export(store: EpisodeStore, folder: Path, sidecars: bool) -> None:
    """Every episode of ``store`` as a png frame folder ``ep<i>``; with ``sidecars`` its recorded actions."""
    folder.mkdir(parents=True)
    for i in range(len(store)):
        episode = store.episode(i)
        frames = folder / f"ep{i:04d}"
        frames.mkdir()
        for t, frame in enumerate(episode["image"]):
            iio.imwrite(frames / f"frame{t}.png", frame)
        if sidecars:
            np.savez(folder / f"ep{i:04d}.npz", action=episode["action"].astype(np.float32), continuous=True)


def last_metrics(run: Path) -> dict[str, float]:
    """The last logged value of each metric of a `worldmodels fit` run (its csv logs)."""
    out: dict[str, float] = {}
    for path in sorted(run.glob("csv/version_*/metrics.csv")):
        with open(path) as f:
            for row in csv.DictReader(f):
                out |= {
                    k: float(v) for k, v in row.items() if v not in ("", None) and k not in ("epoch", "step")
                }
    return out


def label_error(store: EpisodeStore, folder: Path) -> dict[str, float]:
    """The inferred sidecars' error against the recorded actions of the same episodes (rows 1..T-1)."""
    errors, truths = [], []
    for i in range(len(store)):
        with np.load(folder / f"ep{i:04d}.npz") as sidecar:
            assert bool(sidecar["inferred"])
            errors.append(sidecar["action"][1:] - store.episode(i)["action"][1:])
        truths.append(store.episode(i)["action"][1:])
    errors, truths = np.concatenate(errors), np.concatenate(truths)
    mse, baseline = float((errors**2).mean()), float(truths.var(0).mean())
    return {"label_mse": mse, "label_baseline_mse": baseline, "label_skill": 1 - mse / baseline}


@torch.no_grad()
def dream_errors(ckpt: Path, test: Path, context: int, horizon: int, sequences: int, seed: int) -> dict:
    """Open-loop dream of the test store's episodes with their recorded actions -> MSE summaries."""
    model = load_model(ckpt, expect=WORLD_MODEL_CLASSES)
    data = SequenceDataModule(str(test), batch_size=sequences, length=context + horizon, size=SIZE)
    batch = data.sample_batch(seed=seed, contiguous=True)
    actions = batch["action"][..., : model.action_dim]  # the action-free model: zero-width actions
    torch.manual_seed(seed)
    out = dream(model, batch["image"], actions, batch["is_first"], context, horizon, "recorded")
    metrics = frame_metrics(out["truth"], out["dream"], last_context=out["context"][:, -1])
    mse, copy = metrics["mse"], metrics["baseline_mse"]
    return {
        "mse": float(mse.mean()),
        "mse_first5": float(mse[:5].mean()),
        "mse_last5": float(mse[-5:].mean()),
        "copy_last_frame_mse": float(copy.mean()),
        "ssim": float(metrics["ssim"].mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("runs/inverse_labels"))
    parser.add_argument("--labelled", type=int, default=40, help="episodes of the labelled store")
    parser.add_argument("--videos", type=int, default=200, help="episodes written as videos")
    parser.add_argument("--test", type=int, default=50, help="episodes of the test store")
    parser.add_argument("--inverse_steps", type=int, default=1500)
    parser.add_argument("--rssm_steps", type=int, default=2000)
    parser.add_argument("--context", type=int, default=5)
    parser.add_argument("--horizon", type=int, default=20)
    parser.add_argument("--sequences", type=int, default=100, help="test windows dreamed")
    parser.add_argument("--seed", type=int, default=0, help="of the RSSM fits and of the test windows")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep what an earlier run of --root made (stores, folders, models)",
    )
    args = parser.parse_args()
    root = args.root.resolve()
    if root.exists() and not args.reuse:
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    stores = {
        "labelled": (args.labelled, 0),
        "video_episodes": (args.videos, 10_000),
        "test": (args.test, 20_000),
    }
    for name, (episodes, seed) in stores.items():
        if not (root / name).exists():
            seconds[f"collect {name}"] = worldmodels(
                "collect", "--env", ENV, "--episodes", str(episodes), "--out", str(root / name),
                "--size", str(SIZE), "--action_repeat", "1", "--seed", str(seed), "--workers", "1",
            )  # fmt: skip
    video_store = EpisodeStore(root / "video_episodes")
    folders = {m: root / f"videos_{m.replace('-', '_')}" for m in MODELS}
    for model, folder in folders.items():
        if not folder.exists():
            export(video_store, folder, sidecars=model == "true")
    inverse = root / "inverse"
    if not (inverse / "checkpoints" / "last.ckpt").exists():
        seconds["fit inverse"] = worldmodels(
            "fit", "-c", "configs/inverse_1step.yaml", f"--data.path={root / 'labelled'}",
            f"--trainer.default_root_dir={inverse}", f"--trainer.max_steps={args.inverse_steps}",
        )  # fmt: skip
    seconds["label"] = worldmodels(
        "label", "--model", str(inverse / "checkpoints" / "last.ckpt"), "--videos", str(folders["inferred"])
    )
    for model, folder in folders.items():
        run = root / f"rssm_{model.replace('-', '_')}_seed{args.seed}"
        if not (run / "checkpoints" / "last.ckpt").exists():
            seconds[f"fit rssm {model}"] = worldmodels(
                "fit", *RSSM, f"--data.path={folder}", f"--trainer.default_root_dir={run}",
                f"--trainer.max_steps={args.rssm_steps}", f"--seed_everything={args.seed}",
            )  # fmt: skip
    results = {
        "inverse": {k: v for k, v in last_metrics(inverse).items() if k.startswith("val/")}
        | label_error(video_store, folders["inferred"]),
        "dream": {
            model: dream_errors(
                root / f"rssm_{model.replace('-', '_')}_seed{args.seed}" / "checkpoints" / "last.ckpt",
                root / "test",
                args.context,
                args.horizon,
                args.sequences,
                args.seed,
            )
            for model in MODELS
        },
        "seconds": seconds,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    (root / f"results_seed{args.seed}.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
