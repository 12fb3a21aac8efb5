"""C of World Models (Ha & Schmidhuber 2018): a small policy on a world model's features, evolved by CMA-ES.

    worldmodels agent controller -c configs/controller_carracing.yaml [--key value ...]
    worldmodels agent controller -c configs/controller_carracing.yaml --ckpt_path last     # resume
    worldmodels eval --ckpt runs/carracing/controller/checkpoints/last.ckpt --env CarRacing-v3

It needs a trained world model (``--model``), made first: V + M (``worldmodels fit -c configs/carracing_vae.yaml``,
then ``worldmodels fit -c configs/carracing_mdnrnn.yaml``), an RSSM (``worldmodels fit -c configs/rssm_dmc.yaml``)
or any agent checkpoint that holds one. The controller reads ``model.features(state)`` ([z, h] for the VAE +
MDN-RNN pair, [deter, stoch] for an RSSM) and outputs ``tanh(W f + b)`` for continuous actions (the env's Box is
already [-1, 1]) or a one-hot argmax (sampled when exploring) for discrete ones; ``hidden > 0`` adds one tanh
layer. It touches the model through the shared interface only (worldmodels/interface.py), so one code path
serves every world model.

CMA-ES (pycma) searches its flat parameter vector, starting at zeros with step size ``sigma``. The fitness of
a candidate is its mean return over ``rollouts`` episodes; every candidate of a generation meets the same
episode seeds (common random numbers). Two fitness sources:

* ``real``: episodes in the environment, one task per (candidate, rollout), spread over ``workers`` spawn
  processes that each load the world-model checkpoint once and filter frames with ``model.observe`` one
  step at a time, exactly as the saved agent acts under ``worldmodels eval``.
* ``dream``: every candidate x rollout in ONE batched rollout on ``device``: starts are posterior states
  after ``context`` real frames of random windows of an episode store, then ``model.imagine`` runs
  ``horizon`` steps, summing ``model.reward``. An episode ends where ``model.cont`` says so: ``threshold``
  ends it when P(continue) < 0.5 (World Models doomrnn.py: done when the done logit > 0), ``sample`` draws
  the end from Bernoulli(1 - P(continue)). ``temperature`` sets ``model.temperature`` (the MDN-RNN's tau).

As in the World Models code (carracing/train.py), every ``eval_every`` generations (and after the last) the
distribution mean is scored over ``eval_rollouts`` fresh episodes of the same fitness source. The run folder
``out`` is laid out as PlaNet's and Dreamer's ``trainer.default_root_dir``: after every generation
``checkpoints/last.ckpt`` is written atomically, holding the agent (the best-scoring mean so far, with the world
model embedded, for `worldmodels eval`) and the whole evolution state (pickled ES, NumPy RNG, generation, history,
best); every ``checkpoint_every`` generations a copy goes to ``checkpoints/step<N>.ckpt``, N the generations
done. ``--ckpt_path last`` resumes (``--resume true`` is a deprecated alias). ``config.yaml`` holds the options,
``csv/version_N/metrics.csv`` one row per generation, and the TensorBoard events ``fitness/*`` and ``cma/sigma``.
"""

from __future__ import annotations

import csv
import multiprocessing as mp
import pickle
import shlex
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from einops import rearrange, repeat
from torch import Tensor, nn

from worldmodels.checkpoints import load_world_model, model_from_checkpoint_dict, read_model_class
from worldmodels.errors import CheckpointError, ConfigError
from worldmodels.guards import atomic_write
from worldmodels.interface import Carry, State, WorldModel, last_step, observe_step

AGENT_CLASS = "agents.controller.ControllerAgent"
CHECKPOINTS, LAST = "checkpoints", "last.ckpt"  # out/checkpoints/last.ckpt, as PlaNet's and Dreamer's runs
LEGACY_STATE = "evolution.pkl"  # the CMA-ES state of runs from before checkpoints/last.ckpt
TRAIN_SEEDS, EVAL_SEEDS = 0, 1  # seed streams: candidates' episodes, evaluations of the mean

