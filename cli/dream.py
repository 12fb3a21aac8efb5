"""`worldmodels dream`: condition a trained model on real frames, dream open loop, write video + metrics.

A world-model checkpoint (RSSM, MDN-RNN) dreams with the recorded, random or given actions. A Dreamer agent's
checkpoint dreams twice from the same start, with those actions and with its actor choosing (its mode, as
when evaluated); the video shows truth | dream | error | actor's dream | its difference to the truth, and the
metrics add the predicted rewards and critic values of both dreams.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from worldmodels.checkpoints import WORLD_MODEL_CLASSES, load_model, read_model_class
from worldmodels.data import SequenceDataModule
from worldmodels.dreaming import dream, frame_metrics, plot_values, video_grid, write_metrics, write_video
from worldmodels.errors import ConfigError

AGENT_DREAMS = ("agents.dreamer.DreamerAgent",)  # agents whose checkpoints dream with their actor
GRID_PAD = 2  # pixels between the cells of the video


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
    agent = None
    if read_model_class(args.ckpt) in AGENT_DREAMS:
        from agents.evaluate import load_agent

        agent = load_agent(args.ckpt)
        model = agent.world_model
    else:
        model = load_model(args.ckpt, expect=WORLD_MODEL_CLASSES)
    length = args.context + args.horizon
    data = SequenceDataModule(
        args.data,
        batch_size=args.sequences,
        length=length,
        size=model.image_size,
        camera=getattr(args, "camera", None),
    )
    batch = data.sample_batch(seed=args.seed, contiguous=True)
    mode = args.actions if args.actions in ("recorded", "random") else "recorded"
    if mode == "recorded" and args.actions != "recorded":
        file_actions = load_actions(args.actions, (args.sequences, args.horizon, model.action_dim))
        batch["action"][:, args.context :] = file_actions
    generator = torch.Generator().manual_seed(args.seed)
    extra = {} if agent is None else {"policy": agent.policy, "value": agent.value}
    with torch.random.fork_rng():
        torch.manual_seed(args.seed)  # the prior's samples
        out = dream(
            model,
            batch["image"],
            batch["action"],
            batch["is_first"],
            args.context,
            args.horizon,
            mode,
            generator,
            **extra,
        )
    metrics = frame_metrics(out["truth"], out["dream"], last_context=out["context"][:, -1])
    frames = video_grid(out["truth"], out["dream"], out["context_recon"], out["context"], pad=GRID_PAD)
    video = Path(args.out)
    video.parent.mkdir(parents=True, exist_ok=True)
    if agent is not None:
        acted = video_grid(
            out["truth"],
            out["dream_policy"],
            out["context_recon"],
            out["context"],
            pad=GRID_PAD,
            labels=("truth", "actor", "error"),
        )
        width = out["truth"].shape[3]
        frames = np.concatenate([frames, acted[:, :, GRID_PAD + width :]], axis=2)  # without its truth column
        metrics["reward_true"] = batch["reward"][:, args.context : length].float().mean(0).numpy()
        metrics |= {k: v.mean(0) for k, v in out.items() if k.startswith(("reward_", "value_"))}
    write_video(video, frames)
    paths = {"video": video, **write_metrics(video.with_name(video.stem + "_metrics"), metrics)}
    print(
        f"dream: {args.sequences} sequences, {args.context} context + {args.horizon} dreamed steps ({args.actions} actions)"
    )
    for name in ("mse", "psnr", "ssim"):
        print(
            f"  {name:>5}: dream {metrics[name].mean():.4f}   copy-last-frame {metrics['baseline_' + name].mean():.4f}"
        )
    if agent is not None:
        paths["values_png"] = plot_values(video.with_name(video.stem + "_values.png"), metrics)
        for name in ("reward_true", "reward_pred", "reward_policy", "value_dream", "value_policy"):
            print(f"  {name:>13}: sum over the dream {metrics[name].sum():.3f}")
    for name, path in paths.items():
        print(f"  {name}: {path}")
    return paths
