"""Goal reaching, measured: start/goal pairs from an episode store, a planner steering a real environment toward
the goal's latent, and how close to the goal frame it ends up.

    worldmodels eval --ckpt FIT.ckpt --objective goal:STORE --goal_offset 10 --episodes 30 --planner cem

The protocol (``evaluate_goals``):

1. Pairs. ``pairs`` (episode, t) are drawn with ``numpy.random.default_rng(seed)``, uniformly with replacement
   among every step t of every store episode with t + offset inside the episode: the start is frame t, the goal
   frame t + offset of the same episode, so the recorded actions show the goal is reachable in ``offset``
   steps. Steps whose goal frame is within ``MIN_START_RMSE`` of the start are left out: doing nothing would
   "reach" those goals.
2. Start state. The env (the store's spec, image size and action repeat) is reset with the episode's recorded
   ``seed`` and steps the recorded actions up to t. The frame it then shows must equal the stored frame t,
   pixel for pixel; otherwise one StoreError: the env is not deterministic under replay, or the store was
   collected before seeds were recorded (re-collect it with ``worldmodels collect``).
3. Goal. The model filters the episode's frames and actions up to t + offset (``goal_features``); the
   planner's objective becomes a ``GoalObjective`` toward those features (distance and steps as chosen).
4. Acting. The agent's filter is given the same context up to t (frames 0..t-1 and the action that led to
   frame t), so its latent at the start is filtered as the goal's was; it then acts ``budget`` steps (default:
   offset) in the env. The ``random`` baseline takes uniform random actions (``action_space.sample()``) from
   the same starts.
5. Metrics per pair: the pixel RMSE in [0, 1] (``pixel_rmse``) of the start frame and of the final frame to
   the goal frame; the final latent distance (the objective's distance between the goal's features and those
   of the executed trajectory, filtered); milliseconds per ``agent.act`` call (filtering one frame + planning).

Success: the final frame's pixel RMSE to the goal is at most ``SUCCESS_FRACTION`` (one half) of the start
frame's, i.e. the agent closed at least half of the pixel distance to the goal. A relative threshold because
the pixel distance between two states depends on the task's picture (how many pixels the moving parts cover,
the background), so an absolute threshold would have to be chosen per task and image size; the fraction of the
distance closed means the same on every task. Pixels rather than latents because the latent distance is the
planner's own objective (a planner can shrink it without the env getting closer) and differs across models,
while pixels are ground truth. Random actions succeed only when they happen to wander to the goal.

Aggregates: success rate with its 95% Wilson score interval (Wilson 1927, "Probable inference, the law of
succession, and statistical inference", JASA 22; Brown, Cai & DasGupta 2001, Statistical Science 16(2),
recommend it over the normal-approximation interval for small n); ``closer``, the fraction of pairs that ended
nearer the goal frame than they began (a weaker, descriptive criterion beside success); mean final RMSE +- its
standard error, mean start RMSE, mean final latent distance and mean ms per action.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.objectives import GoalObjective, goal_features
from worldmodels import envs
from worldmodels.errors import ConfigError, StoreError
from worldmodels.interface import last_step
from worldmodels.store import Episode, EpisodeStore, is_episode_store

SUCCESS_FRACTION = 0.5  # success: final pixel RMSE <= this x the start's (module docstring)
MIN_START_RMSE = 0.01  # goal frames closer than this to their start are not drawn (module docstring)
WILSON_Z = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval
BASELINES = ("random", "none")
RANDOM_ROW = "random_actions"  # the baseline's row (the planner "random" is random shooting, a planner)


@dataclass(frozen=True)
class Pair:
    """A start/goal pair: frames ``start`` and ``goal`` (= start + offset) of store episode ``episode``."""

    episode: int
    start: int
    goal: int


def goal_store(spec: str | None) -> str | None:
    """``goal:DIR`` naming a directory -> DIR (the goal protocol); any other objective -> None."""
    if not spec or not spec.startswith("goal:"):
        return None
    target = spec[len("goal:") :]
    if not Path(target).is_dir():
        return None
    if not is_episode_store(target):
        raise StoreError(
            f"{target}: not an episode store (no metadata.json or episodes); goal:STORE takes a store made "
            "by `worldmodels collect`"
        )
    return target


def wilson_interval(successes: int, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """The Wilson score interval of a success rate (module docstring): ``successes`` of ``n`` -> (low, high)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if successes == 0 else center - half  # exactly 0 and 1 at the edges, not rounding noise
    high = 1.0 if successes == n else center + half
    return low, high


