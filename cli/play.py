"""`worldmodels play`: act inside a world model's dream from a web page, with the keyboard or on-screen controls.

    worldmodels play --ckpt demo_out/run/checkpoints/last.ckpt --data demo_out/heldout
    worldmodels play --ckpt RUN/checkpoints/last.ckpt --env dmc:finger-spin      # the real env beside the dream
    worldmodels play --ckpt runs/dreamer/checkpoints/last.ckpt --env SPEC        # an agent can take over

The dream is the model's own state, kept on the server: a step is ``state = model.imagine(state, action)``, the
page shows ``model.decode(state)`` (a PNG), ``model.reward(state)`` and ``model.cont(state)`` (P(continue)). It
reaches the model through worldmodels/interface.py only, so every world-model family plays (RSSM, VAE +
MDN-RNN), with continuous or discrete actions. A reset starts the dream from

* ``data``: frame ``--frame`` of episode ``--episode`` of ``--data`` (an episode store, a video folder, any
  source ``worldmodels info`` reads), filtered by ``model.observe`` together with the ``--context`` - 1 frames
  (and their actions) before it; the page shows the real frame beside the dream's reconstruction of it;
* ``env``: a new episode of ``--env`` (seed ``--seed`` + the number of env resets so far): its first frame is
  filtered (``observe_step``), and from then on every step also steps the real env with the same action and
  shows its frame, its reward and the per-step error (mean squared pixel error in [0, 1] of dream vs real);
* ``initial``: ``model.initial(1)``, the model's start state without any real frame.

Every reset re-seeds torch with ``--seed``, so the same start and the same keys replay the same dream.

With an agent checkpoint as ``--ckpt`` (PlaNet, Dreamer, a distilled policy, a CMA-ES controller) the dream is
the agent's own world model and the agent can take over. Where it looks (``/api/policy`` ``sees``):

* ``dream`` (default): the agent's policy on the dream state, without pixels in between: Dreamer's actor and the
  distilled policy on ``model.features(state)``, the controller's ``tanh(W f + b)`` on the same features,
  PlaNet's planner on the state itself (its plan carried from step to step). Any other agent class acts through
  ``agent.act`` on the decoded dream frame.
* ``env`` (needs ``--env``): ``agent.act`` on the real frame, exactly as ``worldmodels eval`` runs it; its filter
  starts at the frame where it takes over. The dream follows the same actions, so the page shows how well the
  model predicts the agent's real episode.

Either way one action per step goes to the dream and to the env. Continuous actions take the policy's mode
(``explore=False``), as evaluation does.

Framework: Flask (3.1). The work is synchronous and CPU-bound (one small torch call per request, nothing to
await), so a WSGI app is the plain fit; Flask's test client drives the JSON endpoints in tests without a socket,
and its server, Werkzeug, was already installed (TensorBoard's). The app is served by Werkzeug's
``make_server`` on 127.0.0.1 only. One player: a single ``PlaySession`` holds the dream, the env and the
agent for whoever loads the page (a second tab shares the same dream). Requests are served on Werkzeug's
threads, but all their work runs on the session's one worker thread (``PlaySession.call``), one request after
another: dm_control renders through an EGL context that is current on one thread only.

Endpoints (JSON; errors are ``{"error": one line}`` with status 400):

    GET  /                the page (cli/play_page.py)
    GET  /api/info        the model, its action space, the sources a reset can use, the agent
    POST /api/reset       {"source": "data"|"env"|"initial", "episode": i, "frame": t} -> a frame (below)
    POST /api/step        {"action": [a0, a1, ...] | index} -> a frame; ignored while the agent drives
    POST /api/policy      {"on": bool, "sees": "dream"|"env"} -> the agent's mode

A frame: ``t``, ``dream`` (data: URL of a PNG), ``reward``, ``cont``, ``return`` (predicted, summed since the
reset), ``action``, ``by`` ("you" | "agent" | "reset"), ``dream_ms`` (the model's time for the step, ms) and,
when a real frame is beside the dream, ``real``: ``frame``, ``error``, ``error_frame`` and for the env ``reward``,
``return``, ``done``. Keys (cli/play_page.py): arrows move action dims 0 and 1 (left/right: dim 0 -/+, up/down:
dim 1 +/-), digits pick a discrete action, space steps with no action (zeros; discrete: action 0), R resets.
"""

