"""Collect episodes with a random policy into an episode store, in parallel worker processes."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from worldmodels import envs
from worldmodels.store import Episode, EpisodeStore, write_episode


def run_episode(
    env: gym.Env, policy: Any = None, seed: int | None = None, max_steps: int | None = None
) -> Episode:
    """Play one episode. ``policy(obs) -> action``; None samples the action space (seeded by ``seed``).

    Returns the store layout: step 0 is the reset image with a zero (continuous) or -1 (discrete) action."""
    discrete = envs.is_discrete(env.action_space)
    if seed is not None:
        env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    first_action = -1 if discrete else np.zeros(env.action_space.shape, np.float32).ravel()
    images, actions, rewards = [obs], [first_action], [0.0]
    terminated = truncated = False
    while not (terminated or truncated):
        action = env.action_space.sample() if policy is None else policy(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        images.append(obs)
        actions.append(int(action) if discrete else np.asarray(action, np.float32).ravel())
        rewards.append(float(reward))
        if max_steps is not None and len(images) > max_steps:
            truncated = True
    length = len(images)
    flags = np.zeros(length, bool)
    is_first, is_last, is_terminal = flags.copy(), flags.copy(), flags.copy()
    is_first[0], is_last[-1], is_terminal[-1] = True, True, terminated
    return dict(
        image=np.stack(images).astype(np.uint8),
        action=np.array(actions, np.int64) if discrete else np.stack(actions).astype(np.float32),
        reward=np.array(rewards, np.float32),
        is_first=is_first,
        is_last=is_last,
        is_terminal=is_terminal,
    )


_worker_env: gym.Env | None = None
_worker_args: dict[str, Any] = {}


def _init_worker(spec: str, size: int, action_repeat: int, out: str, max_steps: int | None) -> None:
    global _worker_env, _worker_args
    _worker_env = envs.make(spec, size=size, action_repeat=action_repeat)
    _worker_args = dict(out=out, max_steps=max_steps)


def _collect_one(seed: int) -> tuple[int, float]:
    episode = run_episode(_worker_env, seed=seed, max_steps=_worker_args["max_steps"])
    write_episode(_worker_args["out"], episode)
    return len(episode["reward"]), float(episode["reward"].sum())


def collect(
    spec: str,
    episodes: int,
    out: str | Path,
    size: int = 64,
    action_repeat: int | None = None,
    seed: int = 0,
    workers: int = 1,
    max_steps: int | None = None,
    progress: bool = True,
) -> list[float]:
    """Add ``episodes`` random-policy episodes of ``spec`` to the store at ``out``; returns their returns.

    Re-running adds episodes: seeds continue after the episodes already stored, so none is repeated."""
    action_repeat = action_repeat or envs.default_action_repeat(spec)
    env = envs.make(spec, size=size, action_repeat=action_repeat)
    metadata = dict(
        env=spec,
        size=size,
        image_shape=[size, size, 3],
        action_repeat=action_repeat,
        observation_space=envs.space_to_json(env.observation_space),
        action_space=envs.space_to_json(env.action_space),
    )
    store = EpisodeStore(out, create=True, metadata=metadata)
    seeds = [seed + len(store) + i for i in range(episodes)]
    returns: list[float] = []
    bar = tqdm(total=episodes, desc=f"collect {spec}", unit="ep", disable=not progress)
    if workers <= 1:
        for s in seeds:
            episode = run_episode(env, seed=s, max_steps=max_steps)
            store.add(episode)
            returns.append(float(episode["reward"].sum()))
            bar.update()
            bar.set_postfix(ret=f"{returns[-1]:.1f}", steps=len(episode["reward"]))
    else:
        env.close()
        # Rendering processes must start workers with spawn: fork hangs once MuJoCo/EGL is initialised.
        init = (spec, size, action_repeat, str(out), max_steps)
        with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=init) as pool:
            for steps, ret in pool.imap_unordered(_collect_one, seeds):
                returns.append(ret)
                bar.update()
                bar.set_postfix(ret=f"{ret:.1f}", steps=steps)
    bar.close()
    env.close()
    return returns
