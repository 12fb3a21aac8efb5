"""The online loop shared by the PlaNet and Dreamer heads: seed episodes, then alternate training and acting.

The Lightning Trainer owns the loop. ``OnlineDataModule`` owns the environments and the episode store: it
collects ``seed_episodes`` with random actions before training, serves replay windows from the store, and
``collect(agent, ...)`` steps the environments with the agent's policy, writing each episode in progress to
the store as chunks of ``chunk_steps`` steps and every finished episode as one file (all atomically), where
the replay sampler picks them up: an episode is replayed while it is still being collected. ``EnvLoop`` is
the callback that calls it after training steps and logs env steps, episodes and returns: every
``train_every`` steps for ``collect_steps`` vector steps or ``collect_episodes`` episodes (PlaNet), or, with
``train_ratio``, after every training step for as many steps as keep the train ratio (Dreamer,
``TrainRatio``).

Resuming needs no extra state: episodes live on disk, and env-step counters are derived from the store (finished
episodes and the written chunks of unfinished ones). A run killed mid-episode leaves that episode's chunks; the
next start closes them into a truncated episode (``EpisodeStore.close_unfinished``), so every written step is
kept once and ``agent_steps()`` reads the same before and after; the steps held in memory since the last chunk
were never written or counted, and are lost. At the end of a run (``teardown``) an episode in progress that has
written chunks is stored as a truncated episode with all its steps; one without chunks is dropped, as before.
With ``offline=True`` there is no environment: the replay is the episode store (or video folder with sidecar
actions and rewards) at ``path`` as it is, and training stops by ``trainer.max_steps``.
An agent is any LightningModule with

    agent.act(obs (N, H, W, 3) uint8, is_first (N,) bool, state, explore: bool) -> (action (N, A), state)

whose actions are in [-1, 1] (continuous) or one-hot (discrete), i.e. the layout of batches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import lightning as L
import numpy as np
import torch
from torch import Tensor

from worldmodels import envs
from worldmodels.collect import collect as collect_random
from worldmodels.data import SequenceDataModule
from worldmodels.errors import ConfigError
from worldmodels.store import EpisodeStore, new_key


class Agent(Protocol):
    def act(self, obs: Tensor, is_first: Tensor, state: Any, explore: bool) -> tuple[Tensor, Any]: ...


class TrainRatio:
    """The vector-env steps to collect after each training step so that replayed steps per collected policy
    step equal ``ratio`` (DreamerV3's train ratio; policy steps count after action repeat, as in its code).

    A training step replays ``batch_steps`` = batch_size * length steps and so earns batch_steps / ratio policy
    steps; fractions carry over. With batch 16 x 64 and ratio 512, one env collects 2 steps per training step;
    4 envs collect one vector step (4 policy steps) every second training step.
    """

    def __init__(self, ratio: float, batch_steps: int, num_envs: int = 1) -> None:
        if ratio <= 0:
            raise ConfigError(f"train_ratio={ratio}: use a positive number (DreamerV3 DMC: 512)")
        self.per_train_step, self.num_envs, self.owed = batch_steps / ratio, num_envs, 0.0

    def __call__(self) -> int:
        """One more training step happened -> vector steps to collect now (often 0 when the ratio is high)."""
        self.owed += self.per_train_step
        steps = int(self.owed // self.num_envs)
        self.owed -= steps * self.num_envs
        return steps


class OnlineDataModule(SequenceDataModule):
    """Environments + episode store + replay for an online agent.

    PlaNet's schedule is ``seed_episodes=5, train_every=100, collect_episodes=1`` (Hafner et al. 2019, Sec. 4);
    Dreamer's is set by ``train_ratio`` (replayed steps per policy step, DreamerV3: 512 for DMC), which, when
    given, replaces ``train_every``, ``collect_steps`` and ``collect_episodes`` (see ``TrainRatio``).
    ``max_env_steps`` stops training once the store holds that many environment steps (action repeat
    included).

    ``chunk_steps`` (default 64): an episode in progress is written every ``chunk_steps`` policy steps, and
    replay draws windows from it once its written steps reach the window ``length``, instead of after the
    whole episode. 64 is the DreamerV3 batch length (Table W.1, ``length`` in configs/dreamer_*.yaml): one
    chunk holds one training window, the earliest an episode can give one. With 4 envs at train ratio 512
    (batch 16 x 64) each env collects 0.5 steps per training step, so a 500-step episode gives its first window
    after 128 updates instead of 1000; it costs one file of 64 frames per env every 64 steps, deleted when the
    episode finishes. ``0`` writes finished episodes only.

    ``overlap`` (default False; used with 2 or more envs): the envs run as two groups of worker processes (3
    envs: 2 + 1) and ``collect`` chooses one group's actions while the other group steps, instead of acting for
    all envs and then waiting for them all; the stored episodes are the same. It pays where ``act`` on half the
    envs costs about half as much as on all of them, or the envs are slow. The DreamerV3-S ``act`` is mostly a
    fixed cost per call (9 ms for 2 envs, 11 ms for 4 on one Zen3 core): split in two it adds ~7 ms of CPU per
    vector step, and on 2 cores the overlap only breaks even with 4 or 8 envs (docs/benchmarks.md, section 3).
    ``act_threads`` (default 1; None keeps the count set) is the torch thread count while acting, restored
    after each ``collect``: one thread beat two by 14-36% with 4 envs on 2 cores; a switch costs 0.05-0.25 ms.
    """

    def __init__(
        self,
        path: str,
        env: str | None = None,
        offline: bool = False,
        size: int | None = None,
        action_repeat: int | None = None,
        num_envs: int = 1,
        seed_episodes: int = 5,
        train_every: int = 100,
        collect_episodes: int = 0,
        collect_steps: int = 0,
        train_ratio: float | None = None,
        max_env_steps: int | None = None,
        batch_size: int = 50,
        length: int = 50,
        workers: int = 0,
        seed: int = 0,
        replay_budget_mb: int = 2048,
        chunk_steps: int = 64,
        overlap: bool = False,
        act_threads: int | None = 1,
    ) -> None:
        if chunk_steps < 0:
            raise ConfigError(
                f"chunk_steps={chunk_steps}: use 0 (finished episodes only) or a positive number"
            )
        self.chunk_steps, self.overlap, self.act_threads = chunk_steps, overlap, act_threads
        self.env_spec, self.num_envs, self.offline = env, num_envs, offline
        self.action_repeat, self.max_env_steps, self.ratio_schedule = action_repeat, None, None
        self.train_every, self.collect_episodes, self.collect_steps = (
            train_every,
            collect_episodes,
            collect_steps,
        )
        self._envs: Any = None
        if not offline:  # offline, the store (or video folder) at path is the replay as it is
            size = size or 64
            self._prepare_online(
                path, size, seed_episodes, train_ratio, max_env_steps, batch_size * length, seed
            )
        super().__init__(
            path,
            batch_size=batch_size,
            length=length,
            size=size,
            workers=workers,
            seed=seed,
            replay_budget_mb=replay_budget_mb,
        )
        if not offline:
            self.store = EpisodeStore(
                path, cache_bytes=0
            )  # the writer's view: counts steps, keeps no episodes
            self._rng = np.random.default_rng(seed + 1)
            self.store.record_provenance(
                dict(
                    policy="the agent being trained (online collection)",
                    env=self.env_spec,
                    size=size,
                    action_repeat=self.action_repeat,
                    seed=seed,
                    num_envs=self.num_envs,
                )
            )

    def _prepare_online(
        self,
        path: str,
        size: int,
        seed_episodes: int,
        train_ratio: float | None,
        max_env_steps: int | None,
        batch_steps: int,
        seed: int,
    ) -> None:
        """Check the collection schedule and fill the store with its random seed episodes."""
        env = self.env_spec
        if env is None:
            raise ConfigError(
                f"OnlineDataModule(path={path!r}) has no env: give data.env (e.g. dmc:walker-walk), or learn from "
                "the store alone with --offline true"
            )
        self.action_repeat = self.action_repeat or envs.default_action_repeat(env)
        self.max_env_steps = max_env_steps
        if self.collect_episodes <= 0 and self.collect_steps <= 0 and train_ratio is None:
            raise ConfigError(
                f"OnlineDataModule(env={env!r}) collects nothing: set collect_episodes, collect_steps or "
                "train_ratio to a positive number"
            )
        if train_ratio is not None:
            self.ratio_schedule = TrainRatio(train_ratio, batch_steps, self.num_envs)
        store_size = 0
        if Path(path).is_dir():
            store = EpisodeStore(path, cache_bytes=0)
            store.close_unfinished()  # episodes a killed run left unfinished become truncated episodes first
            store_size = len(store)
        if store_size < seed_episodes:
            collect_random(
                env,
                seed_episodes - store_size,
                path,
                size=size,
                action_repeat=self.action_repeat,
                seed=seed,
                workers=min(self.num_envs, seed_episodes - store_size),
            )

    # -- counters derived from the store -----------------------------------------------------------------

    def agent_steps(self) -> int:
        """Policy steps stored (transitions: each episode's first step is a reset, not a step), in finished
        episodes and in the written chunks of unfinished ones."""
        self.store.refresh()
        unfinished = self.store.unfinished().values()
        return sum(self.store.lengths()) - len(self.store) + sum(unfinished) - len(unfinished)

    def env_steps(self) -> int:
        return self.agent_steps() * self.action_repeat

    # -- acting -------------------------------------------------------------------------------------------

    def _start(self) -> None:
        seed = int(self._rng.integers(2**31))
        n = self.num_envs
        # two groups whose steps overlap (the first takes the odd env), or one
        bounds = [0, (n + 1) // 2, n] if self.overlap and n > 1 else [0, n]
        self._groups = [slice(a, b) for a, b in zip(bounds, bounds[1:])]
        self._envs = []
        for group in self._groups:  # each group's envs are seeded seed + start ... as one vector env would be
            self._envs.append(
                envs.make_vector(
                    self.env_spec,
                    group.stop - group.start,
                    size=self.size,
                    action_repeat=self.action_repeat,
                    seed=seed + group.start,
                    processes=n > 1,
                )
            )
        self._obs = [env.reset(seed=seed + g.start)[0] for env, g in zip(self._envs, self._groups)]
        self._is_first = np.ones(n, bool)
        self._needs_reset = np.zeros(n, bool)
        self._buffers: list[dict[str, list]] = [self._new_buffer(o) for obs in self._obs for o in obs]
        self._policy_state: list[Any] = [None] * len(self._groups)  # the agent's carry, one per group
        self._pending: list[np.ndarray | None] = [None] * len(self._groups)  # actions sent, not yet received

    def _new_buffer(self, obs: np.ndarray) -> dict[str, Any]:
        """An episode in progress: its steps so far, its store key, how many steps are in written chunks."""
        first_action = -1 if self.discrete else np.zeros(self.action_dim, np.float32)
        return {
            "image": [obs],
            "action": [first_action],
            "reward": [0.0],
            "terminal": False,
            "key": new_key(),
            "written": 0,
        }

    def _steps(self, buffer: dict[str, Any], start: int, end: int) -> dict[str, np.ndarray]:
        """Steps [start, end) of a buffer in the store layout; is_last and is_terminal all False."""
        flags = np.zeros(end - start, bool)
        is_first = flags.copy()
        is_first[0] = start == 0
        actions = buffer["action"][start:end]
        return dict(
            image=np.stack(buffer["image"][start:end]),
            action=np.array(actions, np.int64) if self.discrete else np.stack(actions),
            reward=np.array(buffer["reward"][start:end], np.float32),
            is_first=is_first,
            is_last=flags.copy(),
            is_terminal=flags.copy(),
        )

    def _write_chunk(self, buffer: dict[str, Any]) -> None:
        start, end = buffer["written"], len(buffer["image"])
        self.store.write_chunk(buffer["key"], start, self._steps(buffer, start, end))
        buffer["written"] = end

    def _finish(self, buffer: dict[str, Any]) -> float:
        """Store the whole episode as one finished file (its chunks, if any, are deleted after)."""
        episode = self._steps(buffer, 0, len(buffer["image"]))
        episode["is_last"][-1], episode["is_terminal"][-1] = True, buffer["terminal"]
        self.store.add(episode, key=buffer["key"])
        return float(episode["reward"].sum())

    @torch.no_grad()
    def collect(self, agent: Agent, steps: int = 0, episodes: int = 0, explore: bool = True) -> list[float]:
        """Step all envs with ``agent`` for ``steps`` vector steps, or until ``episodes`` episodes finish.
        Returns the returns of the episodes finished meanwhile (partial episodes carry over to the next call).

        With ``overlap`` the envs are two groups: while one group's workers step, ``agent.act`` chooses the
        other group's actions and the loop stores the steps just received, so a step of every env is a round
        of the two groups. The stores' contents are those of the one-group loop (``overlap=False``) given the
        same actions; ``act`` sees half the envs at a time, with a carry per group. With ``episodes`` each
        round ends with both groups received, so the loop stops where the one-group loop would. Nothing is in
        flight when it returns. ``agent.act`` runs with ``act_threads`` torch threads (the count before is
        restored on return)."""
        if self._envs is None:
            self._start()
        returns: list[float] = []
        threads = torch.get_num_threads()
        if self.act_threads and self.act_threads != threads:
            torch.set_num_threads(self.act_threads)
        try:
            done = 0
            while (steps and done < steps) or (episodes and len(returns) < episodes):
                for g in range(len(self._groups)):
                    self._advance(agent, g, explore, returns)
                if episodes or len(self._groups) == 1:
                    self._drain(returns)
                done += 1
            self._drain(returns)
        finally:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
        return returns

    def _advance(self, agent: Agent, g: int, explore: bool, returns: list[float]) -> None:
        """Group ``g``: receive its step in flight (if any), choose and send its next actions, then store the
        received step while the envs step."""
        received = self._receive(g) if self._pending[g] is not None else None
        group = self._groups[g]
        action, self._policy_state[g] = agent.act(
            torch.from_numpy(self._obs[g]),
            torch.from_numpy(self._is_first[group]),
            self._policy_state[g],
            explore,
        )
        action = action.detach().float().cpu().numpy()
        env_action = action.argmax(-1) if self.discrete else np.clip(action, -1, 1)
        if isinstance(self._envs[g], gym.vector.AsyncVectorEnv):
            self._envs[g].step_async(env_action)
        self._pending[g] = env_action
        if received is not None:
            self._record(group, *received, returns)

    def _drain(self, returns: list[float]) -> None:
        """Receive and store every group's step in flight."""
        for g, group in enumerate(self._groups):
            if self._pending[g] is not None:
                self._record(group, *self._receive(g), returns)

    def _receive(self, g: int) -> tuple[np.ndarray, ...]:
        """Wait for group ``g``'s step -> (env_action (n, ...), obs (n, H, W, 3), reward (n,), terminated (n,),
        truncated (n,), is_first (n,): the obs starts an episode); updates the group's obs and flags."""
        env, env_action, group = self._envs[g], self._pending[g], self._groups[g]
        self._pending[g] = None
        if isinstance(env, gym.vector.AsyncVectorEnv):
            obs, reward, terminated, truncated, _ = env.step_wait()
        else:
            obs, reward, terminated, truncated, _ = env.step(env_action)
        is_first = self._needs_reset[group].copy()  # gymnasium's next-step autoreset: a reset obs, no step
        self._obs[g], self._is_first[group] = obs, is_first
        self._needs_reset[group] = terminated | truncated
        return env_action, obs, reward, terminated, truncated, is_first

    def _record(
        self,
        group: slice,
        env_action: np.ndarray,
        obs: np.ndarray,
        reward: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        is_first: np.ndarray,
        returns: list[float],
    ) -> None:
        """Append one received step of the envs in ``group`` to their episodes: a reset obs starts a new
        buffer, an episode's end is stored (its return appended to ``returns``), a full chunk is written."""
        for j, i in enumerate(range(group.start, group.stop)):
            if is_first[j]:
                self._buffers[i] = self._new_buffer(obs[j])
                continue
            buffer = self._buffers[i]
            buffer["image"].append(obs[j])
            buffer["action"].append(int(env_action[j]) if self.discrete else env_action[j].astype(np.float32))
            buffer["reward"].append(float(reward[j]))
            if terminated[j] or truncated[j]:
                buffer["terminal"] = bool(terminated[j])
                returns.append(self._finish(buffer))
            elif self.chunk_steps and len(buffer["image"]) - buffer["written"] >= self.chunk_steps:
                self._write_chunk(buffer)

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint, so `worldmodels eval` knows the env and action repeat trained on."""
        return {
            "env": self.env_spec,
            "action_repeat": self.action_repeat,
            "size": self.size,
            "offline": self.offline,
        }

    def teardown(self, stage: str) -> None:
        """Close the envs; an episode in progress with written chunks is stored, truncated, with all its steps
        (one without chunks was never visible and is dropped)."""
        if self._envs is not None:
            for buffer, finished in zip(self._buffers, self._needs_reset):
                if buffer["written"] and not finished:
                    self._finish(buffer)
            for env in self._envs:
                env.close()
            self._envs = None


class EnvLoop(L.Callback):
    """After training steps, act in the environments and log what happened: every ``datamodule.train_every``
    steps, or as ``datamodule.ratio_schedule`` asks after each step."""

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        dm: OnlineDataModule = trainer.datamodule
        if dm.offline:
            return
        if dm.ratio_schedule is not None:
            steps, episodes = dm.ratio_schedule(), 0
            if steps == 0:
                return
        elif trainer.global_step % dm.train_every:
            return
        else:
            steps, episodes = dm.collect_steps, dm.collect_episodes
        pl_module.train(False)
        returns = dm.collect(pl_module, steps=steps, episodes=episodes)
        pl_module.train(True)
        metrics = {"env/steps": float(dm.env_steps()), "env/episodes": float(len(dm.store))}
        if returns:
            metrics["env/return"] = float(np.mean(returns))
            pl_module.print(
                f"step {trainer.global_step}: env steps {int(metrics['env/steps'])}, "
                f"episodes {len(dm.store)}, return {metrics['env/return']:.1f}"
            )
        for name, value in metrics.items():
            pl_module.log(name, value, prog_bar=name != "env/episodes")
        if dm.max_env_steps is not None and metrics["env/steps"] >= dm.max_env_steps:
            trainer.should_stop = True