from __future__ import annotations

import argparse
import base64
import io
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from worldmodels.checkpoints import WORLD_MODEL_CLASSES, load_world_model, read_model_class
from worldmodels.errors import CheckpointError, ConfigError, StoreError, WorldModelsError
from worldmodels.interface import State, WorldModel, last_step, observe_step

SOURCES = ("data", "env", "initial")
SEES = ("dream", "env")
ERROR_GAIN = 4  # the error image shows |dream - real| x this, so small errors are visible


def png_url(frame: np.ndarray | Tensor) -> str:
    """frame (H, W, 3) uint8 -> ``data:image/png;base64,...``."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(frame, dtype=np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def pixel_error(dream: np.ndarray, real: np.ndarray) -> tuple[float, np.ndarray]:
    """dream, real (H, W, 3) uint8 -> (mean squared error of pixels in [0, 1], |dream - real| x ERROR_GAIN as an
    image (H, W, 3) uint8)."""
    diff = dream.astype(np.float32) / 255 - real.astype(np.float32) / 255
    image = np.clip(np.abs(diff) * 255 * ERROR_GAIN, 0, 255).astype(np.uint8)
    return float(np.mean(diff**2)), image


def numbers(values: list) -> bool:
    """Whether every item of a JSON list is a number (JSON's true/false are not)."""
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def family(model: WorldModel) -> str:
    """The model's family as the page names it: "RSSM", "MDNRNN" (VAE + MDN-RNN), or its class name."""
    return type(model).__name__


def world_model_of(agent: Any, path: str | Path) -> WorldModel:
    """The world model an agent acts with: ``agent.world_model`` (PlaNet, Dreamer, distilled policy) or
    ``agent.model`` (the controller). CheckpointError when it has none."""
    for name in ("world_model", "model"):
        model = getattr(agent, name, None)
        if isinstance(model, WorldModel):
            return model
    raise CheckpointError(
        f"{path}: the {type(agent).__name__} in it holds no world model to dream in; give a checkpoint of "
        "`worldmodels fit` (RSSM, MDN-RNN) or of an agent that acts through one"
    )


def load_player(path: str | Path) -> tuple[WorldModel, Any]:
    """``--ckpt``: a world model of ``worldmodels fit`` -> (model, None); an agent's -> (its world model, agent).
    Anything else is a one-line CheckpointError."""
    from agents.evaluate import AGENT_CLASSES, load_agent

    name = read_model_class(path)  # CheckpointError for a missing or unreadable file
    if name in WORLD_MODEL_CLASSES:
        return load_world_model({"ckpt": str(path)}), None
    if name in AGENT_CLASSES:
        agent = load_agent(path)
        return world_model_of(agent, path), agent
    if name == "worldmodels.vae.VAE":
        raise CheckpointError(
            f"{path} holds a VAE alone, which cannot dream; train an MDN-RNN on it (configs/carracing_mdnrnn.yaml) "
            "and play that checkpoint"
        )
    raise CheckpointError(
        f"{path}: neither a world model nor an agent (class {name!r}); give a checkpoint of `worldmodels fit` "
        f"({', '.join(c.rsplit('.', 1)[1] for c in WORLD_MODEL_CLASSES)}) or of `worldmodels agent`"
    )


def describe_space(action_dim: int, discrete: bool, image_size: int) -> str:
    return f"{action_dim}-dim {'discrete' if discrete else 'continuous'} actions and {image_size}px images"


def check_env(model: WorldModel, env: Any, spec: str, ckpt: str | Path) -> None:
    """CheckpointError when ``env`` has another action space or image size than ``model``."""
    from worldmodels import envs

    have = (envs.action_dim(env.action_space), envs.is_discrete(env.action_space))
    size = int(env.observation_space.shape[0])
    if have != (model.action_dim, model.discrete) or size != model.image_size:
        raise CheckpointError(
            f"{ckpt}: the model expects {describe_space(model.action_dim, model.discrete, model.image_size)}; "
            f"env {spec} has {describe_space(*have, size)}: play it with the env it was trained on"
        )


def check_source(model: WorldModel, source: Any, path: str | Path, ckpt: str | Path) -> None:
    """CheckpointError when the data's actions do not fit ``model`` (an action-free source fits any model: its
    frames are filtered with zero actions)."""
    dim, discrete = int(source.action_dim), bool(source.discrete)
    if dim and (dim, discrete) != (model.action_dim, model.discrete):
        raise CheckpointError(
            f"{path} has {dim}-dim {'discrete' if discrete else 'continuous'} actions but {ckpt} was trained with "
            f"{describe_space(model.action_dim, model.discrete, model.image_size)}: reset from data of its task"
        )


class FeaturePolicy:
    """An agent's policy read off a dream state: state (1, ...) -> action (1, A), no pixels in between (module
    docstring); ``reset()`` forgets what it carries (PlaNet's plan, a fallback agent's filter)."""

    def __init__(self, agent: Any, model: WorldModel) -> None:
        from agents.controller import ControllerAgent
        from agents.distill import DistilledPolicy
        from agents.dreamer import DreamerAgent
        from agents.planet import PlaNetAgent

        self.agent, self.model, self.carry = agent, model, None
        if isinstance(agent, DreamerAgent):
            self.kind, self.how = "actor", "Dreamer's actor on the dream state's features (its mode)"
        elif isinstance(agent, DistilledPolicy):
            self.kind, self.how = "distilled", "the distilled policy on the dream state's features"
        elif isinstance(agent, ControllerAgent):
            self.kind, self.how = "controller", "the controller on the dream state's features"
        elif isinstance(agent, PlaNetAgent):
            self.kind, self.how = "planner", "PlaNet's planner from the dream state"
        else:
            self.kind, self.how = "frames", "agent.act on the decoded dream frames"

    def reset(self) -> None:
        self.carry = None

    def __call__(self, state: State) -> Tensor:
        """state (1, ...) -> action (1, A)."""
        agent, model = self.agent, self.model
        if self.kind == "actor":
            return agent.policy(model.features(state), explore=False)
        if self.kind == "distilled":
            return agent.action(model.features(state), explore=False)
        if self.kind == "controller":
            return agent.controller.act(agent.params, model.features(state)[None].to(agent.params))[0]
        if self.kind == "planner":
            action, self.carry = agent.planner(model, state, self.carry)
            return action
        frame = model.decode(state)
        action, self.carry = agent.act(frame, torch.tensor([self.carry is None]), self.carry, False)
        return action


class PlaySession:
    """What the page plays: the dream state of one player, the real env beside it and the agent (module docstring).

    ``model`` is a world model (worldmodels/interface.py); ``agent`` an agent acting through it, or None; ``env``
    a pixel env from ``worldmodels.envs.make`` at the model's image size, or None (a dm_control env must be made
    on the session's worker thread and attached: ``build_session`` does); ``source`` an episode source
    (``worldmodels.sources.open_source``) to reset from, or None. Methods return what the endpoints send. Not
    reentrant: the app runs them through ``call``, on the session's one worker thread."""

    def __init__(
        self,
        model: WorldModel,
        agent: Any = None,
        env: Any = None,
        source: Any = None,
        context: int = 5,
        seed: int = 0,
        names: dict[str, str] | None = None,
    ) -> None:
        if context < 1:
            raise ConfigError(f"--context {context}: give at least 1 (the frame reset from)")
        for module in (model, agent):
            if isinstance(module, torch.nn.Module):
                module.eval()  # acting, not training: no dropout, no batch statistics
        self.model, self.agent, self.env, self.source = model, agent, env, source
        self.context, self.seed, self.names = context, seed, dict(names or {})
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="worldmodels-play")
        self.policy = FeaturePolicy(agent, model) if agent is not None else None
        self.policy_on, self.sees = False, "dream"
        self.env_resets = 0
        self.state: State | None = None
        self.agent_carry: Any = None
        self.real_obs: np.ndarray | None = None  # the env's latest frame while the env runs beside the dream
        self.env_done = False
        self.t, self.dream_return, self.real_return = 0, 0.0, 0.0
        self.last_source = self.default_source()
        self.last_episode: int | None = None  # the data frame of the last reset from data
        self.last_frame: int | None = None

    # --- what the page asks -----------------------------------------------------------------------------

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the session's worker thread, where every request's work runs (a dm_control env's EGL
        context is current on one thread only); waits for it and returns its result or raises its error."""
        return self.worker.submit(fn, *args).result()

    def call(self, method: str, *args: Any) -> Any:
        """``self.<method>(*args)`` on the worker thread (``run``): what the endpoints do."""
        return self.run(getattr(self, method), *args)

    def attach_env(self, env: Any, spec: str) -> None:
        """Step ``env`` (made on the worker thread: ``run``) beside the dream from now on; resets default to it."""
        self.env, self.names["env"] = env, spec
        self.last_source = self.default_source()

    def close(self) -> None:
        """Close the env (on the worker thread, which holds its context) and stop the worker."""
        if self.env is not None:
            self.worker.submit(self.env.close).result()
        self.worker.shutdown()

    def default_source(self) -> str:
        """Where a reset starts when the page names no source: the env, else the data, else the model."""
        return "env" if self.env is not None else "data" if self.source is not None else "initial"

    def info(self) -> dict[str, Any]:
        model = self.model
        lengths = [int(n) for n in self.source.lengths()] if self.source is not None else []
        return {
            "family": family(model),
            "ckpt": self.names.get("ckpt"),
            "action_dim": int(model.action_dim),
            "discrete": bool(model.discrete),
            "image_size": int(model.image_size),
            "env": self.names.get("env") if self.env is not None else None,
            "data": self.names.get("data") if self.source is not None else None,
            "episodes": lengths,
            "context": self.context,
            "episode": self.last_episode,
            "frame": self.last_frame,
            "sources": [s for s in SOURCES if self.available(s)],
            "source": self.last_source,
            "agent": type(self.agent).__name__ if self.agent is not None else None,
            "policy": self.policy.how if self.policy is not None else None,
            "sees": [s for s in SEES if s == "dream" or self.env is not None]
            if self.agent is not None
            else [],
        }

    def available(self, source: str) -> bool:
        return (
            source == "initial"
            or (source == "env" and self.env is not None)
            or (source == "data" and self.source is not None)
        )

    @torch.no_grad()
    def reset(self, source: str | None = None, episode: int | None = None, frame: int | None = None) -> dict:
        """Start the dream over from ``source`` (None: the last one used) and, for ``data``, frame ``frame`` of
        ``episode`` (None: the last ones asked for, else episode 0 at its ``context``-th frame); see the module
        docstring."""
        source = source or self.last_source
        if source not in SOURCES:
            raise ConfigError(f"reset source {source!r} is unknown; use one of {list(SOURCES)}")
        if not self.available(source):
            flag = {"data": "--data STORE", "env": "--env SPEC"}[source]
            raise ConfigError(f"reset from {source}: start `worldmodels play` with {flag} to reset from it")
        if source == "data":
            episode = self.last_episode if episode is None else episode
            frame = self.last_frame if frame is None and episode == self.last_episode else frame
            window, label = self.window(episode, frame)  # checked before anything changes
        torch.manual_seed(self.seed)
        self.t, self.dream_return, self.real_return = 0, 0.0, 0.0
        self.real_obs, self.env_done, self.agent_carry = None, False, None
        if self.policy is not None:
            self.policy.reset()
        start = time.perf_counter()
        real_image = None
        if source == "initial":
            self.state = self.model.initial(1)
        elif source == "env":
            episode_seed = self.seed + self.env_resets
            obs, _ = self.env.reset(seed=episode_seed)
            self.env_resets += 1
            self.real_obs = real_image = np.array(obs)
            is_first = torch.ones(1, dtype=torch.bool)
            self.state = observe_step(self.model, torch.from_numpy(self.real_obs[None]), is_first)
            label = f"{self.names.get('env', 'env')}, episode seed {episode_seed}"
        else:
            self.state = last_step(self.model.observe(window["image"], window["action"], window["is_first"]))
            real_image = window["image"][0, -1].numpy()
            self.last_episode, self.last_frame = window["episode"], window["frame"]
        self.last_source = source
        out, dream = self.frame("reset", start)
        if real_image is not None:
            out["real"] = self.real_frame(dream, real_image, label)
        if source == "data":
            out["episode"], out["frame"] = self.last_episode, self.last_frame
        return out

    def window(self, episode: int | None, frame: int | None) -> tuple[dict[str, Any], str]:
        """The frames a reset from the data filters: frame ``frame`` of ``episode`` and up to ``context`` - 1
        before it, as a batch of one: image (1, L, H, W, 3) uint8, action (1, L, A), is_first (1, L); and
        ``episode``, ``frame`` (the defaults filled in), and a label for the page."""
        lengths = self.source.lengths()
        episode = 0 if episode is None else int(episode)
        if not 0 <= episode < len(lengths):
            raise StoreError(
                f"{self.names.get('data', 'data')}: episode {episode} is not there; it holds episodes "
                f"0..{len(lengths) - 1}"
            )
        frame = min(self.context, lengths[episode]) - 1 if frame is None else int(frame)
        if not 0 <= frame < lengths[episode]:
            raise StoreError(
                f"{self.names.get('data', 'data')}: episode {episode} has frames 0..{lengths[episode] - 1}, not "
                f"{frame}"
            )
        begin = max(0, frame - self.context + 1)
        data = self.source.read(episode, begin, frame - begin + 1)
        images = torch.from_numpy(np.ascontiguousarray(data["image"]))[None]
        actions = torch.from_numpy(np.asarray(data["action"], np.float32))[None]
        if actions.shape[-1] != self.model.action_dim:  # an action-free source: zeros
            actions = torch.zeros(1, images.shape[1], self.model.action_dim)
        actions[:, 0] = 0  # the convention of observe_step: no action led to the first frame filtered
        is_first = torch.zeros(1, images.shape[1], dtype=torch.bool)
        is_first[:, 0] = True
        label = f"{self.names.get('data', 'data')}, episode {episode} frame {frame}"
        window = {
            "image": images,
            "action": actions,
            "is_first": is_first,
            "episode": episode,
            "frame": frame,
        }
        return window, label

    @torch.no_grad()
    def step(self, action: Any = None) -> dict:
        """One step of the dream (and of the env beside it) with ``action``: a list of A floats in [-1, 1]
        (continuous) or an action index (discrete); None: no action (zeros; discrete: action 0). While the agent
        drives, it picks the action and ``action`` is ignored."""
        if self.state is None:
            self.reset()
        start = time.perf_counter()
        by = "you"
        if self.policy_on and self.policy is not None:
            tensor, by = self.agent_action(), "agent"
        else:
            tensor = self.parse_action(action)
        self.state = self.model.imagine(self.state, tensor.to(self.dtype()))
        self.t += 1
        out, dream = self.frame(by, start, tensor)
        self.dream_return += out["reward"]
        out["return"] = self.dream_return
        if self.real_obs is not None:
            real: dict[str, Any] = {}
            if not self.env_done:
                act = tensor[0].float().cpu().numpy()
                obs, reward, terminated, truncated, _ = self.env.step(
                    int(act.argmax()) if self.model.discrete else act
                )
                self.real_obs, self.env_done = np.array(obs), bool(terminated or truncated)
                self.real_return += float(reward)
                real["reward"] = float(reward)
            else:
                real["reward"] = None
            label = self.names.get("env", "env") + (" (episode over: reset)" if self.env_done else "")
            real["return"], real["done"] = self.real_return, self.env_done
            out["real"] = self.real_frame(dream, self.real_obs, label) | real
        return out

    def set_policy(self, on: bool, sees: str | None = None) -> dict:
        """Hand control to the agent (``on``) or take it back; ``sees``: where the agent looks (module
        docstring). Its filter and plan start over at the step where it takes over."""
        if on and self.policy is None:
            raise ConfigError(
                f"{self.names.get('ckpt', 'the checkpoint')} holds a world model, no agent: play an agent's "
                "checkpoint (`worldmodels agent ...`) to hand it control"
            )
        sees = sees or self.sees
        if sees not in SEES:
            raise ConfigError(f"policy sees {sees!r}: use one of {list(SEES)}")
        if sees == "env" and self.env is None:
            raise ConfigError("the agent sees the env only with `worldmodels play --env SPEC`")
        self.policy_on, self.sees = bool(on), sees
        self.agent_carry = None
        if self.policy is not None:
            self.policy.reset()
        return {"on": self.policy_on, "sees": self.sees, "how": self.policy_how()}

    # --- inside ------------------------------------------------------------------------------------------

    def policy_how(self) -> str | None:
        if self.policy is None:
            return None
        return (
            self.policy.how
            if self.sees == "dream"
            else "agent.act on the real env frame, as worldmodels eval"
        )

    def dtype(self) -> torch.dtype:
        return next(iter(self.state.values())).dtype if self.state else torch.float32

    def parse_action(self, action: Any) -> Tensor:
        """The page's action -> (1, A) float32: one-hot for discrete actions, clipped to [-1, 1] otherwise."""
        dim = int(self.model.action_dim)
        if self.model.discrete:
            index = 0 if action is None else action
            if isinstance(index, list) and len(index) == dim and numbers(index):  # a one-hot row
                index = int(np.argmax(index))
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < dim:
                raise ConfigError(f"action {action!r}: give an action index 0..{dim - 1} (discrete actions)")
            return F.one_hot(torch.tensor([index]), dim).float()
        if action is None:
            return torch.zeros(1, dim)
        ok = isinstance(action, list) and len(action) == dim and numbers(action)
        values = torch.tensor([action], dtype=torch.float32) if ok else None
        if values is None or not torch.isfinite(values).all():
            raise ConfigError(
                f"action {action!r}: give a list of {dim} finite numbers in [-1, 1] (continuous actions)"
            )
        return values.clamp(-1, 1)

    def agent_action(self) -> Tensor:
        """The agent's action (1, A) for this step: from the dream state, or from the real frame (``sees``)."""
        if self.sees == "env":
            if self.real_obs is None:
                raise ConfigError("the agent sees the env: reset from the env first (the env is not running)")
            if self.env_done:
                raise ConfigError("the env's episode is over: reset to play on")
            obs = torch.from_numpy(np.array(self.real_obs)[None])
            first = torch.tensor([self.agent_carry is None])
            action, self.agent_carry = self.agent.act(obs, first, self.agent_carry, False)
            return action.float().cpu()
        return self.policy(self.state).float().cpu()

    def frame(self, by: str, start: float, action: Tensor | None = None) -> tuple[dict, np.ndarray]:
        """What the page shows of the dream state after a reset or step begun at ``start`` (perf_counter), and
        the decoded frame (H, W, 3) uint8."""
        model, state = self.model, self.state
        dream = model.decode(state)[0].cpu().numpy()
        reward, cont = float(model.reward(state)[0]), float(model.cont(state)[0])
        elapsed = (time.perf_counter() - start) * 1000
        return {
            "t": self.t,
            "by": by,
            "action": action[0].tolist() if action is not None else None,
            "dream": png_url(dream),
            "reward": reward,
            "cont": cont,
            "return": self.dream_return,
            "dream_ms": elapsed,
            "policy": self.policy_on,
        }, dream

    def real_frame(self, dream: np.ndarray, real: np.ndarray, label: str) -> dict:
        error, image = pixel_error(dream, real)
        return {"frame": png_url(real), "error": error, "error_frame": png_url(image), "label": label}


