"""`worldmodels dream`: condition a trained model on real frames, dream open loop, write video + metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from worldmodels.checkpoints import load_model, read_model_class
from worldmodels.data import SequenceDataModule
from worldmodels.dreaming import dream, frame_metrics, video_grid, write_metrics, write_video
from worldmodels.errors import ConfigError

DREAMING_MODELS = ("worldmodels.rssm.RSSM", "worldmodels.mdnrnn.MDNRNN")
# Agents whose checkpoints dream too, with their actor (agents/dreamer.py run_dream).
AGENT_DREAMS = ("agents.dreamer.DreamerAgent",)


def load_actions(path: str, shape: tuple[int, int, int]) -> torch.Tensor:
    """Actions for the dream from a .npy file of shape (B, horizon, A) (or (horizon, A), shared by all)."""
    try:
        actions = np.load(path, allow_pickle=False).astype(np.float32)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read actions ({e}); give a .npy array of shape {shape}") from e
    if actions.ndim == 2:
        actions = np.broadcast_to(actions, (shape[0], *actions.shape))
    if actions.shape != shape:
        raise ConfigError(
            f"{path}: actions have shape {actions.shape}, this dream needs (B, horizon, A) = {shape}"
        )
    return torch.from_numpy(np.ascontiguousarray(actions))


def run_dream(args: argparse.Namespace) -> dict[str, Path]:
    """The `worldmodels dream` command. Returns the paths written."""
    if read_model_class(args.ckpt) in AGENT_DREAMS:
        # A Dreamer agent also dreams with its actor. Imported here: worldmodels never imports agents at module level.
        from agents.dreamer import run_dream as run_agent_dream

        return run_agent_dream(args)
    model = load_model(args.ckpt, expect=DREAMING_MODELS)
    length = args.context + args.horizon
    data = SequenceDataModule(args.data, batch_size=args.sequences, length=length, size=model.image_size)
    batch = data.sample_batch(seed=args.seed, contiguous=True)
    mode = args.actions if args.actions in ("recorded", "random") else "recorded"
    if mode == "recorded" and args.actions != "recorded":
        file_actions = load_actions(args.actions, (args.sequences, args.horizon, model.action_dim))
        batch["action"][:, args.context :] = file_actions
    generator = torch.Generator().manual_seed(args.seed)
    out = dream(
        model, batch["image"], batch["action"], batch["is_first"], args.context, args.horizon, mode, generator
    )
    metrics = frame_metrics(out["truth"], out["dream"], last_context=out["context"][:, -1])
    video = Path(args.out)
    video.parent.mkdir(parents=True, exist_ok=True)
    write_video(video, video_grid(out["truth"], out["dream"], out["context_recon"], out["context"]))
    paths = {"video": video, **write_metrics(video.with_name(video.stem + "_metrics"), metrics)}
    print(f"dream: {args.sequences} sequences, {args.context} context + {args.horizon} dreamed steps")
    for name in ("mse", "psnr", "ssim"):
        print(
            f"  {name:>5}: dream {metrics[name].mean():.4f}   copy-last-frame {metrics['baseline_' + name].mean():.4f}"
        )
    for name, path in paths.items():
        print(f"  {name}: {path}")
    return paths