def pixel_rmse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Frames (..., H, W, 3) uint8 -> root mean squared difference over (H, W, 3), in [0, 1]: (...)."""
    diff = a.astype(np.float64) / 255.0 - b.astype(np.float64) / 255.0
    return np.sqrt(np.square(diff).mean(axis=(-3, -2, -1)))


def draw_pairs(store: EpisodeStore, pairs: int, offset: int, seed: int) -> list[Pair]:
    """``pairs`` start/goal pairs ``offset`` steps apart (module docstring, step 1), seeded by ``seed``."""
    if offset < 1:
        raise ConfigError(f"--goal_offset {offset}: the goal must lie at least one step after the start")
    candidates = []  # (episode, t) of every usable start
    for index, length in enumerate(store.lengths()):
        if length <= offset:
            continue
        images = store.episode(index)["image"]
        moved = pixel_rmse(images[:-offset], images[offset:]) >= MIN_START_RMSE
        candidates += [(index, int(t)) for t in np.nonzero(moved)[0]]
    if not candidates:
        longest = max(store.lengths(), default=0)
        raise StoreError(
            f"{store.root}: no episode has a frame {offset} steps after a start that differs from it (longest "
            f"episode: {longest} steps): use a smaller --goal_offset or a store with longer, moving episodes"
        )
    picks = np.random.default_rng(seed).integers(len(candidates), size=pairs)
    return [Pair(candidates[i][0], candidates[i][1], candidates[i][1] + offset) for i in picks]


def make_env(store: EpisodeStore, spec: str | None, action_repeat: int | None) -> tuple[gym.Env, str]:
    """The env the store was collected in (its spec, image size, action repeat and crop) -> (env, spec).
    ``spec`` and ``action_repeat`` (None: the store's) must agree with the store's metadata."""
    meta = store.metadata
    stored_spec, stored_repeat = meta.get("env"), meta.get("action_repeat")
    if stored_spec is None or stored_repeat is None:
        raise StoreError(
            f"{store.root}: metadata.json names no env or action_repeat, so its episodes cannot be replayed; "
            "use a store made by `worldmodels collect`"
        )
    for name, given, stored in (
        ("--env", spec, stored_spec),
        ("--action_repeat", action_repeat, stored_repeat),
    ):
        if given is not None and given != stored:
            raise ConfigError(
                f"{name} {given}: the goal store {store.root} was collected with {stored}; its start states "
                f"replay only there: drop {name} or give {stored}"
            )
    size = store.image_shape[0]
    env = envs.make(
        stored_spec, size=size, action_repeat=stored_repeat, crop=meta.get("crop_rows") is not None
    )
    return env, stored_spec


def replay_start(env: gym.Env, episode: Episode, t: int, where: str) -> np.ndarray:
    """Reset ``env`` with the episode's recorded seed and step its recorded actions 1..t -> the frame at t
    (H, W, 3) uint8, checked against the stored frame t (module docstring, step 2). ``where`` names the episode
    in errors."""
    if "seed" not in episode:
        raise StoreError(
            f"{where}: the episode records no reset seed (it predates recorded seeds, or an agent's online run "
            "wrote it), so its start states cannot be replayed: re-collect the store with `worldmodels collect`"
        )
    discrete = envs.is_discrete(env.action_space)
    obs, _ = env.reset(seed=int(episode["seed"]))
    for step in range(1, t + 1):
        action = episode["action"][step]
        obs, *_ = env.step(int(action) if discrete else action)
    if not np.array_equal(obs, episode["image"][t]):
        worst = int(np.abs(obs.astype(np.int16) - episode["image"][t].astype(np.int16)).max())
        raise StoreError(
            f"{where}: reset with seed {int(episode['seed'])} and replayed to step {t}, the env shows another frame "
            f"than the stored one (pixels differ by up to {worst}/255): the env is not deterministic under "
            "replay, or the store was collected with other settings; re-collect it with `worldmodels collect`"
        )
    return obs


def context_state(agent: Any, window: Episode) -> tuple[dict[str, Any] | None, bool]:
    """A PlaNet agent's acting state at frame t of ``window`` (frames 0..t, its actions one-hot if discrete):
    the posterior filtered over frames 0..t-1 and the action that led to frame t, so ``agent.act`` on frame t
    continues the episode -> (state, is_first). t = 0: a fresh start (None, True)."""
    t = len(window["image"]) - 1
    if t == 0:
        return None, True
    device = agent.device
    images = torch.from_numpy(window["image"][:t])[None].to(device)
    actions = torch.from_numpy(window["action"][: t + 1])[None].to(device)
    is_first = torch.zeros(1, t, dtype=torch.bool, device=device)
    is_first[0, 0] = True
    posterior = last_step(agent.world_model.observe(images, actions[:, :t], is_first))
    return {"carry": (posterior, actions[:, t]), "plan": None}, False


def model_action(action: Any, space: gym.Space) -> np.ndarray:
    """An env action -> the model's action vector (A,) float32: one-hot for discrete spaces."""
    if envs.is_discrete(space):
        vector = np.zeros(int(space.n), np.float32)
        vector[int(action)] = 1.0
        return vector
    return np.asarray(action, np.float32).reshape(-1)


def run_policy(
    env: gym.Env, obs: np.ndarray, budget: int, agent: Any = None, state: Any = None, is_first: bool = False
) -> tuple[list[np.ndarray], list[np.ndarray], list[float]]:
    """From frame ``obs``, ``budget`` steps of the agent (or, with ``agent=None``, of uniform random actions)
    -> frames (budget + 1 of (H, W, 3) uint8, fewer if the episode ends), the model actions taken ((A,) each)
    and the seconds of each ``agent.act`` call."""
    discrete = envs.is_discrete(env.action_space)
    frames, actions, seconds = [obs], [], []
    for _ in range(budget):
        if agent is None:
            action = env.action_space.sample()
        else:
            begin = time.perf_counter()
            chosen, state = agent.act(
                torch.from_numpy(np.array(obs)[None]), torch.tensor([is_first]), state, explore=False
            )
            seconds.append(time.perf_counter() - begin)
            chosen = chosen[0].float().cpu().numpy()
            action = int(chosen.argmax()) if discrete else chosen
        obs, _, terminated, truncated, _ = env.step(action)
        frames.append(obs)
        actions.append(model_action(action, env.action_space))
        is_first = False
        if terminated or truncated:
            break
    return frames, actions, seconds


def final_latent_distance(
    model: Any, objective: GoalObjective, window: Episode, frames: list[np.ndarray], actions: list[np.ndarray]
) -> float:
    """The objective's distance between the goal and the features of the executed run filtered with its
    context: frames 0..t-1 of ``window``, then ``frames``; the actions that led to them."""
    t = len(window["image"]) - 1
    images = np.concatenate([window["image"][:t], np.stack(frames)])
    taken = np.concatenate([window["action"][: t + 1], np.stack(actions)]) if actions else window["action"]
    features = goal_features(
        model, torch.from_numpy(images)[None], torch.from_numpy(taken[: len(images)])[None]
    )
    return float(objective.cost(features)[0])


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-pair results of one policy -> its row of the table (module docstring, aggregates)."""
    n = len(runs)
    successes = sum(r["success"] for r in runs)
    final = np.array([r["final_rmse"] for r in runs])
    seconds = [s for r in runs for s in r["seconds"]]
    low, high = wilson_interval(successes, n)
    return {
        "pairs": n,
        "successes": successes,
        "success_rate": successes / n,
        "success_ci95": [low, high],
        "closer": float(
            np.mean([r["final_rmse"] < r["start_rmse"] for r in runs])
        ),  # ended nearer than it began
        "final_rmse": float(final.mean()),
        "final_rmse_se": float(final.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0,
        "start_rmse": float(np.mean([r["start_rmse"] for r in runs])),
        "final_latent": float(np.mean([r["final_latent"] for r in runs])),
        "ms_per_action": 1000.0 * float(np.mean(seconds)) if seconds else None,
    }


def policy_name(agent: Any) -> str:
    """The agent's row name: its planner (cem, mppi, ...) for a PlaNet agent, else its class."""
    hparams = getattr(agent, "hparams", {}) or {}
    return str(hparams.get("planner") or type(agent).__name__)


@torch.no_grad()
def evaluate_goals(
    agent: Any,
    store_path: str | Path,
    pairs: int = 20,
    offset: int = 10,
    budget: int | None = None,
    seed: int = 0,
    baseline: str = "random",
    env_spec: str | None = None,
    action_repeat: int | None = None,
    distance: str = "l2",
    steps: str = "all",
    progress: bool = False,
    source: str | Path | None = None,
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The goal protocol of the module docstring -> (report, videos). ``agent``: a PlaNet agent (its planner's
    objective is replaced per pair); ``budget`` (None: ``offset``) steps per pair; ``baseline`` "random" also
    runs uniform random actions from the same starts (row ``RANDOM_ROW``). The report holds the settings,
    ``rows`` (policy -> ``summarize``) and ``pairs`` (per pair and policy: start/final RMSE, success, final
    latent distance, seconds per act); the videos are the agent's runs, each frame beside the goal frame
    (T, H, 2W, 3) uint8. ``source`` (the checkpoint) is named in errors."""
    from tqdm import tqdm

    from agents.evaluate import check_compatible
    from agents.planet import PlaNetAgent

    if not isinstance(agent, PlaNetAgent):
        raise ConfigError(
            f"--objective goal:STORE plans toward goals, which needs a planning agent: a world-model checkpoint "
            f"or a PlaNet agent, not a {type(agent).__name__}"
        )
    if baseline not in BASELINES:
        raise ConfigError(f"--baseline {baseline!r}: use one of {list(BASELINES)}")
    if pairs < 1:
        raise ConfigError(f"--episodes {pairs}: the goal protocol needs at least one start/goal pair")
    budget = offset if budget is None else budget
    if budget < 1:
        raise ConfigError(f"--goal_budget {budget}: the agent needs at least one step to reach a goal")
    store = EpisodeStore(store_path)
    env, spec = make_env(store, env_spec, action_repeat)
    check_compatible(agent, env, source)
    model, name = agent.world_model, policy_name(agent)
    policies = [name] + ([RANDOM_ROW] if baseline == "random" else [])
    drawn = draw_pairs(store, pairs, offset, seed)
    results: list[dict[str, Any]] = []
    videos: list[np.ndarray] = []
    bar = tqdm(drawn, desc=f"goals {name}", unit="pair", disable=not progress)
    for i, pair in enumerate(bar):
        where = f"{store.paths[pair.episode]}"
        episode = store.episode(pair.episode)
        context = store.read(pair.episode, 0, pair.goal + 1)  # frames 0..goal, actions one-hot if discrete
        window = {k: v[: pair.start + 1] for k, v in context.items()}
        goal_frame = episode["image"][pair.goal]
        torch.manual_seed(seed + i)  # the goal's filter samples: the same goal in every evaluation
        goal = goal_features(
            model, torch.from_numpy(context["image"])[None], torch.from_numpy(context["action"])[None]
        )
        objective = GoalObjective(goal, distance, steps, name=f"goal:{where}@{pair.goal}")
        agent.planner.objective = objective
        result: dict[str, Any] = {**asdict(pair), "episode_file": where}
        for policy in policies:
            # its filter and planner samples: each run the same in every evaluation
            torch.manual_seed(seed + i)
            obs = replay_start(env, episode, pair.start, where)
            if policy == RANDOM_ROW:
                env.action_space.seed(seed + i)
                frames, actions, seconds = run_policy(env, obs, budget)
            else:
                state, is_first = context_state(agent, window)
                frames, actions, seconds = run_policy(env, obs, budget, agent, state, is_first)
                videos.append(np.stack([np.concatenate([f, goal_frame], 1) for f in frames]))
            start_rmse = float(pixel_rmse(obs, goal_frame))
            final_rmse = float(pixel_rmse(frames[-1], goal_frame))
            result[policy] = {
                "start_rmse": start_rmse,
                "final_rmse": final_rmse,
                "success": bool(final_rmse <= SUCCESS_FRACTION * start_rmse),
                "final_latent": final_latent_distance(model, objective, window, frames, actions),
                "steps": len(actions),
                "seconds": seconds,
            }
        results.append(result)
        done = [r[name]["success"] for r in results]
        bar.set_postfix(success=f"{np.mean(done):.2f}", rmse=f"{result[name]['final_rmse']:.3f}")
    env.close()
    report = {
        "env": spec,
        "store": str(store_path),
        "pairs_drawn": pairs,
        "goal_offset": offset,
        "budget": budget,
        "seed": seed,
        "distance": distance,
        "goal_steps": steps,
        "success": f"final pixel RMSE <= {SUCCESS_FRACTION} x start pixel RMSE (to the goal frame)",
        "planner": name,
        "planner_options": dict(agent.hparams.get("planner_options") or {}),
        "rows": {p: summarize([r[p] for r in results]) for p in policies},
        "pairs": results,
    }
    return report, videos


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table: one row per policy."""
    lines = [
        f"goal reaching on {report['env']}: {report['pairs_drawn']} start/goal pairs from {report['store']}, goal "
        f"{report['goal_offset']} steps ahead, {report['budget']} steps to reach it; success = {report['success']}",
        f"{'policy':<14} {'success':>7}  {'95% CI':<14} {'closer':>6}  {'final RMSE':<17} {'start RMSE':>10} "
        f"{'final latent':>12} {'ms/action':>9}",
    ]
    for policy, row in report["rows"].items():
        low, high = row["success_ci95"]
        ms = "-" if row["ms_per_action"] is None else f"{row['ms_per_action']:.1f}"
        lines.append(
            f"{policy:<14} {row['success_rate']:>7.2f}  [{low:.2f}, {high:.2f}]   {row['closer']:>6.2f}  "
            f"{row['final_rmse']:.4f} +- {row['final_rmse_se']:.4f}  {row['start_rmse']:>10.4f} "
            f"{row['final_latent']:>12.4f} {ms:>9}"
        )
    return "\n".join(lines)
