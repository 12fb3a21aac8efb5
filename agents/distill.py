"""Distil a planning agent into a policy: one forward pass per action instead of a latent search.

    worldmodels agent distill --ckpt runs/planet/checkpoints/last.ckpt --env SPEC --out runs/distill
    worldmodels agent distill --ckpt runs/planet/checkpoints/last.ckpt --env SPEC --out runs/distill --ckpt_path last
    worldmodels eval --ckpt runs/distill/checkpoints/last.ckpt --env SPEC

The teacher is a PlaNet agent (``agents/planet.py``): its world model filters frames into posterior states and its
planner (CEM / MPPI / random shooting) searches action sequences in the model's dream at every step. The student,
``DistilledPolicy``, keeps the teacher's world model, frozen, and puts a small MLP on ``world_model.features(post)``:
tanh into [-1, 1] for continuous actions, logits (acting with the one-hot argmax) for discrete ones. It reaches the
model only through worldmodels/interface.py (``observe_step``, ``features``), so any world model works.

Training is DAgger (Ross, Gordon & Bagnell 2011, "A Reduction of Imitation Learning and Structured Prediction to
No-Regret Online Learning", Algorithm 3.1) with the mixing schedule beta_i = I(i = 1) the paper recommends in
practice: iteration 0 rolls out the teacher, every later iteration rolls out the current student; at every posterior
state visited the teacher's planner labels the action it would take (no exploration noise; its plan is kept for
warm start as in ``PlaNetAgent.act``). All (features, teacher action) pairs are aggregated and the policy is
retrained on the aggregate after each iteration (Adam; mean squared error for continuous actions, cross-entropy for
discrete ones). Episode seeds, initialization and minibatch order are functions of ``seed`` and the iteration, so
a run is deterministic and a resumed run ends where an uninterrupted one does.

The run folder ``out``: ``checkpoints/last.ckpt`` after every iteration (written atomically), holding the student
(``worldmodels eval`` loads it without the teacher's file) and the whole DAgger state (optimizer, dataset,
iteration, history), so ``--ckpt_path last`` resumes; ``metrics.csv`` and TensorBoard events, one row per
iteration (loss, return of the policy that rolled out, student return); ``report.json``, the side-by-side
evaluation of planner and student on the same episode seeds with the milliseconds each takes per action.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agents.head import describe, exploration_noise
from worldmodels.checkpoints import load_world_model, read_model_class, world_model_spec
from worldmodels.errors import CheckpointError, ConfigError
from worldmodels.guards import atomic_write
from worldmodels.interface import Carry, WorldModel, observe_step

POLICY_CLASS = "agents.distill.DistilledPolicy"
TEACHER_CLASSES = ("agents.planet.PlaNetAgent",)  # agents that act by planning in their world model
CHECKPOINTS, LAST = "checkpoints", "last.ckpt"  # out/checkpoints/last.ckpt, as every agent run
EXPLORATION_NOISE = (
    0.3  # act(explore=True): PlaNet App. A's noise std (epsilon for discrete actions), as the teacher
)


# ---- the student ---------------------------------------------------------------------------------------


class DistilledPolicy(nn.Module):
    """A frozen world model filtering real frames + an MLP from its features to an action.

    ``hidden``: the widths of the MLP's hidden layers (ELU between layers; empty: linear). The world model is
    frozen in place (given the teacher's own, the teacher's is frozen too: it only plans). Acts like every agent
    in agents/evaluate.py; attributes ``action_dim``, ``discrete``, ``image_size`` are the world model's."""

    def __init__(self, world_model: WorldModel, hidden: Sequence[int] = (64, 64)) -> None:
        super().__init__()
        self.world_model = world_model
        if isinstance(world_model, nn.Module):
            world_model.requires_grad_(False)
            world_model.eval()
        self.hidden = [int(h) for h in hidden]
        self.action_dim, self.discrete = world_model.action_dim, world_model.discrete
        self.image_size = world_model.image_size
        dims = [world_model.feature_dim, *self.hidden, self.action_dim]
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(n_in, n_out))
            if i < len(dims) - 2:
                layers.append(nn.ELU())
        self.net = nn.Sequential(*layers)

    @property
    def device(self) -> torch.device:
        return self.net[0].weight.device

    def forward(self, features: Tensor) -> Tensor:
        """features (..., F) -> continuous actions in [-1, 1] (..., A), or logits (..., A) for discrete ones."""
        out = self.net(features.to(self.device).float())
        return out if self.discrete else torch.tanh(out)

    def action(self, features: Tensor, explore: bool = False) -> Tensor:
        """features (N, F) -> action (N, A): the tanh output, or the one-hot argmax of the logits. ``explore`` adds
        the teacher's exploration noise (``agents.head.exploration_noise``, std / epsilon 0.3)."""
        out = self(features)
        if self.discrete:
            out = F.one_hot(out.argmax(-1), self.action_dim).to(out.dtype)
        return exploration_noise(out, EXPLORATION_NOISE, self.discrete) if explore else out

    def loss(self, features: Tensor, target: Tensor) -> Tensor:
        """features (B, F), the teacher's actions (B, A) -> mean squared error (continuous) or cross-entropy of
        the logits against the teacher's one-hot action (discrete); a scalar."""
        out = self(features)
        target = target.to(out.device)
        if self.discrete:
            return F.cross_entropy(out, target.argmax(-1))
        return F.mse_loss(out, target.float())

    @torch.no_grad()
    def act(
        self, obs: Tensor, is_first: Tensor, state: Carry | None = None, explore: bool = False
    ) -> tuple[Tensor, Carry]:
        """obs (N, H, W, 3) uint8, is_first (N,) bool -> action (N, A), state: the posterior and the action
        taken (``worldmodels.interface.observe_step``'s carry)."""
        device = self.device
        posterior = observe_step(self.world_model, obs.to(device), is_first.to(device), state)
        action = self.action(self.world_model.features(posterior), explore)
        return action, (posterior, action)

    def checkpoint(self, **extra: Any) -> dict[str, Any]:
        """What ``load`` reads: the class, the world model's spec (``world_model_spec``: its architecture, no file
        paths), the MLP's widths and every weight (``world_model.*``, ``net.*``). The layout of an agent
        checkpoint, so ``load_world_model({"ckpt": ...})`` takes the world model out of it too."""
        return {
            "model_class": POLICY_CLASS,
            "hyper_parameters": {
                "world_model": world_model_spec(self.world_model),
                "hidden": self.hidden,
                "action_dim": self.action_dim,
                "discrete": self.discrete,
                "image_size": self.image_size,
            },
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            **extra,
        }

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> DistilledPolicy:
        """A distilled policy from its checkpoint, alone: the world model is rebuilt from its spec."""
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(checkpoint, dict) or checkpoint.get("model_class") != POLICY_CLASS:
            name = checkpoint.get("model_class") if isinstance(checkpoint, dict) else None
            raise CheckpointError(
                f"{path}: not a distilled policy (class {name!r}); give a checkpoint of `worldmodels agent distill`"
            )
        hparams = checkpoint["hyper_parameters"]
        model = load_world_model(hparams["world_model"])
        policy = cls(model, hparams["hidden"])
        policy.load_state_dict(checkpoint["state_dict"])
        return policy.to(device).eval()