# ---- the controller --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Controller:
    """A batch of P policies given as flat parameter vectors ``params (P, n)``.

    Layout per layer: ``W (in, out)`` row-major, then ``b (out,)``; layers feature_dim -> [hidden ->]
    action_dim, tanh between them."""

    feature_dim: int
    action_dim: int
    discrete: bool
    hidden: int = 0  # 0: linear, as World Models; > 0: one tanh hidden layer of this width

    @property
    def shapes(self) -> list[tuple[int, int]]:
        dims = [self.feature_dim, *([self.hidden] if self.hidden else []), self.action_dim]
        return list(zip(dims[:-1], dims[1:]))

    @property
    def num_params(self) -> int:
        return sum((n_in + 1) * n_out for n_in, n_out in self.shapes)

    def layers(self, params: Tensor) -> list[tuple[Tensor, Tensor]]:
        """params (P, n) -> [(W (P, in, out), b (P, out))] per layer."""
        if params.ndim != 2 or params.shape[1] != self.num_params:
            raise ConfigError(
                f"controller params of shape {tuple(params.shape)}; this controller needs (P, {self.num_params})"
            )
        out, offset = [], 0
        for n_in, n_out in self.shapes:
            weight = rearrange(params[:, offset : offset + n_in * n_out], "p (i o) -> p i o", i=n_in)
            offset += n_in * n_out
            out.append((weight, params[:, offset : offset + n_out]))
            offset += n_out
        return out

    @staticmethod
    def flatten(layers: list[tuple[Tensor, Tensor]]) -> Tensor:
        """[(W (P, in, out), b (P, out))] -> params (P, n); the inverse of ``layers``."""
        return torch.cat([t for w, b in layers for t in (w.flatten(1), b)], dim=1)

    def logits(self, params: Tensor, features: Tensor) -> Tensor:
        """params (P, n), features (P, R, F) -> pre-squash outputs (P, R, A): every policy on its own rows."""
        x = features.to(params.dtype)
        layers = self.layers(params)
        for i, (weight, bias) in enumerate(layers):
            x = torch.einsum("prf,pfa->pra", x, weight) + bias[:, None]
            if i < len(layers) - 1:
                x = torch.tanh(x)
        return x

    def act(self, params: Tensor, features: Tensor, sample: bool = False) -> Tensor:
        """params (P, n), features (P, R, F) -> actions (P, R, A): tanh in [-1, 1], or one-hot (argmax, or
        sampled from the softmax when ``sample``)."""
        out = self.logits(params, features)
        if not self.discrete:
            return torch.tanh(out)
        if sample:
            index = torch.multinomial(out.softmax(-1).flatten(0, 1), 1).view(out.shape[:-1])
        else:
            index = out.argmax(-1)
        return F.one_hot(index, self.action_dim).to(out.dtype)


# ---- the agent `worldmodels eval` loads -----------------------------------------------------------------


NEEDS_MODEL = (
    "the controller evolves a policy on a trained world model: make one first, V + M with `worldmodels fit -c "
    "configs/carracing_vae.yaml` then `worldmodels fit -c configs/carracing_mdnrnn.yaml --model.init_args.vae_ckpt "
    "runs/carracing/vae/checkpoints/last.ckpt` (or an RSSM: `worldmodels fit -c configs/rssm_dmc.yaml --data.path "
    "DIR`), then pass --model RUN/checkpoints/last.ckpt"
)


def load_controller_world_model(path: str | Path | None, device: str = "cpu") -> WorldModel:
    """The world model of ``path``: a checkpoint of `worldmodels fit` (MDN-RNN, RSSM) or of any agent run.

    Missing, unreadable and non-world-model files raise a one-line error that says how to make one."""
    if not path:
        raise ConfigError(f"model: no world-model checkpoint given; {NEEDS_MODEL}")
    if not Path(path).is_file():
        raise CheckpointError(f"model: {path}: no such checkpoint; {NEEDS_MODEL}")
    name = read_model_class(path)
    if name == "worldmodels.vae.VAE":
        raise CheckpointError(
            f"model: {path} holds a VAE (V) alone; the controller needs V + M: train the MDN-RNN on it with "
            f"`worldmodels fit -c configs/carracing_mdnrnn.yaml --model.init_args.vae_ckpt {path}` and pass "
            "that run's checkpoints/last.ckpt"
        )
    try:
        return load_world_model({"ckpt": str(path)}, device=device)
    except CheckpointError as e:
        raise CheckpointError(f"model: {path} holds no world model (class {name!r}); {NEEDS_MODEL}") from e


def world_model_checkpoint(model: WorldModel) -> dict[str, Any]:
    """``model`` as a `worldmodels fit` checkpoint (class, hyper-parameters, weights; no optimizer state): what
    a controller checkpoint embeds, so it works alone (``model_from_checkpoint_dict`` rebuilds it)."""
    from lightning import __version__

    cls = type(model)
    return {
        "model_class": f"{cls.__module__}.{cls.__qualname__}",
        "hyper_parameters": dict(model.hparams),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "pytorch-lightning_version": __version__,
    }


