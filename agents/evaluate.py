"""`worldmodels eval`: run any trained agent (controller, PlaNet, Dreamer) in its environment.

    worldmodels eval --ckpt CKPT --env SPEC --episodes N [--video out.mp4]

An agent checkpoint names its class (``checkpoint["model_class"]``); the class either is a LightningModule
(``load_from_checkpoint``) or has a ``load(path)`` classmethod. Agents act through

    agent.act(obs (N, H, W, 3) uint8, is_first (N,) bool, state, explore: bool) -> (action (N, A), state)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldmodels import envs
from worldmodels.checkpoints import import_class, read_model_class
from worldmodels.errors import CheckpointError

AGENT_CLASSES = (
    "agents.controller.ControllerAgent",
    "agents.planet.PlaNetAgent",
    "agents.dreamer.DreamerAgent",
)


def load_agent(path: str | Path, device: str = "cpu") -> Any:
    """Load an agent checkpoint of any head."""
    name = read_model_class(path)
    if name not in AGENT_CLASSES:
        raise CheckpointError(
            f"{path}: not an agent checkpoint (class {name!r}); `worldmodels eval` takes a checkpoint written by "
            "`worldmodels agent controller|planet|dreamer` (world-model checkpoints go to `worldmodels dream`)"
        )
    cls = import_class(name)
    if hasattr(cls, "load_from_checkpoint"):
        agent = cls.load_from_checkpoint(path, map_location=device)
    else:
        agent = cls.load(path, device=device)
    return agent.eval() if hasattr(agent, "eval") else agent


def check_compatible(agent: Any, env: Any) -> None:
    """An agent trained with another action space or image size cannot act in ``env``."""
    dim, discrete = envs.action_dim(env.action_space), envs.is_discrete(env.action_space)
    size = env.observation_space.shape[0]
    if (agent.action_dim, agent.discrete) != (dim, discrete) or agent.image_size != size:
        raise CheckpointError(
            f"agent expects {agent.action_dim}-dim {'discrete' if agent.discrete else 'continuous'} actions and "
            f"{agent.image_size}px images; env has {dim}-dim {'discrete' if discrete else 'continuous'} actions and "
            f"{size}px images: evaluate on the env it was trained on (with --size {agent.image_size})"
        )


@torch.no_grad()
def evaluate(
    agent: Any,
    spec: str,
    episodes: int = 10,
    size: int | None = None,
    action_repeat: int | None = None,
    seed: int = 0,
    explore: bool = False,
) -> tuple[list[float], list[np.ndarray]]:
    """Play ``episodes`` episodes; returns their returns and their frames (T, H, W, 3) uint8."""
    env = envs.make(spec, size=size or agent.image_size, action_repeat=action_repeat, seed=seed)
    check_compatible(agent, env)
    discrete = envs.is_discrete(env.action_space)
    returns, videos = [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        state, is_first, frames, total, done = None, True, [obs], 0.0, False
        while not done:
            obs_batch = torch.from_numpy(np.array(obs)[None])  # a writable copy (gym may return read-only)
            action, state = agent.act(obs_batch, torch.tensor([is_first]), state, explore)
            action = action[0].float().cpu().numpy()
            obs, reward, terminated, truncated, _ = env.step(int(action.argmax()) if discrete else action)
            frames.append(obs)
            total += float(reward)
            is_first, done = False, terminated or truncated
        returns.append(total)
        videos.append(np.stack(frames))
    env.close()
    return returns, videos


def trained_action_repeat(path: str | Path, spec: str) -> int | None:
    """The action repeat an online agent was trained with on ``spec`` (from its checkpoint), else None."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    trained = checkpoint.get("OnlineDataModule") or {}
    return trained.get("action_repeat") if trained.get("env") == spec else None