# ---- DAgger --------------------------------------------------------------------------------------------


@dataclass
class Episode:
    """One labelled episode: the features of every posterior state visited (T, F), the teacher's action there
    (T, A), and the episode's return under the policy that acted."""

    features: Tensor
    labels: Tensor
    ret: float


@torch.no_grad()
def labelled_episode(
    teacher: Any, env: Any, seed: int, policy: DistilledPolicy | None = None, device: str = "cpu"
) -> Episode:
    """One episode from ``env.reset(seed=seed)`` acted by ``policy`` (None: the teacher's planner, DAgger's
    beta = 1), each visited state labelled by ``teacher.planner(teacher.world_model, post, prev_plan)``.

    The filter's carry holds the action actually taken, so the states are the ones the acting policy reaches.
    ``torch.manual_seed(seed)`` first: a sampling model and the planner draw the same numbers on every run."""
    model = teacher.world_model
    torch.manual_seed(seed)
    obs, _ = env.reset(seed=seed)
    carry, plan, is_first, done, total = None, None, True, False, 0.0
    features, labels = [], []
    while not done:
        frame = torch.from_numpy(np.array(obs)[None]).to(device)  # a writable copy (gym may return read-only)
        post = observe_step(model, frame, torch.tensor([is_first], device=device), carry)
        label, plan = teacher.planner(model, post, plan)  # (1, A), the plan kept for warm start
        feature = model.features(post)  # (1, F)
        action = label if policy is None else policy.action(feature)
        carry = (post, action)
        features.append(feature[0].float().cpu())
        labels.append(label[0].float().cpu())
        step = action[0].float().cpu().numpy()
        obs, reward, terminated, truncated, _ = env.step(int(step.argmax()) if model.discrete else step)
        total += float(reward)
        is_first, done = False, terminated or truncated
    return Episode(torch.stack(features), torch.stack(labels), total)