# --- the web app --------------------------------------------------------------------------------------------


def create_app(session: PlaySession) -> Any:
    """The Flask app of the page and its JSON endpoints (module docstring) around ``session``."""
    from flask import Flask, jsonify, request

    from cli.play_page import PAGE

    app = Flask(__name__)

    def body() -> dict[str, Any]:
        data = request.get_json(silent=True)
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigError(f"request body {data!r}: send a JSON object")
        return data

    def number(data: dict[str, Any], key: str) -> int | None:
        value = data.get(key)
        if value is None or value == "":
            return None
        try:
            return int(value)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{key} {value!r}: give a whole number") from e

    @app.errorhandler(WorldModelsError)
    def user_error(error: WorldModelsError) -> Any:
        return jsonify(error=str(error)), 400

    @app.get("/")
    def page() -> Any:
        return PAGE, 200, {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}

    @app.get("/favicon.ico")
    def favicon() -> Any:
        return "", 204

    @app.get("/api/info")
    def info() -> Any:
        return jsonify(session.call("info"))

    @app.post("/api/reset")
    def reset() -> Any:
        data = body()
        return jsonify(
            session.call("reset", data.get("source"), number(data, "episode"), number(data, "frame"))
        )

    @app.post("/api/step")
    def step() -> Any:
        data = body()
        return jsonify(session.call("step", data.get("action")))

    @app.post("/api/policy")
    def policy() -> Any:
        data = body()
        return jsonify(session.call("set_policy", bool(data.get("on")), data.get("sees")))

    return app


