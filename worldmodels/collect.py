"""Collect episodes with a random policy into an episode store, in parallel worker processes.

Two random policies: ``uniform`` draws every action from the action space (``action_space.sample()``);
``brownian`` lets continuous actions wander, ``a_{t+1} = clip(a_t + sqrt(dt) * N(0, I))`` from a uniform
first action, with dt = 1/50 as in ctallec/world-models (data/generation_script.py, ``--policy brown``).
Uniform actions make CarRacing's car jitter on its start straight; wandering ones drive it into bends and
onto the grass, the frames a controller later meets.

Frames go through ``worldmodels.envs.make`` as everywhere else (CarRacing: the World Models playfield crop
unless ``crop=False``); the store's metadata records the rows kept (``crop_rows``, null for whole frames), and
adding episodes with other rows to a store is an error.

Every episode file records the seed its environment was reset with (``seed``, worldmodels/store.py), so the
episode can be replayed: reset with that seed, then step its recorded actions (agents/goals.py puts an env in a
stored start state this way). ``rewards=False`` (``worldmodels collect --no_rewards``) stores zeros as rewards
and marks the store ``"rewards": false`` in metadata.json and its provenance: a reward-free store, as video
would be, for world models that are planned with goals instead of rewards."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from worldmodels import envs
from worldmodels.errors import ConfigError
from worldmodels.store import METADATA, Episode, EpisodeStore, write_episode

POLICIES = ("uniform", "brownian")
BROWNIAN_DT = 1 / 50  # ctallec/world-models data/generation_script.py: sample_continuous_policy(..., 1. / 50)


class BrownianActions:
    """A random walk in a Box action space: ``policy(obs) -> action``, seeded, clipped to the box."""

    def __init__(self, space: gym.spaces.Box, seed: int | None = None, dt: float = BROWNIAN_DT) -> None:
        self.low, self.high, self.scale = space.low, space.high, np.sqrt(dt)
        self.rng = np.random.default_rng(seed)
        self.action = self.rng.uniform(self.low, self.high).astype(space.dtype)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        action = self.action
        step = self.scale * self.rng.standard_normal(action.shape)
        self.action = np.clip(action + step, self.low, self.high).astype(action.dtype)
        return action


def random_policy(name: str, space: gym.Space, seed: int | None) -> Any:
    """The random policy ``name`` (POLICIES) for one episode: None (uniform, run_episode samples the space)
    or a callable ``policy(obs) -> action``."""
    if name not in POLICIES:
        raise ConfigError(f"random policy {name!r}: use one of {', '.join(POLICIES)}")
    if name == "uniform":
        return None
    if not isinstance(space, gym.spaces.Box):
        raise ConfigError(f"the brownian policy needs continuous (Box) actions, not {space}; use uniform")
    return BrownianActions(space, seed)


def run_episode(
    env: gym.Env, policy: Any = None, seed: int | None = None, max_steps: int | None = None
) -> Episode:
    """Play one episode. ``policy(obs) -> action``; None samples the action space (seeded by ``seed``).

    Returns the store layout: step 0 is the reset image with a zero (continuous) or -1 (discrete) action;
    with a ``seed``, also ``seed`` (int64 scalar), the seed of the reset."""
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
    episode = dict(
        image=np.stack(images).astype(np.uint8),
        action=np.array(actions, np.int64) if discrete else np.stack(actions).astype(np.float32),
        reward=np.array(rewards, np.float32),
        is_first=is_first,
        is_last=is_last,
        is_terminal=is_terminal,
    )
    if seed is not None:
        episode["seed"] = np.array(seed, np.int64)
    return episode


def drop_rewards(episode: Episode) -> Episode:
    """The episode with zeros as rewards (a reward-free store: ``collect(..., rewards=False)``)."""
    return {**episode, "reward": np.zeros_like(episode["reward"])}


_worker_env: gym.Env | None = None
_worker_args: dict[str, Any] = {}


def _init_worker(
    spec: str,
    size: int,
    action_repeat: int,
    out: str,
    max_steps: int | None,
    policy: str,
    crop: bool | None = None,
    rewards: bool = True,
) -> None:
    global _worker_env, _worker_args
    _worker_env = envs.make(spec, size=size, action_repeat=action_repeat, crop=crop)
    _worker_args = dict(out=out, max_steps=max_steps, policy=policy, rewards=rewards)


def _collect_one(seed: int) -> tuple[int, float]:
    policy = random_policy(_worker_args["policy"], _worker_env.action_space, seed)
    episode = run_episode(_worker_env, policy, seed=seed, max_steps=_worker_args["max_steps"])
    ret = float(episode["reward"].sum())
    write_episode(_worker_args["out"], episode if _worker_args["rewards"] else drop_rewards(episode))
    return len(episode["reward"]), ret


def _check_rewards(out: Path, rewards: bool) -> None:
    """A store holds rewards for all its episodes or for none (``"rewards"`` in metadata.json; stores from
    before the key hold rewards)."""
    path = out / METADATA
    if not path.exists() or not any(out.glob("*.npz")):
        return
    stored = json.loads(path.read_text()).get("rewards", True)
    if stored != rewards:
        kind = "with rewards" if stored else "without rewards (--no_rewards)"
        fix = "drop --no_rewards" if stored else "add --no_rewards"
        raise ConfigError(f"{path}: the store was collected {kind}; {fix} or collect into a new --out")


def _check_crop_rows(out: Path, spec: str, rows: int | None) -> None:
    """New episodes keep the rows of the stored ones (``crop_rows`` in metadata.json). A CarRacing store from
    before the World Models crop and action mapping (no ``crop_rows``) holds whole frames and linearly
    rescaled brakes, so nothing new matches it."""
    path = out / METADATA
    if not path.exists() or not any(out.glob("*.npz")):
        return
    stored = json.loads(path.read_text())
    if "crop_rows" not in stored and envs.env_name(spec) in envs.PLAYFIELD_ROWS:
        raise ConfigError(
            f"{path}: this {spec} store predates the World Models frame crop and brake mapping "
            "(worldmodels/envs.py; no crop_rows in its metadata): collect into a new --out"
        )
    if stored.get("crop_rows", rows) != rows:
        raise ConfigError(
            f"{path}: the store's frames keep crop_rows={stored['crop_rows']}, these would keep {rows}: "
            f"collect with crop={stored['crop_rows'] is not None} or into a new --out"
        )


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
    policy: str = "uniform",
    crop: bool | None = None,
    rewards: bool = True,
) -> list[float]:
    """Add ``episodes`` random-policy episodes of ``spec`` to the store at ``out``; returns their returns (the
    env's, also when ``rewards=False`` stores zeros instead: module docstring).

    ``policy`` is ``uniform`` or ``brownian`` (see the module docstring). ``crop`` (None: ``envs.CROP``) cuts
    frames to the env's playfield rows (``envs.PLAYFIELD_ROWS``, CarRacing's World Models crop).

    Re-running adds episodes: seeds continue after the episodes already stored, so none is repeated."""
    action_repeat = action_repeat or envs.default_action_repeat(spec)
    rows = envs.crop_rows(spec, crop)
    _check_crop_rows(Path(out), spec, rows)
    _check_rewards(Path(out), rewards)
    env = envs.make(spec, size=size, action_repeat=action_repeat, crop=crop)
    try:
        random_policy(
            policy, env.action_space, seed
        )  # an unknown or unsuitable policy fails before any episode
    except ConfigError:
        env.close()
        raise
    metadata = dict(
        env=spec,
        size=size,
        image_shape=[size, size, 3],
        action_repeat=action_repeat,
        crop_rows=rows,
        rewards=rewards,
        observation_space=envs.space_to_json(env.observation_space),
        action_space=envs.space_to_json(env.action_space),
    )
    store = EpisodeStore(out, create=True, metadata=metadata)
    seeds = [seed + len(store) + i for i in range(episodes)]
    store.record_provenance(
        dict(
            policy=policy,
            env=spec,
            size=size,
            action_repeat=action_repeat,
            crop_rows=rows,
            seeds=[seeds[0], seeds[-1]] if seeds else [],
            episodes=episodes,
            max_steps=max_steps,
            rewards=rewards,
        )
    )
    returns: list[float] = []
    bar = tqdm(total=episodes, desc=f"collect {spec}", unit="ep", disable=not progress)
    if workers <= 1:
        for s in seeds:
            episode = run_episode(
                env, random_policy(policy, env.action_space, s), seed=s, max_steps=max_steps
            )
            returns.append(float(episode["reward"].sum()))
            store.add(episode if rewards else drop_rewards(episode))
            bar.update()
            bar.set_postfix(ret=f"{returns[-1]:.1f}", steps=len(episode["reward"]))
    else:
        env.close()
        # Rendering processes must start workers with spawn: fork hangs once MuJoCo/EGL is initialised.
        init = (spec, size, action_repeat, str(out), max_steps, policy, crop, rewards)
        with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=init) as pool:
            for steps, ret in pool.imap_unordered(_collect_one, seeds):
                returns.append(ret)
                bar.update()
                bar.set_postfix(ret=f"{ret:.1f}", steps=steps)
    bar.close()
    env.close()
    return returns
