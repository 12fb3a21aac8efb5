"""What a planner maximizes: objectives scored on imagined rollouts, chosen per run and swappable at test time.

A planner rolls candidate action sequences forward in the model's dream (``rollout``) and asks an objective
for one score per candidate. The world model is task-agnostic; the objective is the task:

    reward                     the model's reward head, with continuation and an optional terminal value
                               (PlaNet, Hafner et al. 2019; the same return as ``agents.planners.imagine_returns``)
    goal:IMAGE.png             reach the state of a goal image ...
    goal:STORE@EPISODE:FRAME   ... or of a frame of an episode store (filtered with the episode's context)
    module:function            a user's reward on features (and, optionally, decoded images)

Every objective reads the model through ``worldmodels.interface`` only, so it works on every model family,
including reward-free ones (trained on video or on a store without rewards): ``goal:`` never calls the reward
head. Scores are differentiable in the actions wherever the model's ``imagine`` is (the gradient planners).

Goal cost. The goal's latent is the model's posterior for the goal frame, features g (F,) averaged over
``GOAL_SAMPLES`` filter samples; the cost of an imagined state is ``distance(features(s_t), g)``:

* ``l2`` (default): the mean squared difference over feature dimensions, the planning cost of DINO-WM (Zhou et
  al. 2024, Eq. 3: MSE between predicted and goal embeddings). It compares every part of the state (an RSSM's
  deterministic h and its stochastic z), is smooth everywhere (the gradient planner needs that) and is zero
  exactly at the goal's features.
* ``cosine``: 1 - cos(features, g), which ignores the features' scale; for models whose feature norm varies
  with things the goal does not care about.

``goal_steps="all"`` (default) scores the mean cost over the imagined steps, so a plan that gets there sooner
and stays scores better and a receding-horizon controller has a signal at every step; ``"final"`` scores only
the last imagined state (the goal-at-the-horizon formulation of DINO-WM and PlaNet-style goal MPC).

An image goal has no context, so an RSSM's deterministic state would be its initial one: the image is observed
``goal_repeat`` times in a row with zero actions (the model's view of "staying at that image") and the last
posterior is the goal. A store frame is filtered with its episode's frames and actions up to it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor

from worldmodels.errors import ConfigError
from worldmodels.interface import State, WorldModel, last_step, stack_time

GOAL_SAMPLES = 8  # filter samples averaged into the goal's features (the posterior is stochastic)
GOAL_REPEAT = 5  # an image goal is observed this many times with zero actions (module docstring)
DISTANCES = ("l2", "cosine")
GOAL_STEPS = ("all", "final")


class Rollout:
    """Candidate action sequences imagined from start states: what an objective scores.

    ``actions`` (M, H, A); ``steps`` the start state and the H imagined states, each (M, ...), or, for a rollout
    in feature space (an ensemble's particles), ``features`` (M, H+1, F) directly. ``features`` (M, H+1, F)
    holds the start state's features and those of the H imagined states; ``reward()`` and ``cont()`` (M, H)
    belong to the imagined states: reward[:, t] is earned on the step that led to state t + 1. Each is
    computed on first use, so an objective pays only for what it reads."""

    def __init__(
        self,
        model: WorldModel,
        actions: Tensor,
        steps: list[State] | None = None,
        features: Tensor | None = None,
    ) -> None:
        if (steps is None) == (features is None):
            raise ValueError("Rollout: give the states (steps) or the features, not both")
        self.model, self.actions, self.steps = model, actions, steps
        self._cache: dict[str, Tensor] = {} if features is None else {"features": features}

    @property
    def features(self) -> Tensor:
        if "features" not in self._cache:
            self._cache["features"] = torch.stack([self.model.features(s) for s in self.steps], 1)
        return self._cache["features"]

    def reward(self) -> Tensor:
        if "reward" not in self._cache:
            if self.steps is None:
                self._cache["reward"] = self.model.reward_from_features(self.features[:, 1:])
            else:
                self._cache["reward"] = torch.stack([self.model.reward(s) for s in self.steps[1:]], 1)
        return self._cache["reward"]

    def cont(self) -> Tensor:
        if "cont" not in self._cache:
            if self.steps is None:
                self._cache["cont"] = self.model.cont_from_features(self.features[:, 1:])
            else:
                self._cache["cont"] = torch.stack([self.model.cont(s) for s in self.steps[1:]], 1)
        return self._cache["cont"]

    def last_features(self) -> Tensor:
        """features (M, F) of the last imagined state (without stacking the others)."""
        if "features" in self._cache or self.steps is None:
            return self.features[:, -1]
        return self.model.features(self.steps[-1])

    def images(self) -> Tensor:
        """The imagined states decoded: (M, H, h, w, 3) uint8 (not differentiable)."""
        if self.steps is None:
            raise ConfigError(
                "an objective that reads decoded images needs the model's own rollouts; trajectory sampling "
                "rolls out an ensemble in feature space, which has no images: drop trajectory_sampling"
            )
        return self.model.decode(stack_time(self.steps[1:]))


def rollout(model: WorldModel, state: State, actions: Tensor) -> Rollout:
    """state (M, ...), actions (M, H, A) -> the imagined ``Rollout`` (differentiable: the caller chooses
    ``torch.no_grad``)."""
    steps = [state]
    for t in range(actions.shape[1]):
        steps.append(model.imagine(steps[-1], actions[:, t]))
    return Rollout(model, actions, steps)


def discounted_sum(rewards: Tensor, cont: Tensor, discount: float) -> tuple[Tensor, Tensor]:
    """rewards, cont (M, H) -> (sum_t discount^t c_t rewards[:, t] (M,), discount^H c_(H+1) (M,)), with
    c_1 = 1 and c_(t+1) = c_t * cont[:, t - 1]: a step counts only while the episode is still running."""
    horizon = rewards.shape[1]
    alive = torch.cumprod(torch.cat([torch.ones_like(cont[:, :1]), cont], 1), 1)  # (M, H+1)
    powers = discount ** torch.arange(horizon + 1, device=rewards.device, dtype=rewards.dtype)
    weights = powers * alive
    return (weights[:, :-1] * rewards).sum(1), weights[:, -1]


class Objective:
    """Scores rollouts: ``objective(rollout) -> (M,)``, higher is better. ``name`` is how runs and tables
    show it; ``needs_reward`` marks objectives that read the model's reward head."""

    name = "objective"
    needs_reward = False

    def __call__(self, rollout: Rollout) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


class RewardObjective(Objective):
    """The model's rewards (PlaNet's sum with ``discount=1``), with continuation, an optional terminal value
    ``value_fn(features (M, F)) -> (M,)`` and an ensemble's disagreement times ``ensemble_scale`` added to each
    step's reward (negative: cautious, positive: exploring; agents.planners.LatentEnsemble)."""

    name = "reward"
    needs_reward = True

    def __init__(
        self,
        discount: float = 0.99,
        value_fn: Callable[[Tensor], Tensor] | None = None,
        ensemble: Any = None,
        ensemble_scale: float = 0.0,
    ) -> None:
        self.discount, self.value_fn = discount, value_fn
        self.ensemble, self.ensemble_scale = ensemble, ensemble_scale

    def __call__(self, rollout: Rollout) -> Tensor:
        rewards = rollout.reward()
        if self.ensemble is not None and self.ensemble_scale != 0.0:
            m, h = rollout.actions.shape[:2]
            before = rearrange(rollout.features[:, :-1], "m h f -> (m h) f")
            actions = rearrange(rollout.actions, "m h a -> (m h) a")
            bonus = self.ensemble.disagreement(before, actions).reshape(m, h)
            rewards = rewards + self.ensemble_scale * bonus
        returns, weight = discounted_sum(rewards, rollout.cont(), self.discount)
        if self.value_fn is not None:
            returns = returns + weight * self.value_fn(rollout.last_features())
        return returns


class GoalObjective(Objective):
    """Minus the distance of the imagined features to a goal's: ``goal`` (G, F) is one goal for every
    environment (G = 1) or one per environment (G = N, candidates ordered environment-major, as the planners
    lay them out). See the module docstring for the distances and ``steps``."""

    def __init__(self, goal: Tensor, distance: str = "l2", steps: str = "all", name: str = "goal") -> None:
        if distance not in DISTANCES:
            raise ConfigError(f"goal distance {distance!r} is unknown; use one of {list(DISTANCES)}")
        if steps not in GOAL_STEPS:
            raise ConfigError(f"goal steps {steps!r} is unknown; use one of {list(GOAL_STEPS)}")
        self.goal, self.distance, self.steps, self.name = goal, distance, steps, name

    def cost(self, features: Tensor) -> Tensor:
        """features (M, ..., F) -> distance to the goal (M, ...)."""
        goals, m = self.goal.to(features), features.shape[0]
        if m % goals.shape[0]:
            raise ConfigError(
                f"GoalObjective holds {goals.shape[0]} goals for {m} candidates: give one goal, or one per env"
            )
        goals = repeat(goals, "g f -> (g r) f", r=m // goals.shape[0])
        goals = goals.reshape(m, *[1] * (features.ndim - 2), goals.shape[-1])
        if self.distance == "cosine":
            return 1.0 - F.cosine_similarity(features, goals.expand_as(features), dim=-1)
        return (features - goals).square().mean(-1)

    def __call__(self, rollout: Rollout) -> Tensor:
        imagined = rollout.features[:, 1:]
        if self.steps == "final":
            return -self.cost(imagined[:, -1])
        return -self.cost(imagined).mean(1)


class FunctionObjective(Objective):
    """A user's reward ``fn(features (M, H, F)) -> (M, H)``, or ``fn(features, images)`` when ``fn`` has an
    ``images`` parameter (decoded (M, H, h, w, 3) uint8), summed like the model's rewards (discount,
    continuation). It may return (M,) for a whole-sequence score instead."""

    def __init__(self, fn: Callable[..., Tensor], discount: float = 0.99, name: str = "function") -> None:
        self.fn, self.discount, self.name = fn, discount, name
        self.wants_images = "images" in inspect.signature(fn).parameters

    def __call__(self, rollout: Rollout) -> Tensor:
        features = rollout.features[:, 1:]
        out = self.fn(features, images=rollout.images()) if self.wants_images else self.fn(features)
        if out.shape == features.shape[:1]:
            return out
        if out.shape != features.shape[:2]:
            raise ConfigError(
                f"objective {self.name} returned shape {tuple(out.shape)}; it must return per-step rewards "
                f"(M, H) = {tuple(features.shape[:2])} or one score per candidate (M,)"
            )
        return discounted_sum(out, rollout.cont(), self.discount)[0]


# --- building objectives from their names -----------------------------------------------------------------


@torch.no_grad()
def goal_features(model: WorldModel, images: Tensor, actions: Tensor | None = None) -> Tensor:
    """images (G, T, H, W, 3) uint8 with the actions (G, T, A) that led to them (None: zeros), the first frame
    an episode start -> the goals' features (G, F): the filtered posterior at the last frame, averaged over
    ``GOAL_SAMPLES`` samples of the filter."""
    g, t = images.shape[:2]
    device = next(iter(model.parameters())).device if hasattr(model, "parameters") else images.device
    images = images.to(device)
    actions = torch.zeros(g, t, model.action_dim, device=device) if actions is None else actions.to(device)
    is_first = torch.zeros(g, t, dtype=torch.bool, device=device)
    is_first[:, 0] = True
    k = GOAL_SAMPLES
    tile = lambda x: repeat(x, "g ... -> (g k) ...", k=k)  # noqa: E731
    post = last_step(model.observe(tile(images), tile(actions).float(), tile(is_first)))
    return rearrange(model.features(post).float(), "(g k) f -> g k f", k=k).mean(1)


def read_goal_image(path: str | Path, size: int) -> np.ndarray:
    """A PNG/JPG file -> (size, size, 3) uint8, center-cropped and resized as video frames are."""
    from worldmodels.videos import load_frame, square

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"goal image {path} does not exist: give a PNG/JPG file or STORE@EPISODE:FRAME")
    return square(load_frame(path), size)


def store_frame(spec: str) -> tuple[str, int, int]:
    """``STORE@EPISODE:FRAME`` -> (store path, episode index, frame index)."""
    path, _, where = spec.rpartition("@")
    episode, _, frame = where.partition(":")
    if not path or not episode.isdigit() or not frame.isdigit():
        raise ConfigError(
            f"goal {spec!r}: a store frame is written STORE@EPISODE:FRAME, e.g. data/reacher@3:25"
        )
    return path, int(episode), int(frame)


def goal_from_store(model: WorldModel, path: str, episode: int, frame: int) -> Tensor:
    """The features (1, F) of ``frame`` of the store's ``episode``, filtered with the episode up to it."""
    from worldmodels.store import EpisodeStore

    store = EpisodeStore(path)
    if not 0 <= episode < len(store):
        raise ConfigError(f"goal {path}@{episode}:{frame}: the store has episodes 0..{len(store) - 1}")
    data = store.episode(episode)
    if not 0 <= frame < len(data["image"]):
        raise ConfigError(
            f"goal {path}@{episode}:{frame}: episode {episode} has frames 0..{len(data['image']) - 1}"
        )
    window = store.read(episode, 0, frame + 1)  # discrete actions come one-hot
    images = torch.from_numpy(window["image"])[None]
    actions = torch.from_numpy(window["action"][:, : model.action_dim])[None]
    return goal_features(model, images, actions)


def goal_from_image(model: WorldModel, path: str, repeat_steps: int = GOAL_REPEAT) -> Tensor:
    """The features (1, F) of a goal image observed ``repeat_steps`` times with zero actions."""
    image = torch.from_numpy(read_goal_image(path, model.image_size).copy())
    return goal_features(model, image[None, None].expand(1, repeat_steps, *image.shape).contiguous())


def load_function(spec: str) -> Callable[..., Tensor]:
    """``module:function`` -> the function (the module is imported as Python would, from sys.path)."""
    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(
            f"objective {spec!r}: cannot import {name} from {module} ({e}); give module:function on the Python "
            "path (e.g. PYTHONPATH=. and my_rewards:upright)"
        ) from e
    if not callable(fn):
        raise ConfigError(f"objective {spec!r}: {name} is not a function")
    return fn


def make_objective(
    spec: str,
    model: WorldModel,
    *,
    discount: float = 0.99,
    value_fn: Callable[[Tensor], Tensor] | None = None,
    ensemble: Any = None,
    ensemble_scale: float = 0.0,
    goal_distance: str = "l2",
    goal_steps: str = "all",
    goal_repeat: int = GOAL_REPEAT,
) -> Objective:
    """An objective by name (module docstring): "reward", "goal:IMAGE", "goal:STORE@EPISODE:FRAME", or
    "module:function". ``discount`` applies to reward and function objectives; ``value_fn`` and the ensemble
    to "reward" only; the goal options to goals only."""
    if spec == "reward":
        return RewardObjective(discount, value_fn, ensemble, ensemble_scale)
    if spec.startswith("goal:"):
        target = spec[len("goal:") :]
        if "@" in target and not Path(target).is_file():
            goal = goal_from_store(model, *store_frame(target))
        else:
            goal = goal_from_image(model, target, goal_repeat)
        return GoalObjective(goal, goal_distance, goal_steps, name=spec)
    if ":" in spec:
        return FunctionObjective(load_function(spec), discount, name=spec)
    raise ConfigError(
        f"objective {spec!r} is unknown: use reward, goal:IMAGE.png, goal:STORE@EPISODE:FRAME or module:function"
    )