def build_session(
    ckpt: str | Path,
    env: str | None = None,
    data: str | Path | None = None,
    context: int = 5,
    seed: int = 0,
    action_repeat: int | None = None,
    camera: str | None = None,
) -> PlaySession:
    """A PlaySession from the command's options: the checkpoint's model (and agent), the env made at the model's
    image size and checked against it, the data opened and checked. One-line errors (worldmodels.errors)."""
    model, agent = load_player(ckpt)
    names = {"ckpt": str(ckpt)}
    source = None
    if data is not None:
        from worldmodels.sources import open_source

        source = open_source(data, size=model.image_size, camera=camera)
        check_source(model, source, data, ckpt)
        size = source_size(source)
        if size is not None and size != model.image_size:
            raise CheckpointError(
                f"{data} holds {size}px frames but {ckpt} was trained on {model.image_size}px: reset from data of "
                "its task"
            )
        names["data"] = str(data)
    session = PlaySession(model, agent, None, source, context=context, seed=seed, names=names)
    if env is not None:
        from agents.evaluate import trained_action_repeat

        repeat = action_repeat or trained_action_repeat(ckpt, env)
        try:  # made on the worker thread, where it will render: its EGL context is current there only
            made = session.run(make_env, model, env, ckpt, seed, repeat)
        except BaseException:
            session.close()
            raise
        session.attach_env(made, env)
    return session


