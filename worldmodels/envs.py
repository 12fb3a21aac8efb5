"""Pixel environments: dm_control suite tasks and gymnasium ids behind one gymnasium API.

Every env made here observes rendered frames, ``uint8`` ``(size, size, 3)``. Its action space is ``Discrete``
or a ``Box`` rescaled to [-1, 1] (gymnasium's ``RescaleAction``; dm_control's already is), the range agents
act in. Specs:

* ``dmc:<domain>-<task>`` for every task in ``dm_control.suite.ALL_TASKS`` (split on the first ``-``:
  ``dmc:ball_in_cup-catch``, ``dmc:finger-turn_easy``). Frames come from ``physics.render`` at ``size``.
* any registered gymnasium id that renders ``rgb_array`` (``CarRacing-v3``, ``CartPole-v1``, ...), or
  ``package.module:EnvId`` for a custom env that ``package.module`` registers on import.
  Frames are the env's own image observation when it has one (CarRacing), else ``env.render()``. Either is
  resized to ``(size, size)`` by squashing the frame: the aspect ratio is not kept (a 600x400 CartPole frame
  becomes 64x64, the pole a little stretched sideways). Envs listed in ``PLAYFIELD_ROWS`` are first cut to
  their playfield rows when ``crop`` (default ``CROP``, True): CarRacing keeps rows 0:84 and drops its
  dashboard, as World Models does. ``crop`` changes the stored frames, so collection, the controller's
  fitness and evaluation must use the same value; ``preprocess`` is the one function all of them run.

CarRacing's actions follow World Models (``CarRacingActions``): steer = a[0], gas = (a[1] + 1) / 2,
brake = clip(a[2], 0, 1), so an agent output of 0 is half gas and no brake.

The wrapper stack, innermost first: base env -> ``CarRacingActions`` (CarRacing) or ``RescaleAction`` (other
Box envs) -> ``ActionRepeat`` -> ``AddRenderObservation`` (frames are rendered once per agent step, not once
per repeated step) -> ``preprocess`` (crop, resize) -> ``SeedFirstReset``.

dm_control is imported inside functions, after ``MUJOCO_GL`` defaults to ``egl`` (headless rendering), so
``import worldmodels.envs`` stays cheap and works without a display.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import os
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec, load_env_creator, parse_env_id
from gymnasium.wrappers import AddRenderObservation, RescaleAction, TransformObservation
from PIL import Image

from worldmodels.errors import ConfigError, UnknownEnvError

os.environ.setdefault("MUJOCO_GL", "egl")  # headless; must be set before dm_control / mujoco render
# gymnasium's classic-control and Box2D envs draw with pygame even for rgb_array frames; SDL's default video
# driver looks for a display session and prints "error: XDG_RUNTIME_DIR is invalid ..." on a headless machine.
# The dummy driver renders off-screen without that noise (we never open a window).
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

DMC_PREFIX = "dmc:"
# PlaNet (Hafner et al. 2019), Appendix: action repeat per dm_control domain.
PLANET_ACTION_REPEAT = {"cartpole": 8, "reacher": 4, "cheetah": 4, "finger": 2, "ball_in_cup": 4, "walker": 2}
DMC_ACTION_REPEAT = 2  # Dreamer (Hafner et al. 2020) uses 2 for every other domain
DMC_CAMERA = {"quadruped": 2}  # DreamerV1 / DreamerV3 dmc wrapper; every other domain uses camera 0
# World Models (hardmaru/WorldModelsExperiments, carracing/env.py, _process_frame): frame[0:84, :, :], the
# playfield above CarRacing's 12-row dashboard, is what gets resized to 64x64. Keyed by gymnasium env name.
PLAYFIELD_ROWS = {"CarRacing": 84}
# The one default of every ``crop`` option (make, make_vector, collect, the controller): crop as above.
CROP = True


class DMCEnv(gym.Env):
    """A dm_control suite task as a gymnasium env.

    Observations are dm_control's state arrays flattened into one float64 vector; ``render()`` returns the
    ``(size, size, 3)`` uint8 frame of camera ``DMC_CAMERA.get(domain, 0)``. dm_control's time limit ends
    an episode with ``truncated=True``; a real termination (discount 0) with ``terminated=True``.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, domain: str, task: str, size: int = 64) -> None:
        from dm_control import suite

        self._env = suite.load(domain, task)
        self._size = size
        self._camera_id = DMC_CAMERA.get(domain, 0)
        self.render_mode = "rgb_array"
        self.metadata = {**self.metadata, "render_fps": round(1.0 / self._env.control_timestep())}
        quality = self._env.physics.model.vis.quality
        quality.shadowsize = 0  # no shadow map and no multisampling: small frames render ~5x faster
        quality.offsamples = 0
        act = self._env.action_spec()
        low = np.broadcast_to(act.minimum, act.shape).astype(np.float32)
        high = np.broadcast_to(act.maximum, act.shape).astype(np.float32)
        self.action_space = spaces.Box(low, high, dtype=np.float32)
        dim = sum(int(np.prod(s.shape)) for s in self._env.observation_spec().values())
        self.observation_space = spaces.Box(-np.inf, np.inf, (dim,), np.float64)
        # a spec, so gymnasium.make(env.spec) recreates the env with its wrappers (Minari's DataCollector does)
        self.spec = EnvSpec(
            "worldmodels/DMC-v0",
            entry_point="worldmodels.envs:DMCEnv",
            kwargs={"domain": domain, "task": task, "size": size},
        )

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._env.task.random.seed(seed)  # the task draws its initial state from this RandomState
        return self._flat(self._env.reset().observation), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        time_step = self._env.step(action)
        terminated = bool(time_step.last() and time_step.discount == 0)
        truncated = bool(time_step.last() and not terminated)
        return self._flat(time_step.observation), float(time_step.reward), terminated, truncated, {}

    def render(self) -> np.ndarray:  # (size, size, 3) uint8
        # MuJoCo hands back a flipped view (negative strides); torch.from_numpy needs a plain array
        return np.ascontiguousarray(
            self._env.physics.render(self._size, self._size, camera_id=self._camera_id)
        )

    def close(self) -> None:
        self._env.close()

    @staticmethod
    def _flat(observation: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([np.asarray(v, np.float64).ravel() for v in observation.values()])


class ActionRepeat(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Repeat each action ``repeat`` times and sum the rewards; stop early when the episode ends."""

    def __init__(self, env: gym.Env, repeat: int) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, repeat=repeat)  # env.spec can recreate the wrapper
        super().__init__(env)
        self.repeat = repeat

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        total = 0.0
        for _ in range(self.repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


class SeedFirstReset(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Seed the action space now and use ``seed`` for the first ``reset()`` that is given no seed."""

    def __init__(self, env: gym.Env, seed: int | None) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, seed=seed)
        super().__init__(env)
        self._seed = seed
        if seed is not None:
            env.action_space.seed(seed)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if seed is None:
            seed = self._seed
        self._seed = None
        return self.env.reset(seed=seed, options=options)


class CarRacingActions(gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    """CarRacing driven from [-1, 1]^3 as World Models drives it (hardmaru/WorldModelsExperiments,
    carracing/model.py, ``Model.get_action``): steer = a[0], gas = (a[1] + 1) / 2, brake = clip(a[2], 0, 1).

    A tanh output of 0 is half gas and no brake; a linear rescale of [-1, 1] to the brake's [0, 1] would
    brake at 0.5 there, and a zero-initialised controller would never move the car."""

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        super().__init__(env)
        self.action_space = spaces.Box(-1.0, 1.0, (3,), np.float32)

    def action(self, action: np.ndarray) -> np.ndarray:  # (3,) in [-1, 1] -> (steer, gas, brake) (3,)
        a = np.asarray(action, np.float32)
        return np.array([a[0], (a[1] + 1.0) / 2.0, np.clip(a[2], 0.0, 1.0)], np.float32)


ACTION_MAPS = {"CarRacing": CarRacingActions}  # envs whose agent actions are not a linear rescale of the box


def env_name(spec: str) -> str | None:
    """The gymnasium env name of a spec (``CarRacing-v3`` -> ``CarRacing``); None for dm_control specs."""
    if spec.startswith(DMC_PREFIX):
        return None
    try:
        return parse_env_id(spec.split(":", 1)[-1])[1]
    except gym.error.Error:
        return None


def crop_rows(spec: str, crop: bool | None = None) -> int | None:
    """The playfield rows ``make`` keeps of ``spec``'s frames (``PLAYFIELD_ROWS``), None for whole frames.

    ``crop`` None means ``CROP``."""
    return PLAYFIELD_ROWS.get(env_name(spec) or "") if (CROP if crop is None else crop) else None


def _is_unit_box(space: spaces.Box) -> bool:
    return bool(np.all(space.low == -1.0) and np.all(space.high == 1.0))


def make(
    spec: str,
    size: int = 64,
    action_repeat: int | None = None,
    seed: int | None = None,
    crop: bool | None = None,
) -> gym.Env:
    """Make a pixel env from a spec (see the module docstring); observations are ``(size, size, 3)`` uint8.

    ``action_repeat`` defaults to ``default_action_repeat(spec)``. With ``seed`` the action space is seeded
    and the first ``reset()`` behaves like ``reset(seed=seed)``. ``crop`` (None: ``CROP``) cuts frames to
    their ``PLAYFIELD_ROWS`` before the resize.
    """
    if size < 1:
        raise ConfigError(f"env image size must be a positive integer, got size={size}")
    repeat = default_action_repeat(spec) if action_repeat is None else action_repeat
    if repeat < 1:
        raise ConfigError(f"action_repeat must be >= 1, got action_repeat={repeat} for env {spec!r}")
    if spec.startswith(DMC_PREFIX):
        env: gym.Env = DMCEnv(*_dmc_domain_task(spec), size=size)
    elif (
        ":" in spec
    ):  # "package.module:EnvId": import the module that registers a custom env, as gymnasium does
        module, env_id = spec.split(":", 1)
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise UnknownEnvError(f"env spec {spec!r}: cannot import module {module!r} ({e})") from e
        if env_id not in gym.registry:
            raise UnknownEnvError(
                f"env spec {spec!r}: module {module!r} registers no gymnasium id {env_id!r}"
            )
        env = gym.make(env_id, render_mode="rgb_array")
    elif spec in _gym_ids():
        env = gym.make(spec, render_mode="rgb_array")
    else:
        raise _unknown(spec)
    if not isinstance(env.action_space, (spaces.Box, spaces.Discrete)):
        env.close()
        raise UnknownEnvError(
            f"env {spec!r} has action space {env.action_space}; worldmodels supports Box and Discrete "
            "action spaces only: pick another env (run `worldmodels envs` to list valid specs)"
        )
    action_map = ACTION_MAPS.get(env_name(spec) or "")
    if action_map is not None and isinstance(env.action_space, spaces.Box):
        env = action_map(env)
    elif isinstance(env.action_space, spaces.Box) and not _is_unit_box(env.action_space):
        # Agents act in [-1, 1] (tanh actors, clipped planners); the env sees its own bounds.
        env = RescaleAction(env, np.float32(-1.0), np.float32(1.0))
    if repeat > 1:
        env = ActionRepeat(env, repeat)
    if not _is_image_space(env.observation_space):
        env = AddRenderObservation(env, render_only=True)
    rows = crop_rows(spec, crop)
    if rows is not None or env.observation_space.shape != (size, size, 3):
        image_space = spaces.Box(0, 255, (size, size, 3), np.uint8)
        env = TransformObservation(env, functools.partial(preprocess, size=size, rows=rows), image_space)
    return SeedFirstReset(env, seed)


def make_vector(
    spec: str,
    num_envs: int,
    size: int = 64,
    action_repeat: int | None = None,
    seed: int | None = None,
    crop: bool | None = None,
    processes: bool | None = None,
) -> gym.vector.VectorEnv:
    """``num_envs`` copies of ``make(spec, ...)``, env ``i`` seeded with ``seed + i``.

    Observations are batched: ``(num_envs, size, size, 3)`` uint8.

    With ``processes`` (None: when ``num_envs > 1``) the envs run in ``AsyncVectorEnv`` worker processes
    started with ``spawn`` (a process that has rendered with EGL hangs in forked children), one per env, and
    can step while this process works (``step_async`` / ``step_wait``); else in this process
    (``SyncVectorEnv``). Gymnasium's default autoreset mode applies: the step after an episode ends resets
    that env.
    """
    if num_envs < 1:
        raise ConfigError(f"num_envs must be >= 1, got num_envs={num_envs}")
    factories = [
        functools.partial(make, spec, size, action_repeat, None if seed is None else seed + i, crop)
        for i in range(num_envs)
    ]
    if not (num_envs > 1 if processes is None else processes):
        vector_env: gym.vector.VectorEnv = gym.vector.SyncVectorEnv(factories)
    else:
        vector_env = gym.vector.AsyncVectorEnv(factories, context="spawn")
    if seed is not None:
        vector_env.action_space.seed(seed)
    return vector_env


def default_action_repeat(spec: str) -> int:
    """PlaNet's action repeat for a dmc spec (2 for domains PlaNet did not use); 1 for gymnasium ids."""
    if not spec.startswith(DMC_PREFIX):
        return 1
    domain, _ = _dmc_domain_task(spec)
    return PLANET_ACTION_REPEAT.get(domain, DMC_ACTION_REPEAT)


def list_specs() -> list[str]:
    """Every spec ``make`` accepts: all dm_control suite tasks, then gymnasium ids that render rgb_array."""
    from dm_control import suite

    return [f"{DMC_PREFIX}{domain}-{task}" for domain, task in suite.ALL_TASKS] + list(_gym_ids())


def resize(frame: np.ndarray, size: int) -> np.ndarray:  # (H, W, 3) -> (size, size, 3) uint8
    """Squash a whole frame to ``(size, size)`` with bilinear filtering (as DreamerV3); no cropping."""
    image = Image.fromarray(np.asarray(frame)[..., :3])
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))