class ControllerAgent(nn.Module):
    """A world model filtering real frames + one controller; acts like every agent in agents/evaluate.py."""

    def __init__(self, model: WorldModel, controller: Controller, params: Tensor) -> None:
        super().__init__()
        self.model, self.controller = model, controller
        self.register_buffer("params", params.detach().float().reshape(1, -1))  # (1, n)
        self.action_dim, self.discrete, self.image_size = model.action_dim, model.discrete, model.image_size

    @torch.no_grad()
    def act(
        self, obs: Tensor, is_first: Tensor, state: Carry | None = None, explore: bool = False
    ) -> tuple[Tensor, Carry]:
        """obs (N, H, W, 3) uint8, is_first (N,) bool -> action (N, A), state.

        The state carries the model's posterior and the last action (the one that led to the next frame)."""
        device = self.params.device
        posterior = observe_step(self.model, obs.to(device), is_first.to(device), state)
        features = self.model.features(posterior)[None]  # (1, N, F)
        action = self.controller.act(self.params, features, sample=explore)[0]  # (N, A)
        return action, (posterior, action)

    def checkpoint(self, world_model: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """The agent checkpoint `worldmodels eval` loads; it embeds ``world_model`` (``world_model_checkpoint``)."""
        return {
            "model_class": AGENT_CLASS,
            "controller": asdict(self.controller),
            "params": self.params[0].cpu(),
            "world_model": world_model,
            **extra,
        }

    def save(self, path: str | Path, world_model: dict[str, Any], **extra: Any) -> Path:
        """Write ``checkpoint(world_model, **extra)`` to ``path`` atomically: a checkpoint that works alone."""
        checkpoint = self.checkpoint(world_model, **extra)
        path = Path(path)
        atomic_write(path, lambda f: torch.save(checkpoint, f))
        return path

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> ControllerAgent:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        if checkpoint.get("model_class") != AGENT_CLASS:
            raise CheckpointError(
                f"{path}: not a controller checkpoint (class {checkpoint.get('model_class')!r})"
            )
        model = model_from_checkpoint_dict(checkpoint["world_model"], device)
        return cls(model, Controller(**checkpoint["controller"]), checkpoint["params"]).to(device).eval()


# ---- fitness: real environment -------------------------------------------------------------------------


@torch.no_grad()
def rollout(
    agent: ControllerAgent,
    env: Any,
    seed: int,
    rollout_steps: int | None = None,
    patience: int | None = None,
) -> float:
    """One episode of ``agent`` in ``env`` from ``reset(seed=seed)``; returns its return.

    ``rollout_steps`` cuts the episode after that many agent steps. ``patience`` ends it once that many agent
    steps in a row brought no positive reward (a fitness-time saver for sparse-progress tasks such as
    CarRacing, where a car off the track earns nothing more); the return counts the steps played."""
    torch.manual_seed(seed)  # models that sample their posterior (RSSM) filter the same way on every run
    obs, _ = env.reset(seed=seed)
    state, is_first, total, steps, idle = None, True, 0.0, 0, 0
    while True:
        action, state = agent.act(torch.tensor(obs[None]), torch.tensor([is_first]), state)
        action = action[0].cpu().numpy()
        obs, reward, terminated, truncated, _ = env.step(int(action.argmax()) if agent.discrete else action)
        total, steps, is_first = total + float(reward), steps + 1, False
        idle = 0 if reward > 0 else idle + 1
        if terminated or truncated or (rollout_steps is not None and steps >= rollout_steps):
            return total
        if patience is not None and idle >= patience:
            return total


_worker: dict[str, Any] = {}


def _init_worker(
    model_path: str, env_args: dict[str, Any], hidden: int, rollout_steps: int | None, patience: int | None
) -> None:
    from worldmodels import envs

    torch.set_num_threads(1)  # one process per core
    model = load_controller_world_model(model_path)
    controller = Controller(model.feature_dim, model.action_dim, model.discrete, hidden)
    env = envs.make(**env_args)
    _worker.update(
        model=model, controller=controller, env=env, rollout_steps=rollout_steps, patience=patience
    )


def _worker_rollout(task: tuple[np.ndarray, int]) -> float:
    params, seed = task
    agent = ControllerAgent(_worker["model"], _worker["controller"], torch.from_numpy(params))
    return rollout(agent, _worker["env"], seed, _worker["rollout_steps"], _worker["patience"])


class RealFitness:
    """Returns of candidates in the real environment: ``fitness(params (P, n), seeds (R,)) -> (P, R)``.

    ``workers > 1`` runs the episodes in that many spawn processes (a process that has rendered hangs in
    forked children), each holding its own env and its own copy of the model checkpoint. ``crop`` is
    ``worldmodels.envs.make``'s (None: its default); it must match the frames the model was trained on."""

    def __init__(
        self,
        model_path: str,
        spec: str,
        hidden: int = 0,
        size: int | None = None,
        action_repeat: int | None = None,
        rollout_steps: int | None = None,
        workers: int = 1,
        patience: int | None = None,
        crop: bool | None = None,
    ) -> None:
        from agents.evaluate import check_compatible
        from worldmodels import envs

        model = load_controller_world_model(model_path)
        self.env_args = dict(spec=spec, size=size or model.image_size, action_repeat=action_repeat, crop=crop)
        env = envs.make(**self.env_args)
        controller = Controller(model.feature_dim, model.action_dim, model.discrete, hidden)
        check_compatible(ControllerAgent(model, controller, torch.zeros(controller.num_params)), env)
        self.pool = None
        if workers > 1:
            env.close()
            init = (model_path, self.env_args, hidden, rollout_steps, patience)
            self.pool = ProcessPoolExecutor(
                workers, mp_context=mp.get_context("spawn"), initializer=_init_worker, initargs=init
            )
        else:
            _worker.update(
                model=model, controller=controller, env=env, rollout_steps=rollout_steps, patience=patience
            )

    def __call__(self, params: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        tasks = [(p.astype(np.float32), int(s)) for p in params for s in seeds]
        run = self.pool.map if self.pool is not None else map
        returns = list(run(_worker_rollout, tasks))
        return np.asarray(returns, np.float64).reshape(len(params), len(seeds))

    def close(self) -> None:
        # After an interrupt: drop queued episodes and let running ones finish (workers that render through
        # SDL turn SIGTERM into a quit event, so terminating them would hang).
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        elif "env" in _worker:
            _worker.pop("env").close()


# ---- fitness: the dream --------------------------------------------------------------------------------


@torch.no_grad()
def dream_returns(
    model: WorldModel,
    controller: Controller,
    params: Tensor,
    starts: State,
    horizon: int,
    done: str = "threshold",
) -> Tensor:
    """params (P, n), starts (R, ...) -> returns (P, R) of every policy from every start, in one batch.

    Rows are (P*R): policy p acts on its R rows through one einsum; the model imagines all rows at once.
    Rewards count until the first predicted episode end (included)."""
    if done not in ("threshold", "sample"):
        raise ConfigError(f"done={done!r}: use 'threshold' (P(continue) < 0.5 ends) or 'sample'")
    num = params.shape[0]
    state = {k: repeat(v, "r ... -> (p r) ...", p=num) for k, v in starts.items()}
    rows = next(iter(state.values())).shape[0]
    total = torch.zeros(rows, device=params.device)
    alive = torch.ones(rows, device=params.device)
    for _ in range(horizon):
        features = rearrange(model.features(state), "(p r) f -> p r f", p=num)
        action = rearrange(controller.act(params, features), "p r a -> (p r) a")
        state = model.imagine(state, action)
        total += alive * model.reward(state).float()
        cont = model.cont(state).float()
        alive = alive * (torch.bernoulli(cont) if done == "sample" else (cont >= 0.5).float())
        if not alive.any():
            break
    return rearrange(total, "(p r) -> p r", p=num)


class DreamFitness:
    """Returns of candidates in the model's dream: ``fitness(params (P, n), seeds (R,)) -> (P, R)``.

    ``seeds`` pick the R start windows of ``context`` real frames and seed the dream's sampling."""

    def __init__(
        self,
        model: WorldModel,
        controller: Controller,
        data: str,
        horizon: int = 1000,
        context: int = 5,
        done: str = "threshold",
        device: str = "cpu",
    ) -> None:
        from worldmodels.data import SequenceSampler, open_source

        self.model, self.controller = model, controller
        self.horizon, self.done, self.device = horizon, done, torch.device(device)
        source = open_source(data)
        if (source.action_dim, source.discrete) != (model.action_dim, model.discrete):
            raise ConfigError(
                f"{data}: its actions are {source.action_dim}-dim (discrete={source.discrete}) but the world model "
                f"acts in {model.action_dim} dims (discrete={model.discrete}): give the store it was trained on"
            )
        self.sampler = SequenceSampler([source], context, contiguous=True)

    def starts(self, seeds: np.ndarray) -> State:
        """seeds (R,) -> posterior states (R, ...) after ``context`` real frames of R random windows."""
        self.sampler.rng = np.random.default_rng(seeds)
        windows = [self.sampler.sample() for _ in seeds]
        batch = {k: torch.from_numpy(np.stack([w[k] for w in windows])).to(self.device) for k in windows[0]}
        batch["is_first"][:, 0] = True  # a window starts from the model's initial state
        return last_step(self.model.observe(batch["image"], batch["action"], batch["is_first"]))

    @torch.no_grad()
    def __call__(self, params: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        torch.manual_seed(int(seeds[0]))  # models that sample (posteriors, dreams) do so reproducibly
        starts = self.starts(seeds)
        params_t = torch.as_tensor(params, dtype=torch.float32, device=self.device)
        returns = dream_returns(self.model, self.controller, params_t, starts, self.horizon, self.done)
        return returns.double().cpu().numpy()

    def close(self) -> None:
        pass


# ---- CMA-ES --------------------------------------------------------------------------------------------


def episode_seeds(seed: int, stream: int, generation: int, count: int) -> np.ndarray:
    """``count`` episode seeds for one generation of one stream (TRAIN_SEEDS or EVAL_SEEDS): (count,) uint32."""
    return np.random.SeedSequence([seed, stream, generation]).generate_state(count)


def _state_summary(state: dict[str, Any]) -> str:
    best = state["best"]
    return f"{state['generation']} generations" + (
        f", best mean {best['score']:.2f} (generation {best['generation']})" if best else ""
    )


def resume_path(out: Path, ckpt_path: str | Path | None) -> Path | None:
    """``--ckpt_path`` -> the checkpoint to resume from (None: a fresh run), saying so in one line as PlaNet's and
    Dreamer's runs do. ``last`` is ``out/checkpoints/last.ckpt`` (or a run's ``evolution.pkl`` from before
    checkpoints; a fresh run when neither exists)."""
    if ckpt_path is None:
        return None
    if str(ckpt_path) == "last":
        last = out / CHECKPOINTS / LAST
        if last.is_file():
            print(f"resuming from {last}")
            return last
        if (out / LEGACY_STATE).is_file():
            print(f"resuming from {out / LEGACY_STATE} (a run from before checkpoints/last.ckpt)")
            return out / LEGACY_STATE
        print(f"--ckpt_path last: no {last} yet, a fresh run")
        return None
    path = Path(ckpt_path)
    if not path.is_file():
        raise CheckpointError(
            f"--ckpt_path {path}: no such checkpoint; give last or a checkpoints/step<N>.ckpt of a controller run"
        )
    print(f"resuming from {path}")
    return path


def read_evolution(path: str | Path) -> dict[str, Any]:
    """The CMA-ES state saved in a controller checkpoint (or in a legacy ``evolution.pkl``)."""
    path = Path(path)
    if path.suffix == ".pkl":
        with open(path, "rb") as f:
            state = pickle.load(f)
        state["task"] = state.get("task", "").replace("max_steps=", "rollout_steps=")  # renamed, same task
        return state
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, dict) or "evolution" not in checkpoint:
        raise CheckpointError(
            f"{path}: holds no CMA-ES state; resume from a checkpoint of `worldmodels agent controller` "
            "(its checkpoints/last.ckpt or step<N>.ckpt)"
        )
    return pickle.loads(checkpoint["evolution"])


def _metrics_file(out: Path) -> Path:
    """``out/csv/version_N/metrics.csv``, N one past the last run's: each (re)start gets its own, as Lightning's."""
    versions = [p.name[8:] for p in (out / "csv").glob("version_*")]
    number = max((int(v) for v in versions if v.isdigit()), default=-1) + 1
    return out / "csv" / f"version_{number}" / "metrics.csv"


def evolve(
    fitness: Callable[[np.ndarray, np.ndarray], np.ndarray],
    num_params: int,
    out: str | Path,
    population: int = 64,
    rollouts: int = 16,
    generations: int = 1000,
    sigma: float = 0.1,
    eval_every: int = 25,
    eval_rollouts: int = 1024,
    seed: int = 0,
    ckpt_path: str | Path | None = None,
    checkpoint_every: int = 100,
    payload: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    on_best: Callable[[np.ndarray, float, int], None] | None = None,
    progress: bool = True,
    task: str = "",
) -> dict[str, Any]:
    """Maximize mean return with CMA-ES; ``fitness(params (P, n), seeds (R,)) -> returns (P, R)``.

    Returns the evolution state: es, generation (next to run), history (one dict per generation), best
    ({"params", "score", "generation"} of the best-scoring mean). After every generation
    ``out/checkpoints/last.ckpt`` is written atomically: ``payload(state)`` (the agent, for `worldmodels eval`)
    plus the pickled state under ``"evolution"``; every ``checkpoint_every`` generations (0: never) a copy goes to
    ``step<N>.ckpt``, N the generations done. ``ckpt_path`` resumes (``resume_path``): "last" or a checkpoint.
    Metrics go to ``out/csv/version_N/metrics.csv`` and TensorBoard events in ``out``. ``on_best(params, score,
    generation)`` is called whenever the best changes. ``task`` names what the fitness measures (env, episode
    length, ...): resuming with another task (a curriculum, e.g. longer episodes) keeps the search distribution
    but forgets the best score, which was measured on the old task and is not comparable."""
    import cma
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    if population < 2 or rollouts < 1 or eval_every < 1 or eval_rollouts < 1 or checkpoint_every < 0:
        raise ConfigError(
            f"population={population}, rollouts={rollouts}, eval_every={eval_every}, eval_rollouts="
            f"{eval_rollouts}, checkpoint_every={checkpoint_every}: population must be >= 2, checkpoint_every "
            ">= 0 and the others >= 1"
        )
    out = Path(out)
    resume = resume_path(out, ckpt_path)
    if resume is not None:
        state = read_evolution(resume)
        if (state["num_params"], state["population"]) != (num_params, population):
            raise ConfigError(
                f"{resume}: holds a run with {state['num_params']} params and population {state['population']}, "
                f"not {num_params} and {population}: use another out directory, or leave out --ckpt_path"
            )
        np.random.set_state(state["numpy_random"])  # pycma samples from NumPy's global generator
        if state.get("task") != task and state["best"] is not None:
            print(
                f"{resume}: the fitness changed from {state.get('task')!r} to {task!r}; the search goes on, the "
                f"best score so far ({state['best']['score']:.2f}) is forgotten"
            )
            state["best"] = None
        state["task"] = task
    else:
        # pycma treats seed 0 as "seed from the clock", hence + 1
        options = {"popsize": population, "seed": seed + 1, "verbose": -9, "verb_log": 0, "verb_disp": 0}
        es = cma.CMAEvolutionStrategy(np.zeros(num_params), sigma, options)  # World Models: x0 = 0
        state = {"es": es, "generation": 0, "history": [], "best": None, "task": task}
        state.update(num_params=num_params, population=population)
    es = state["es"]
    metrics = _metrics_file(out)
    writer = SummaryWriter(str(out), purge_step=state["generation"])
    bar = tqdm(
        total=generations, initial=state["generation"], desc="CMA-ES", unit="gen", disable=not progress
    )
    try:
        for generation in range(state["generation"], generations):
            start = time.perf_counter()
            candidates = np.asarray(es.ask())  # (P, n)
            returns = fitness(candidates, episode_seeds(seed, TRAIN_SEEDS, generation, rollouts))  # (P, R)
            scores = returns.mean(1)
            es.tell(list(candidates), (-scores).tolist())  # pycma minimizes
            row = {
                "generation": generation,
                "best": float(scores.max()),
                "mean": float(scores.mean()),
                "std": float(scores.std()),
                "sigma": float(es.sigma),
            }
            if (generation + 1) % eval_every == 0 or generation + 1 == generations:
                mean_params = np.asarray(es.result.xfavorite)[None]  # (1, n): the distribution mean
                seeds = episode_seeds(seed, EVAL_SEEDS, generation, eval_rollouts)
                row["eval"] = float(fitness(mean_params, seeds).mean())
                if state["best"] is None or row["eval"] > state["best"]["score"]:
                    state["best"] = {"params": mean_params[0], "score": row["eval"], "generation": generation}
                    if on_best is not None:
                        on_best(mean_params[0], row["eval"], generation)
            row["seconds"] = time.perf_counter() - start
            state["history"].append(row)
            state["generation"] = generation + 1
            state["numpy_random"] = np.random.get_state()
            checkpoint = {**(payload(state) if payload else {}), "evolution": pickle.dumps(state)}
            checkpoint["generation"] = state["generation"]
            _save(out / CHECKPOINTS / LAST, checkpoint)
            if checkpoint_every and state["generation"] % checkpoint_every == 0:
                _save(out / CHECKPOINTS / f"step{state['generation']}.ckpt", checkpoint)
            _append_metrics(metrics, row)
            for key in ("best", "mean", "std", "sigma", "eval"):
                if key in row:
                    writer.add_scalar(
                        f"fitness/{key}" if key != "sigma" else "cma/sigma", row[key], generation
                    )
            writer.flush()
            bar.update()
            bar.set_postfix({k: f"{v:.2f}" for k, v in row.items() if k in ("best", "mean", "std", "eval")})
    finally:
        bar.close()
        writer.close()
    return state


def _save(path: Path, checkpoint: dict[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save(checkpoint, f))  # a kill while saving leaves the previous file


METRICS = ("generation", "best", "mean", "std", "sigma", "eval", "seconds")


def _append_metrics(path: Path, row: dict[str, float]) -> None:
    """One row of ``METRICS`` (eval empty between evaluations); the header when the file is new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, METRICS)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in METRICS})


# ---- the command ---------------------------------------------------------------------------------------


@dataclass
class ControllerConfig:
    """`worldmodels agent controller` options; every key can be set in the YAML recipe or as --key value."""

    model: str | None = None
    """a trained world model: checkpoints/last.ckpt of `worldmodels fit` (MDN-RNN = V + M, or RSSM) or of any
    agent run (required; --world_model.ckpt works too)"""
    out: str = "runs/controller"
    """the run folder: checkpoints/last.ckpt (+ step<N>.ckpt), config.yaml, TensorBoard events, csv/
    (--trainer.default_root_dir works too)"""
    fitness: Literal["real", "dream"] = "real"
    """where candidates are scored: real (episodes in env) or dream (the model's imagination from data)"""
    env: str | None = None
    """real fitness: the environment spec, e.g. CarRacing-v3 or dmc:cartpole-swingup (`worldmodels envs`)"""
    data: str | None = None
    """dream fitness: the episode store whose frames start the dreams (the one the model was trained on)"""
    population: int = 64
    """candidates per generation (World Models: 64)"""
    rollouts: int = 16
    """episodes per candidate; its fitness is their mean return (World Models: 16)"""
    generations: int = 1000
    """generations to run in all (a resumed run stops at the same total)"""
    sigma: float = 0.1
    """initial CMA-ES step size around the zero policy (World Models carracing/train.py: 0.1)"""
    hidden: int = 0
    """0: a linear controller (World Models); > 0: one tanh hidden layer of this width"""
    eval_every: int = 25
    """score the distribution mean every N generations and after the last (World Models: 25)"""
    eval_rollouts: int = 1024
    """episodes per evaluation of the mean (World Models: 64 x 16 = 1024)"""
    checkpoint_every: int = 100
    """also keep checkpoints/step<N>.ckpt every N generations (0: only last.ckpt, written every generation)"""
    ckpt_path: str | None = None
    """resume a run: last (out/checkpoints/last.ckpt), or a checkpoint path; unset: a fresh run"""
    seed: int = 0
    """seed of CMA-ES and of the episode seeds"""
    workers: int = 1
    """real fitness: environment processes (1: in this process)"""
    size: int | None = None
    """real fitness: image size (default: the model's)"""
    action_repeat: int | None = None
    """real fitness: env steps per action (default: per env, worldmodels/envs.py)"""
    rollout_steps: int | None = None
    """real fitness: cut each fitness episode after this many agent steps (null: full episodes)"""
    patience: int | None = None
    """real fitness: end an episode after this many agent steps in a row without positive reward"""
    crop: bool | None = None
    """real fitness: frames cut to the playfield rows (null: worldmodels.envs.CROP); as the model was trained"""
    horizon: int = 1000
    """dream fitness: imagined steps per rollout"""
    context: int = 5
    """dream fitness: real frames observed before dreaming"""
    temperature: float | None = None
    """dream fitness: the model's sampling temperature tau (null: keep the model's)"""
    done: Literal["threshold", "sample"] = "threshold"
    """dream fitness: predicted episode ends, threshold (P(continue) < 0.5) or sample"""
    device: str = "cpu"
    """dream fitness: where the batched dream runs (real-env workers use the CPU)"""
    progress: bool = True
    """show a progress bar"""
    resume: bool | None = None
    """deprecated: use --ckpt_path last"""


DESCRIPTION = (
    "World Models C: a linear (or MLP) policy on a trained world model's features, evolved by CMA-ES. It needs a "
    "trained world model (--model): V + M from `worldmodels fit -c configs/carracing_vae.yaml` then `worldmodels "
    "fit -c configs/carracing_mdnrnn.yaml`, an RSSM from `worldmodels fit -c configs/rssm_dmc.yaml`, or any agent "
    "checkpoint. A run writes OUT/checkpoints/last.ckpt (and step<N>.ckpt every checkpoint_every generations), "
    "config.yaml, TensorBoard events and csv/version_N/metrics.csv into --out; --ckpt_path last resumes; "
    "`worldmodels eval --ckpt OUT/checkpoints/last.ckpt --env SPEC` evaluates it."
)


def build_parser() -> Any:
    """The jsonargparse parser of `worldmodels agent controller`: ``-c FILE`` and one option per config key."""
    from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)  # the help texts under each field
    parser = ArgumentParser(prog="worldmodels agent controller", description=DESCRIPTION)
    parser.add_argument(
        "-c", "--config", action=ActionConfigFile, help="a YAML recipe (configs/controller_*.yaml)"
    )
    parser.add_class_arguments(ControllerConfig, as_group=False)
    return parser


RENAMED = {"max_steps": "rollout_steps"}  # old option -> new one (max_steps means training steps elsewhere)
ALIASES = {"world_model.ckpt": "model", "trainer.default_root_dir": "out"}  # PlaNet's and Dreamer's spellings


def parse_config(argv: list[str]) -> ControllerConfig:
    """``-c FILE`` plus ``--key value`` overrides; an unknown key exits with status 2 (jsonargparse). A renamed
    option (``RENAMED``) still works on the command line, with one line naming the new one; PlaNet's and Dreamer's
    ``--world_model.ckpt`` and ``--trainer.default_root_dir`` (``ALIASES``) mean ``--model`` and ``--out``."""
    argv = list(argv)
    for i, token in enumerate(argv):
        name, eq, value = token[2:].partition("=") if token.startswith("--") else ("", "", "")
        if name in RENAMED:
            print(f"--{name} is now --{RENAMED[name]}: the length of a fitness episode in agent steps")
            argv[i] = f"--{RENAMED[name]}{eq}{value}"
        elif name in ALIASES:
            argv[i] = f"--{ALIASES[name]}{eq}{value}"
    namespace = build_parser().parse_args(argv)
    return ControllerConfig(**{f.name: namespace[f.name] for f in fields(ControllerConfig)})


def _fitness_task(cfg: ControllerConfig) -> str:
    """What a fitness value measures: the options that change returns (a resume with others resets the best)."""
    keys = ("fitness", "env", "size", "action_repeat", "rollout_steps", "patience", "crop")
    if cfg.fitness == "dream":
        keys = ("fitness", "data", "horizon", "context", "temperature", "done")
    return " ".join(f"{k}={getattr(cfg, k)}" for k in keys)


def trained_on(cfg: ControllerConfig) -> dict[str, Any]:
    """The env and action repeat the controller acts in: real fitness's, or those the dream store was collected
    with (its metadata.json); `worldmodels eval` reads them from the checkpoint. {"env": None} if unknown."""
    if cfg.fitness == "real":
        return {"env": cfg.env, "action_repeat": cfg.action_repeat}
    from worldmodels.sources import open_source

    metadata = getattr(open_source(cfg.data), "metadata", None) or {}
    return {"env": metadata.get("env"), "action_repeat": metadata.get("action_repeat")}


def eval_command(ckpt: str | Path, trained: dict[str, Any], episodes: int = 10) -> str:
    """The `worldmodels eval` line that scores the controller in ``ckpt`` in the env it was trained for."""
    words = ["worldmodels", "eval", "--ckpt", str(ckpt), "--env", trained.get("env") or "SPEC"]
    if trained.get("action_repeat"):
        words += ["--action_repeat", str(trained["action_repeat"])]
    return shlex.join([*words, "--episodes", str(episodes)])


def train(cfg: ControllerConfig) -> dict[str, Any]:
    """Evolve a controller on ``cfg.model``; writes ``cfg.out/checkpoints/last.ckpt``. Returns the evolution state."""
    if cfg.resume is not None:
        print("--resume is deprecated: use --ckpt_path last to resume (leave it out to start over)")
        if cfg.resume and cfg.ckpt_path is None:
            cfg.ckpt_path = "last"
    if cfg.fitness == "real" and not cfg.env:
        raise ConfigError("fitness: real needs env (e.g. --env CarRacing-v3)")
    if cfg.patience is not None and cfg.patience < 1:
        raise ConfigError(f"patience={cfg.patience}: give a number of agent steps >= 1, or null for none")
    if cfg.fitness == "dream" and not cfg.data:
        raise ConfigError("fitness: dream needs data, the episode store whose frames start the dreams")
    device = cfg.device if cfg.fitness == "dream" else "cpu"
    model = load_controller_world_model(cfg.model, device=device)
    if cfg.temperature is not None:
        if not hasattr(model, "temperature"):
            raise ConfigError(
                f"{cfg.model}: this {type(model).__name__} has no sampling temperature; leave temperature unset"
            )
        model.temperature = cfg.temperature
    controller = Controller(model.feature_dim, model.action_dim, model.discrete, cfg.hidden)
    if cfg.fitness == "real":
        fitness: Any = RealFitness(
            cfg.model,
            cfg.env,
            cfg.hidden,
            cfg.size,
            cfg.action_repeat,
            cfg.rollout_steps,
            cfg.workers,
            cfg.patience,
            cfg.crop,
        )
    else:
        fitness = DreamFitness(model, controller, cfg.data, cfg.horizon, cfg.context, cfg.done, device)
    world_model, trained = world_model_checkpoint(model), trained_on(cfg)
    out = Path(cfg.out)
    config = asdict(cfg)
    atomic_write(out / "config.yaml", lambda f: f.write(yaml.safe_dump(config, sort_keys=False).encode()))

    def payload(state: dict[str, Any]) -> dict[str, Any]:
        """The agent: the best-scoring distribution mean, or the current mean before the first evaluation."""
        best = state["best"]
        if best is not None:
            params, score, generation = best["params"], best["score"], best["generation"]
        else:
            params, score, generation = state["es"].result.xfavorite, None, state["generation"] - 1
        agent = ControllerAgent(model, controller, torch.from_numpy(np.asarray(params)))
        return agent.checkpoint(
            world_model,
            world_model_path=str(cfg.model),
            score=score,
            params_generation=generation,
            trained_on=trained,
            config=config,
        )

    print(
        f"controller: {controller.num_params} params on {type(model).__name__} features ({model.feature_dim}); "
        f"{cfg.fitness} fitness, population {cfg.population} x {cfg.rollouts} rollouts"
    )
    try:
        state = evolve(
            fitness,
            controller.num_params,
            out,
            population=cfg.population,
            rollouts=cfg.rollouts,
            generations=cfg.generations,
            sigma=cfg.sigma,
            eval_every=cfg.eval_every,
            eval_rollouts=cfg.eval_rollouts,
            seed=cfg.seed,
            ckpt_path=cfg.ckpt_path,
            checkpoint_every=cfg.checkpoint_every,
            payload=payload,
            progress=cfg.progress,
            task=_fitness_task(cfg),
        )
    finally:
        fitness.close()
    last = out / CHECKPOINTS / LAST
    print(f"{last}: {_state_summary(state)}")
    if cfg.crop is False:
        print("note: trained on whole frames (crop: false); `worldmodels eval` always crops CarRacing frames")
    print(f"evaluate it: {eval_command(last, trained)}")
    return state