def make_env(model: WorldModel, spec: str, ckpt: str | Path, seed: int, action_repeat: int | None) -> Any:
    """``spec`` made at the model's image size (``worldmodels.envs.make``) and checked against the model
    (``check_env``; closed again if it does not fit)."""
    from worldmodels import envs

    env = envs.make(spec, size=model.image_size, action_repeat=action_repeat, seed=seed)
    try:
        check_env(model, env, spec, ckpt)
    except CheckpointError:
        env.close()
        raise
    return env


def source_size(source: Any) -> int | None:
    """The frame size of a source, where it says (a store: its image shape; others: ``size``)."""
    shape = getattr(source, "image_shape", None)
    if shape is not None:
        return int(shape[0])
    size = getattr(source, "size", None)
    return int(size) if size is not None else None


def serve(app: Any, port: int = 0) -> Any:
    """A Werkzeug server of ``app`` on 127.0.0.1:``port`` (0: a free port), not yet serving: call
    ``serve_forever()`` (and ``shutdown()`` from another thread); ``server.port`` is the port it got."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        """No log line per request (one per key press is noise); errors still print."""

        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    try:
        return make_server("127.0.0.1", port, app, threaded=True, request_handler=Quiet)
    except OSError as e:
        raise ConfigError(
            f"--port {port}: cannot listen on 127.0.0.1:{port} ({e}); pick another, or 0"
        ) from e


def run_play(args: argparse.Namespace) -> None:
    """The `worldmodels play` command: build the session, print the URL, open a browser unless
    ``--no_browser``, serve until Ctrl-C."""
    if not torch.cuda.is_available():
        torch.set_num_threads(1)  # one small model step per request: more threads only spin
    session = build_session(
        args.ckpt, args.env, args.data, args.context, args.seed, args.action_repeat, args.camera
    )
    try:
        if args.episode is not None or args.frame is not None:
            if session.source is None:
                raise ConfigError("--episode and --frame pick a reset frame of --data: give --data STORE")
            session.call("reset", "data", args.episode, args.frame)
        else:
            session.call("reset")  # the first frame, and a start-up check of the env and data
        server = serve(create_app(session), args.port)
        url = f"http://127.0.0.1:{server.port}/"
        print(f"playing {args.ckpt} at {url} (Ctrl-C stops)", flush=True)
        if not args.no_browser:
            import webbrowser

            webbrowser.open(url)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    finally:
        session.close()