def preprocess(frame: np.ndarray, size: int, rows: int | None = None) -> np.ndarray:
    """(H, W, 3) -> (size, size, 3) uint8: keep rows 0:rows (all when None), then ``resize``.

    World Models (carracing/env.py, _process_frame) crops ``frame[0:84, :, :]`` and resizes to 64x64."""
    return resize(np.asarray(frame)[:rows], size)


def space_to_json(space: gym.Space) -> dict[str, Any]:
    """A JSON-ready dict for a Box or Discrete space; a constant ``low`` / ``high`` becomes one number."""
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start), "dtype": str(space.dtype)}
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": _bound_to_json(space.low),
            "high": _bound_to_json(space.high),
        }
    raise TypeError(f"space_to_json supports Box and Discrete spaces, got {space}")


def space_from_json(d: dict[str, Any]) -> gym.Space:
    """Inverse of ``space_to_json``."""
    if d["type"] == "Discrete":
        return spaces.Discrete(d["n"], start=d.get("start", 0), dtype=d.get("dtype", "int64"))
    if d["type"] == "Box":
        shape = tuple(d["shape"])
        low = np.broadcast_to(np.asarray(d["low"], d["dtype"]), shape)
        high = np.broadcast_to(np.asarray(d["high"], d["dtype"]), shape)
        return spaces.Box(low, high, shape, d["dtype"])
    raise TypeError(f"space_from_json supports Box and Discrete spaces, got type {d['type']!r}")


