"""`worldmodels eval`: run any trained agent (controller, PlaNet, Dreamer), or a planner inside any world model,
in its environment.

    worldmodels eval --ckpt CKPT --env SPEC --episodes N [--video out.mp4]
    worldmodels eval --ckpt FIT.ckpt --env SPEC --planner cem --objective goal:IMAGE.png
    worldmodels eval --ckpt FIT.ckpt --objective goal:STORE --goal_offset 10 --episodes 30   (agents/goals.py)

An agent checkpoint names its class (``checkpoint["model_class"]``); the class either is a LightningModule
(``load_from_checkpoint``) or has a ``load(path)`` classmethod. A world-model checkpoint of ``worldmodels fit``
(RSSM, MDN-RNN) becomes a planning agent around the frozen model (``load_eval_agent``). Agents act through

    agent.act(obs (N, H, W, 3) uint8, is_first (N,) bool, state, explore: bool) -> (action (N, A), state)

A world model fitted on data without rewards (a store collected with ``--no_rewards``, videos without reward
sidecars) learned a reward head that predicts zeros: planning for ``reward`` with it is planning at random, so
``check_reward_objective`` refuses that (one line naming the data) rather than report random actions as a
planner's result.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from worldmodels import envs
from worldmodels.checkpoints import WORLD_MODEL_CLASSES, import_class, read_model_class
from worldmodels.dreaming import add_gif, write_video
from worldmodels.errors import CheckpointError, ConfigError

AGENT_CLASSES = (
    "agents.controller.ControllerAgent",
    "agents.planet.PlaNetAgent",
    "agents.dreamer.DreamerAgent",
    "agents.mbpo.MBPOAgent",
    "agents.distill.DistilledPolicy",
)


def load_agent(path: str | Path, device: str = "cpu") -> Any:
    """Load an agent checkpoint of any head."""
    name = read_model_class(path)
    if name not in AGENT_CLASSES:
        raise CheckpointError(
            f"{path}: not an agent checkpoint (class {name!r}); give a checkpoint written by `worldmodels agent "
            "controller|planet|dreamer|mbpo|distill` (world-model checkpoints of `worldmodels fit`: load_eval_agent)"
        )
    cls = import_class(name)
    if hasattr(cls, "load_from_checkpoint"):
        agent = cls.load_from_checkpoint(path, map_location=device)
    else:
        agent = cls.load(path, device=device)
    return agent.eval() if hasattr(agent, "eval") else agent


def load_eval_agent(
    path: str | Path,
    planner: str | None = None,
    planner_options: dict[str, Any] | None = None,
    device: str = "cpu",
) -> Any:
    """What `worldmodels eval --ckpt` runs: an agent checkpoint as ``load_agent`` loads it, or, for a world-model
    checkpoint of ``worldmodels fit`` (RSSM, MDN-RNN), a ``PlaNetAgent`` planning inside the frozen model with
    ``planner`` (default "cem") and ``planner_options`` (default: the planner's own, agents/planners.py). The
    planner options apply to world models only: an agent acts as it was trained."""
    if read_model_class(path) in WORLD_MODEL_CLASSES:
        from agents.planet import PlaNetAgent

        agent = PlaNetAgent(
            world_model={"ckpt": str(path)},
            train_world_model=False,
            planner=planner or "cem",
            planner_options=planner_options,
        )
        return agent.to(device).eval()
    if planner is not None or planner_options:
        raise ConfigError(
            f"{path}: --planner and --planner_options build a planner around a world-model checkpoint of "
            "`worldmodels fit`; an agent checkpoint acts as it was trained: drop them"
        )
    return load_agent(path, device)


def fit_data(path: str | Path) -> list[Path]:
    """The data a ``worldmodels fit`` checkpoint was trained on: ``data.path`` of the run's ``config.yaml``
    (LightningCLI writes it to the run folder, ``<run>/checkpoints/<name>.ckpt``), the paths that exist from
    here; empty when the run's config is not beside the checkpoint."""
    import yaml

    folder = Path(path).resolve().parent
    config = folder.parent / "config.yaml"
    if folder.name != "checkpoints" or not config.is_file():
        return []
    try:
        data = (yaml.safe_load(config.read_text()) or {}).get("data") or {}
    except yaml.YAMLError:
        return []
    paths = data.get("path") if isinstance(data, dict) else None
    paths = [paths] if isinstance(paths, str) else paths or []
    return [Path(p) for p in paths if isinstance(p, str) and Path(p).exists()]


def has_rewards(path: Path) -> bool:
    """Whether the data at ``path`` holds rewards: a store unless marked ``"rewards": false`` in its
    metadata.json (``worldmodels collect --no_rewards``); a video folder when its sidecars hold ``reward``
    arrays. Other data (HDF5, Minari, LeRobot datasets) is not looked into: True."""
    import json

    from worldmodels.store import METADATA, is_episode_store
    from worldmodels.videos import is_video_folder

    if is_episode_store(path):
        meta = path / METADATA
        return not meta.exists() or json.loads(meta.read_text()).get("rewards", True) is not False
    if not is_video_folder(path):
        return True
    sidecar = next(iter(sorted(path.rglob("*.npz"))), None)
    if sidecar is None:
        return False
    with np.load(sidecar) as labels:
        return "reward" in labels.files


def check_reward_objective(path: str | Path, objective: str) -> None:
    """Refuse ``objective`` "reward" for a world-model checkpoint fitted on data without rewards (module
    docstring); other objectives, agent checkpoints and runs whose data is not found pass."""
    if objective != "reward" or read_model_class(path) not in WORLD_MODEL_CLASSES:
        return
    for data in fit_data(path):
        if not has_rewards(data):
            raise ConfigError(
                f"{path} was fitted on {data}, which holds no rewards (a --no_rewards store or videos without "
                "reward sidecars): its reward head predicts zeros and --objective reward would plan at random; "
                "plan for goal:IMAGE, goal:STORE@EPISODE:FRAME, goal:STORE or module:function"
            )


def check_compatible(agent: Any, env: Any, source: str | Path | None = None) -> None:
    """An agent trained with another action space or image size cannot act in ``env``; ``source`` (its
    checkpoint) is named in the error."""
    dim, discrete = envs.action_dim(env.action_space), envs.is_discrete(env.action_space)
    size = env.observation_space.shape[0]
    if (agent.action_dim, agent.discrete) != (dim, discrete) or agent.image_size != size:
        raise CheckpointError(
            f"{f'{source}: ' if source else ''}agent expects {agent.action_dim}-dim {'discrete' if agent.discrete else 'continuous'} actions and "
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
    progress: bool = False,
    source: str | Path | None = None,
) -> tuple[list[float], list[np.ndarray]]:
    """Play ``episodes`` episodes; returns their returns and their frames (T, H, W, 3) uint8. ``progress``
    shows a bar over the episodes with the last return; ``source`` (the checkpoint) is named in errors."""
    from tqdm import tqdm

    env = envs.make(spec, size=size or agent.image_size, action_repeat=action_repeat, seed=seed)
    check_compatible(agent, env, source)
    discrete = envs.is_discrete(env.action_space)
    returns, videos = [], []
    bar = tqdm(range(episodes), desc=f"eval {spec}", unit="ep", disable=not progress)
    for episode in bar:
        torch.manual_seed(seed + episode)  # a sampling model (z, latents) acts the same in every evaluation
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
        bar.set_postfix(ret=f"{total:.1f}")
    env.close()
    return returns, videos


def trained_action_repeat(path: str | Path, spec: str) -> int | None:
    """The action repeat an online agent (or a controller: ``trained_on``) was trained with on ``spec`` (from its
    checkpoint), else None."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    trained = checkpoint.get("OnlineDataModule") or checkpoint.get("trained_on") or {}
    return trained.get("action_repeat") if trained.get("env") == spec else None


class EvalLoop(L.Callback):
    """Evaluation during an online run: at its start (a fresh run: the untrained policy) and then every
    ``every`` environment steps (action repeat included), ``episodes`` episodes with the policy's mode
    (``explore=True``: sampled actions, the DreamerV3 protocol). Logs ``eval/return`` and ``eval/return_std`` to
    every logger (TensorBoard, the run's CSV), appends a row to ``<run>/eval.csv`` (env_steps, step, return_mean,
    return_std, returns), writes the first episode to ``<run>/eval/step<N>.mp4`` and logs it to TensorBoard as a
    GIF (``eval/video``, every 4th frame)."""

    def __init__(self, every: int, episodes: int = 10, explore: bool = False, seed: int = 10_000) -> None:
        self.every, self.episodes, self.explore, self.seed = every, episodes, explore, seed
        self.next = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        dm = trainer.datamodule
        if dm.offline:
            return
        steps = dm.env_steps()
        if trainer.global_step == 0:
            self.run(trainer, pl_module, steps)
        self.next = (steps // self.every + 1) * self.every

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        dm = trainer.datamodule
        if dm.offline:
            return
        steps = dm.env_steps()
        if steps >= self.next:
            self.run(trainer, pl_module, steps)
            self.next = (steps // self.every + 1) * self.every

    def run(self, trainer: L.Trainer, pl_module: Any, env_steps: int) -> None:
        dm = trainer.datamodule
        pl_module.train(False)
        with torch.random.fork_rng():  # evaluate() seeds torch; training's random stream goes on untouched
            returns, videos = evaluate(
                pl_module, dm.env_spec, self.episodes, dm.size, dm.action_repeat, self.seed, self.explore
            )
        pl_module.train(True)
        mean, std = float(np.mean(returns)), float(np.std(returns))
        for logger in trainer.loggers:
            logger.log_metrics(
                {"eval/return": mean, "eval/return_std": std, "eval/env_steps": env_steps},
                trainer.global_step,
            )
        root = Path(trainer.default_root_dir)
        table = root / "eval.csv"
        new = not table.exists()
        with open(table, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["env_steps", "step", "return_mean", "return_std", "returns"])
            writer.writerow(
                [env_steps, trainer.global_step, f"{mean:.2f}", f"{std:.2f}", json.dumps(returns)]
            )
        write_video(root / "eval" / f"step{trainer.global_step}.mp4", videos[0], fps=30)
        for logger in trainer.loggers:  # every 4th frame of the first episode, as a GIF under Images
            if isinstance(logger, TensorBoardLogger):
                add_gif(logger.experiment, "eval/video", videos[0][::4], trainer.global_step, fps=8)
        pl_module.print(
            f"eval at env step {env_steps}: return {mean:.1f} +- {std:.1f} over {len(returns)} episodes"
        )