def episode_seeds(seed: int, iteration: int, count: int) -> list[int]:
    """The ``count`` episode seeds of one DAgger iteration: random uint32 values drawn from (seed, iteration), so
    they neither repeat across iterations nor meet the evaluation's ``eval_seed``, ``eval_seed + 1``, ..."""
    return [int(s) for s in np.random.SeedSequence([seed, iteration]).generate_state(count)]


def fit_policy(
    policy: DistilledPolicy,
    optimizer: torch.optim.Optimizer,
    features: Tensor,
    labels: Tensor,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
) -> float:
    """``epochs`` passes of minibatch Adam over the aggregate features (M, F), labels (M, A); the minibatch order
    comes from ``generator``. Returns the mean loss of the last pass (nan if ``epochs`` is 0)."""
    policy.net.train()
    losses: list[float] = []
    for _ in range(epochs):
        losses = []
        order = torch.randperm(len(features), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            loss = policy.loss(features[index].to(policy.device), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    policy.net.eval()
    return float(np.mean(losses)) if losses else float("nan")


class Timed:
    """An agent whose ``act`` calls are timed (``seconds``, ``calls``); everything else is the agent's. ``sync``
    waits for the GPU before stopping the clock (an agent on CUDA)."""

    def __init__(self, agent: Any, sync: bool = False) -> None:
        self.agent, self.sync, self.seconds, self.calls = agent, sync, 0.0, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.agent, name)

    def act(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = self.agent.act(*args, **kwargs)
        if self.sync:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out

    @property
    def ms_per_action(self) -> float:
        return 1000.0 * self.seconds / max(self.calls, 1)


def timed_evaluate(agent: Any, spec: str, device: str = "cpu", **options: Any) -> dict[str, Any]:
    """``agents.evaluate.evaluate`` with ``act`` timed -> {return_mean, return_std, returns, ms_per_action}."""
    from agents.evaluate import evaluate

    timed = Timed(agent, sync=str(device).startswith("cuda"))
    returns, _ = evaluate(timed, spec, **options)
    return {
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "returns": [float(r) for r in returns],
        "ms_per_action": timed.ms_per_action,
    }


def resume_path(out: Path, ckpt_path: str | Path | None) -> Path | None:
    """``--ckpt_path`` -> the checkpoint to resume from, or None for a fresh run (said in one line). ``last`` is
    ``out/checkpoints/last.ckpt`` (a fresh run when it does not exist yet)."""
    if ckpt_path is None:
        return None
    if str(ckpt_path) == "last":
        last = out / CHECKPOINTS / LAST
        if last.is_file():
            print(f"resuming from {last}")
            return last
        print(f"--ckpt_path last: no {last} yet, a fresh run")
        return None
    path = Path(ckpt_path)
    if not path.is_file():
        raise CheckpointError(
            f"--ckpt_path {path}: no such checkpoint; give last or the checkpoints/last.ckpt of a distill run"
        )
    print(f"resuming from {path}")
    return path


def save(path: Path, checkpoint: dict[str, Any]) -> None:
    """``checkpoint`` to ``path`` atomically: a kill while saving leaves the previous file."""
    atomic_write(path, lambda f: torch.save(checkpoint, f))


METRICS = (
    "iteration",
    "dataset",
    "loss",
    "rollout_return",
    "student_return",
    "student_return_std",
    "seconds",
)


def write_metrics(out: Path, history: list[dict[str, float]]) -> None:
    """``out/metrics.csv``: one row per finished iteration, rewritten whole (a resumed run never duplicates)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, METRICS)
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k, "") for k in METRICS})
    atomic_write(out / "metrics.csv", lambda f: f.write(buffer.getvalue().encode()))


def distill(
    teacher: Any,
    spec: str,
    out: str | Path,
    *,
    iterations: int = 5,
    episodes: int = 5,
    epochs: int = 50,
    batch_size: int = 128,
    lr: float = 1e-3,
    hidden: Sequence[int] = (64, 64),
    seed: int = 0,
    size: int | None = None,
    action_repeat: int | None = None,
    eval_episodes: int = 10,
    eval_seed: int = 1000,
    ckpt_path: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    extra: dict[str, Any] | None = None,
) -> tuple[DistilledPolicy, dict[str, Any]]:
    """DAgger from ``teacher`` (an agent with ``world_model`` and ``planner``) in the env ``spec``.

    ``iterations`` DAgger iterations of ``episodes`` labelled episodes each (iteration 0 acted by the teacher,
    the others by the student); after each, ``epochs`` passes over the aggregate (``batch_size``, Adam at ``lr``),
    then the student is evaluated on ``eval_episodes`` episodes from ``eval_seed`` (``agents.evaluate.evaluate``).
    ``ckpt_path`` resumes (``resume_path``); ``extra`` goes into every checkpoint (the teacher's path, the env).
    Returns the student and the state: iteration (done), history (one dict per iteration), dataset (features
    (M, F), labels (M, A), iteration (M,))."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    from agents.evaluate import evaluate
    from worldmodels import envs

    if iterations < 1 or episodes < 1 or epochs < 0 or batch_size < 1 or lr < 0 or eval_episodes < 1:
        raise ConfigError(
            f"iterations={iterations}, episodes={episodes}, epochs={epochs}, batch_size={batch_size}, lr={lr}, "
            f"eval_episodes={eval_episodes}: iterations, episodes, batch_size and eval_episodes must be >= 1, "
            "epochs and lr >= 0"
        )
    out = Path(out)
    model = teacher.world_model
    torch.manual_seed(seed)  # the policy's initial weights
    policy = DistilledPolicy(model, hidden).to(device)
    optimizer = torch.optim.Adam(policy.net.parameters(), lr=lr)
    features = torch.zeros(0, model.feature_dim)
    labels = torch.zeros(0, model.action_dim)
    rows = torch.zeros(0, dtype=torch.long)  # the iteration each pair was collected in
    history: list[dict[str, float]] = []
    done = 0
    resume = resume_path(out, ckpt_path)
    if resume is not None:
        checkpoint = torch.load(resume, map_location="cpu", weights_only=False)
        if "dagger" not in checkpoint:
            raise CheckpointError(
                f"{resume}: holds no DAgger state; resume from the checkpoints/last.ckpt of `worldmodels agent "
                "distill`"
            )
        if checkpoint["hyper_parameters"]["hidden"] != policy.hidden:
            raise ConfigError(
                f"{resume}: its policy has hidden layers {checkpoint['hyper_parameters']['hidden']}, not "
                f"{policy.hidden}: resume with the same --hidden, or use another --out"
            )
        policy.load_state_dict(checkpoint["state_dict"])
        dagger = checkpoint["dagger"]
        optimizer.load_state_dict(dagger["optimizer"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        features, labels, rows = dagger["features"], dagger["labels"], dagger["rows"]
        history, done = dagger["history"], dagger["iteration"]
    policy.eval()
    size = size or model.image_size
    env = envs.make(spec, size=size, action_repeat=action_repeat)
    writer = SummaryWriter(str(out), purge_step=done)
    bar = tqdm(
        total=iterations * episodes,
        initial=min(done, iterations) * episodes,
        desc="DAgger",
        unit="ep",
        disable=not progress,
    )
    try:
        for iteration in range(done, iterations):
            start = time.perf_counter()
            actor = None if iteration == 0 else policy  # beta_i = I(i = 1), Ross et al. 2011, Sec. 3
            returns = []
            for episode_seed in episode_seeds(seed, iteration, episodes):
                episode = labelled_episode(teacher, env, episode_seed, actor, device)
                features = torch.cat([features, episode.features])
                labels = torch.cat([labels, episode.labels])
                rows = torch.cat([rows, torch.full((len(episode.features),), iteration)])
                returns.append(episode.ret)
                bar.update()
                bar.set_postfix(iteration=iteration, ret=f"{episode.ret:.1f}")
            # the minibatch order, seeded by the iteration's first episode seed: a resumed run shuffles alike
            generator = torch.Generator().manual_seed(episode_seeds(seed, iteration, 1)[0])
            loss = fit_policy(policy, optimizer, features, labels, epochs, batch_size, generator)
            student, _ = evaluate(
                policy, spec, eval_episodes, size=size, action_repeat=action_repeat, seed=eval_seed
            )
            row = {
                "iteration": iteration,
                "dataset": len(features),
                "loss": loss,
                "rollout_return": float(np.mean(returns)),  # iteration 0: the teacher's, then the student's
                "student_return": float(np.mean(student)),
                "student_return_std": float(np.std(student)),
                "seconds": time.perf_counter() - start,
            }
            history.append(row)
            dagger = {
                "optimizer": optimizer.state_dict(),
                "features": features,
                "labels": labels,
                "rows": rows,
                "history": history,
                "iteration": iteration + 1,
            }
            save(out / CHECKPOINTS / LAST, policy.checkpoint(dagger=dagger, **(extra or {})))
            write_metrics(out, history)
            for key in ("loss", "rollout_return", "student_return", "dataset"):
                writer.add_scalar(f"distill/{key}", row[key], iteration)
            writer.flush()
            bar.write(
                f"iteration {iteration}: {row['dataset']} labelled states, loss {loss:.4f}, rollout return "
                f"{row['rollout_return']:.2f}, student return {row['student_return']:.2f} +- "
                f"{row['student_return_std']:.2f}"
            )
    finally:
        bar.close()
        writer.close()
        env.close()
    state = {"iteration": max(done, iterations), "history": history}
    state["dataset"] = {"features": features, "labels": labels, "iteration": rows}
    return policy, state


def side_by_side(
    teacher: Any,
    student: DistilledPolicy,
    spec: str,
    episodes: int = 10,
    seed: int = 1000,
    size: int | None = None,
    action_repeat: int | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Planner and student on the same ``episodes`` episode seeds (``seed``, ``seed + 1``, ...; no exploration):
    {"planner": {...}, "student": {...}} each with return_mean, return_std, returns and ms_per_action (the
    time of ``act``, filtering the frame included, averaged over every step)."""
    options = dict(episodes=episodes, size=size, action_repeat=action_repeat, seed=seed, device=device)
    return {
        "planner": timed_evaluate(teacher, spec, **options),
        "student": timed_evaluate(student, spec, **options),
    }


def format_report(report: dict[str, Any]) -> str:
    """The side-by-side table: one row per policy, return mean +- std and ms per action."""
    lines = [f"{'':<10} {'return':>16} {'ms/action':>10}"]
    for name in ("planner", "student"):
        r = report[name]
        cell = f"{r['return_mean']:.2f} +- {r['return_std']:.2f}"
        lines.append(f"{name:<10} {cell:>16} {r['ms_per_action']:>10.2f}")
    return "\n".join(lines)


# ---- the command ---------------------------------------------------------------------------------------


def load_teacher(path: str | Path, device: str = "cpu") -> Any:
    """The planning agent in ``path`` (a checkpoint of `worldmodels agent planet`); CheckpointError in one line for
    a missing file or a checkpoint of anything else."""
    from agents.evaluate import load_agent

    name = read_model_class(path)
    if name not in TEACHER_CLASSES:
        raise CheckpointError(
            f"{path}: not a planning agent (class {name!r}); distill takes a checkpoint of `worldmodels agent "
            "planet` (its checkpoints/last.ckpt)"
        )
    agent = load_agent(path, device)
    if not hasattr(agent, "planner") or not hasattr(agent, "world_model"):
        raise CheckpointError(f"{path}: its {name} has no planner and world model to distil")
    return agent


def trained_on(path: str | Path) -> dict[str, Any]:
    """The env, action repeat and image size the agent in ``path`` was trained with ({} if it does not say)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    return dict(checkpoint.get("OnlineDataModule") or checkpoint.get("trained_on") or {})


def check_env(path: str | Path, teacher: Any, spec: str, size: int | None, action_repeat: int | None) -> None:
    """ConfigError in one line when the env's action space or image size is not the planner's."""
    from worldmodels import envs

    env = envs.make(spec, size=size or teacher.image_size, action_repeat=action_repeat)
    have = (
        envs.action_dim(env.action_space),
        envs.is_discrete(env.action_space),
        env.observation_space.shape[0],
    )
    env.close()
    want = (teacher.action_dim, teacher.discrete, teacher.image_size)
    if have != want:
        trained = trained_on(path).get("env")
        raise ConfigError(
            f"--env {spec} has {describe(*have)}, but the planner in {path} acts with {describe(*want)}: distil on "
            f"the env it was trained on{f' (--env {trained})' if trained else ''}"
        )


def eval_command(ckpt: Path, spec: str, episodes: int, seed: int, action_repeat: int | None) -> str:
    """The `worldmodels eval` line that scores the distilled policy as the report did."""
    words = ["worldmodels", "eval", "--ckpt", str(ckpt), "--env", spec]
    if action_repeat:
        words += ["--action_repeat", str(action_repeat)]
    return shlex.join([*words, "--episodes", str(episodes), "--seed", str(seed)])


DESCRIPTION = (
    "Distil a PlaNet agent's planner into a policy network on its world model's features (DAgger: the planner "
    "labels the states the policy visits), so acting costs one forward pass. Writes OUT/checkpoints/last.ckpt "
    "after every iteration (--ckpt_path last resumes), OUT/metrics.csv, TensorBoard events and OUT/report.json: "
    "planner and policy return on the same episode seeds and the ms per action of each."
)


def true_or_false(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: give true or false")


def build_parser() -> argparse.ArgumentParser:
    """The options of `worldmodels agent distill` (underscores; cli/main.py maps hyphens to them)."""
    p = argparse.ArgumentParser(prog="worldmodels agent distill", description=DESCRIPTION)
    p.add_argument("--ckpt", required=True, help="the teacher: a checkpoint of `worldmodels agent planet`")
    p.add_argument(
        "--env",
        default=None,
        help="environment spec (default: the one the teacher was trained on, from its checkpoint)",
    )
    p.add_argument("--out", default="runs/distill", help="the run folder (default runs/distill)")
    p.add_argument(
        "--iterations",
        type=int,
        default=5,
        help="DAgger iterations; 0 rolls out the planner, the rest the policy (default 5)",
    )
    p.add_argument("--episodes", type=int, default=5, help="labelled episodes per iteration (default 5)")
    p.add_argument(
        "--epochs", type=int, default=50, help="passes over the aggregate dataset per iteration (default 50)"
    )
    p.add_argument("--batch_size", type=int, default=128, help="minibatch size (default 128)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument(
        "--hidden",
        type=int,
        nargs="*",
        default=[64, 64],
        help="hidden layer widths of the policy MLP (default 64 64; none: linear)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the policy's weights, the episodes and minibatches (default 0)",
    )
    p.add_argument(
        "--eval_episodes",
        type=int,
        default=10,
        help="episodes of each evaluation and of the final report (default 10)",
    )
    p.add_argument(
        "--eval_seed",
        type=int,
        default=1000,
        help="seed of the first evaluation episode, the next count up (default 1000)",
    )
    p.add_argument("--size", type=int, default=None, help="image size (default: the teacher's)")
    p.add_argument(
        "--action_repeat",
        type=int,
        default=None,
        help="env steps per action (default: the teacher's, else per task)",
    )
    p.add_argument(
        "--ckpt_path",
        default=None,
        help="resume: last (OUT/checkpoints/last.ckpt) or a checkpoint path; unset: a fresh run",
    )
    p.add_argument("--device", default="cpu", help="where the planner and the policy run (default cpu)")
    p.add_argument(
        "--progress",
        type=true_or_false,
        default=True,
        help="show a progress bar: true or false (default true)",
    )
    return p


def run(argv: list[str]) -> dict[str, Any]:
    """`worldmodels agent distill ARGS`: distil, report side by side, print the `worldmodels eval` line. Returns
    the report (also written to OUT/report.json)."""
    args = build_parser().parse_args(argv)
    if not str(args.device).startswith("cuda"):
        # acting on one frame at a time, extra CPU threads only spin (as `worldmodels eval`)
        torch.set_num_threads(1)
    teacher = load_teacher(args.ckpt, args.device)
    trained = trained_on(args.ckpt)
    spec = args.env or trained.get("env")
    if not spec:
        raise ConfigError(f"{args.ckpt} does not say which env it was trained on: give --env SPEC")
    action_repeat = args.action_repeat
    if action_repeat is None and trained.get("env") == spec:
        action_repeat = trained.get("action_repeat")
    check_env(args.ckpt, teacher, spec, args.size, action_repeat)
    out = Path(args.out)
    config = {k: v for k, v in vars(args).items()}
    extra = {
        "teacher": str(args.ckpt),
        "trained_on": {"env": spec, "action_repeat": action_repeat},  # read by `worldmodels eval`
        "config": config,
    }
    student, state = distill(
        teacher,
        spec,
        out,
        iterations=args.iterations,
        episodes=args.episodes,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        hidden=args.hidden,
        seed=args.seed,
        size=args.size,
        action_repeat=action_repeat,
        eval_episodes=args.eval_episodes,
        eval_seed=args.eval_seed,
        ckpt_path=args.ckpt_path,
        device=args.device,
        progress=args.progress,
        extra=extra,
    )
    report = side_by_side(
        teacher, student, spec, args.eval_episodes, args.eval_seed, args.size, action_repeat, args.device
    )
    report.update(
        env=spec,
        episodes=args.eval_episodes,
        seed=args.eval_seed,
        action_repeat=action_repeat,
        device=args.device,
        threads=torch.get_num_threads(),
        iterations=state["iteration"],
        labelled_states=len(state["dataset"]["features"]),
        teacher=str(args.ckpt),
    )
    atomic_write(out / "report.json", lambda f: f.write(json.dumps(report, indent=2).encode()))
    print(f"{spec}, {args.eval_episodes} episodes from seed {args.eval_seed}:")
    print(format_report(report))
    print(f"report: {out / 'report.json'}")
    last = out / CHECKPOINTS / LAST
    print(f"evaluate it: {eval_command(last, spec, args.eval_episodes, args.eval_seed, action_repeat)}")
    return report