def action_dim(space: gym.Space) -> int:
    """Width of an action vector in a batch: ``prod(shape)`` for Box, ``n`` (one-hot) for Discrete."""
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.Box):
        return int(np.prod(space.shape))
    raise TypeError(f"action_dim supports Box and Discrete spaces, got {space}")


def is_discrete(space: gym.Space) -> bool:
    """True for a Discrete action space (one-hot in batches), False for Box."""
    return isinstance(space, spaces.Discrete)


def _dmc_domain_task(spec: str) -> tuple[str, str]:
    from dm_control import suite

    domain, _, task = spec.removeprefix(DMC_PREFIX).partition("-")  # domains and tasks hold '_', never '-'
    if (domain, task) not in suite.ALL_TASKS:
        raise _unknown(spec)
    return domain, task


@functools.cache
def _gym_ids() -> tuple[str, ...]:
    """Registered gymnasium ids whose env class lists the rgb_array render mode (loaded, not instantiated)."""
    ids = []
    for env_id, env_spec in gym.registry.items():
        try:
            entry = env_spec.entry_point
            creator = load_env_creator(entry) if isinstance(entry, str) else entry
        except (ImportError, AttributeError, gym.error.Error):  # e.g. jax-only envs, removed mujoco-py envs
            continue
        if "rgb_array" in getattr(creator, "metadata", {}).get("render_modes", []):
            ids.append(env_id)
    return tuple(ids)


def _unknown(spec: str) -> UnknownEnvError:
    close = difflib.get_close_matches(spec, list_specs(), n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return UnknownEnvError(f"unknown env spec {spec!r}: {hint}run `worldmodels envs` to list valid specs")


def _is_image_space(space: gym.Space) -> bool:
    return (
        isinstance(space, spaces.Box)
        and space.dtype == np.uint8
        and len(space.shape) == 3
        and space.shape[-1] == 3
    )


def _bound_to_json(bound: np.ndarray) -> float | list:
    """One number when every entry is equal (image spaces stay small), else nested lists."""
    if bound.size > 0 and np.all(bound == bound.flat[0]):
        return bound.flat[0].item()
    return bound.tolist()
