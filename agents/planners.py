"""Latent planners for the PlaNet head on the shared model interface: random shooting, CEM and MPPI (sampling),
gradient ascent through the model, and a hybrid (sampled proposals refined by gradient steps).

A planner optimizes an action sequence of ``horizon`` steps for N environments at once: it repeats the state
(N, ...) to (N*J, ...) for J candidate sequences (environment-major), rolls them forward with ``model.imagine``
and scores them with its ``objective`` (agents/objectives.py: the model's reward, a goal image, a user's
function), which can be swapped at test time (``planner.objective = ...``). Only the horizon and the optimizer
iterations are Python loops; everything else is batched over candidates and environments and stays on the
model's device, with no host syncs.

The default objective is the return of a candidate a_1..a_H from the start state s_0, with s_t =
imagine(s_{t-1}, a_t) (``imagine_returns``):

    R = sum_t discount^(t-1) * c_t * (reward(s_t) + ensemble_scale * disagreement(features(s_{t-1}), a_t))
        + discount^H * c_(H+1) * value_fn(features(s_H))
    c_1 = 1,  c_(t+1) = c_t * cont(s_t)      (reward[t] is earned on the step that led to s_t)

With ``discount=1``, no value function, no ensemble and ``cont = 1`` this is PlaNet's sum of rewards. With
``trajectory_sampling`` a ``LatentEnsemble``'s heads roll each candidate out in feature space instead, one
particle per head (PETS TS-infinity), and the objective is their mean (+ ``risk`` * std).
Continuous actions live in [-1, 1]; discrete ones are one-hot (``model.discrete``), sampled from one
categorical per step (relaxed by straight-through gradients in the gradient planners). Every planner is called as

    action (N, A), plan (N, H, A) = planner(model, state (N, ...), prev_plan (N, H, A) | None, generator)

and ``plan`` (the final mean, or the most likely one-hot sequence) is what ``warm_start`` shifts next step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from agents.objectives import Objective, RewardObjective, Rollout, rollout
from worldmodels.distributions import SAME_DRAWS
from worldmodels.errors import ConfigError
from worldmodels.interface import State, WorldModel

ValueFn = Callable[[Tensor], Tensor]  # features (M, F) -> terminal values (M,)

WARM_MIX = 0.5  # discrete warm start: share of each step's probability kept on the previous plan's action


def tile(state: State, j: int) -> State:
    """state (N, ...) -> (N*J, ...), each environment's state repeated J times (environment-major)."""
    return {k: repeat(v, "n ... -> (n j) ...", j=j) for k, v in state.items()}


def shift_plan(plan: Tensor) -> Tensor:
    """plan (N, H, A) -> the same plan one step later (N, H, A): drop the executed step, append zeros."""
    return torch.cat([plan[:, 1:], torch.zeros_like(plan[:, :1])], 1)


def imagine_returns(
    model: WorldModel,
    state: State,
    actions: Tensor,
    discount: float = 0.99,
    value_fn: ValueFn | None = None,
    ensemble: LatentEnsemble | None = None,
    ensemble_scale: float = 0.0,
) -> Tensor:
    """state (M, ...), actions (M, H, A) -> returns (M,) as in the module docstring (``RewardObjective``)."""
    return RewardObjective(discount, value_fn, ensemble, ensemble_scale)(rollout(model, state, actions))


def _sample_onehot(probs: Tensor, num: int, generator: torch.Generator | None) -> Tensor:
    """probs (N, H, A) -> one-hot sequences (N, J, H, A), each step drawn from its own categorical."""
    index = torch.multinomial(
        rearrange(probs, "n h a -> (n h) a"), num, replacement=True, generator=generator
    )
    index = rearrange(index, "(n h) j -> n j h", n=probs.shape[0])
    return F.one_hot(index, probs.shape[-1]).to(probs.dtype)


def _most_likely(probs: Tensor) -> Tensor:
    """probs (N, H, A) -> the one-hot sequence (N, H, A) of each step's most likely action."""
    return F.one_hot(probs.argmax(-1), probs.shape[-1]).to(probs.dtype)


def _pick(candidates: Tensor, index: Tensor) -> Tensor:
    """candidates (N, J, H, A), index (N, K) -> the chosen candidates (N, K, H, A)."""
    return torch.take_along_dim(candidates, index[:, :, None, None], dim=1)


class _Planner:
    """Options and helpers shared by every planner. A subclass defines ``_optimize(model, states (N*J, ...),
    features (N, F), prev_plan (N, H, A) | None, generator) -> plan (N, H, A)``; ``prev_plan`` arrives only
    with ``warm_start``."""

    horizon = 12  # PlaNet App. A: planning horizon H = 12
    candidates = 1000  # PlaNet App. A: J = 1000 candidate sequences

    def __init__(
        self,
        horizon: int | None = None,
        candidates: int | None = None,
        *,
        warm_start: bool = False,
        value_fn: ValueFn | None = None,
        discount: float = 0.99,
        ensemble: LatentEnsemble | None = None,
        ensemble_scale: float = 0.0,
        objective: Objective | None = None,
        trajectory_sampling: bool = False,
        risk: float = 0.0,
        compile: bool = False,
    ) -> None:
        self.horizon = self.horizon if horizon is None else horizon
        self.candidates = self.candidates if candidates is None else candidates
        self.warm_start, self.value_fn, self.discount = warm_start, value_fn, discount
        self.ensemble, self.ensemble_scale = ensemble, ensemble_scale
        self.trajectory_sampling, self.risk = trajectory_sampling, risk
        name = type(self).__name__
        if self.horizon < 1 or self.candidates < 1:
            raise ConfigError(
                f"{name}(horizon={self.horizon}, candidates={self.candidates}): both must be positive integers"
            )
        if not 0.0 <= discount <= 1.0:
            raise ConfigError(f"{name}(discount={discount}): use a discount in [0, 1]")
        if (ensemble_scale != 0.0 or trajectory_sampling) and ensemble is None:
            what = f"ensemble_scale={ensemble_scale}" if ensemble_scale else "trajectory_sampling=True"
            raise ConfigError(
                f"{name}({what}) without an ensemble: pass ensemble=LatentEnsemble(...) (PlaNetAgent: "
                "ensemble_heads > 0), or leave ensemble_scale at 0 and trajectory_sampling off"
            )
        if risk != 0.0 and not trajectory_sampling:
            raise ConfigError(f"{name}(risk={risk}) needs trajectory_sampling=True (PETS particles)")
        self.objective = objective or RewardObjective(discount, value_fn, ensemble, ensemble_scale)
        self._score = torch.compile(self.score, dynamic=False, options=SAME_DRAWS) if compile else self.score

    @torch.no_grad()
    def __call__(
        self,
        model: WorldModel,
        state: State,
        prev_plan: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """state (N, ...), prev_plan (N, H, A) or None -> first action (N, A), plan (N, H, A).

        ``generator`` (on the model's device) makes the candidate sampling reproducible (a stochastic model
        such as the RSSM prior still draws from torch's global RNG); ``prev_plan`` is used only with
        ``warm_start=True``."""
        features = model.features(state)  # (N, F): batch size, device and dtype of the model
        self._check(model, features, prev_plan)
        states = tile(state, self.candidates)
        plan = self._optimize(model, states, features, prev_plan if self.warm_start else None, generator)
        return plan[:, 0], plan

    def score(self, model: WorldModel, states: State, actions: Tensor) -> Tensor:
        """states (M, ...), actions (M, H, A) -> the objective (M,): of the model's own rollout, or with
        ``trajectory_sampling`` over the ensemble's K particles (PETS TS-infinity, Chua et al. 2018, Sec. 4.2:
        each particle keeps one member for the whole horizon), mean + ``risk`` * std across particles
        (risk > 0 optimistic, < 0 pessimistic, 0 the PETS mean)."""
        if not self.trajectory_sampling:
            return self.objective(rollout(model, states, actions))
        particles = self.ensemble.rollout(model, model.features(states), actions)
        scores = rearrange(self.objective(particles), "(m k) -> m k", k=self.ensemble.heads)
        if self.risk == 0.0:
            return scores.mean(1)
        return scores.mean(1) + self.risk * scores.std(1, correction=0)

    def _evaluate(self, model: WorldModel, states: State, candidates: Tensor) -> Tensor:
        """states (N*J, ...), candidates (N, J, H, A) -> scores (N, J)."""
        actions = rearrange(candidates, "n j h a -> (n j) h a")
        return rearrange(self._score(model, states, actions), "(n j) -> n j", j=candidates.shape[1])

    def _initial(self, model: WorldModel, features: Tensor, prev_plan: Tensor | None) -> Tensor:
        """-> the starting mean (N, H, A): zeros, or the shifted previous plan; for discrete actions the
        per-step probabilities: uniform, or mixed with the shifted previous plan (``WARM_MIX``)."""
        shape = (features.shape[0], self.horizon, model.action_dim)
        mean = torch.zeros(shape, device=features.device, dtype=features.dtype)
        if prev_plan is not None:
            mean = shift_plan(prev_plan.to(mean))
        if not model.discrete:
            return mean
        probs = WARM_MIX * mean + (1.0 - WARM_MIX) / model.action_dim
        return probs / probs.sum(-1, keepdim=True)  # the appended last step becomes uniform

    def _check(self, model: WorldModel, features: Tensor, prev_plan: Tensor | None) -> None:
        name, expected = type(self).__name__, (features.shape[0], self.horizon, model.action_dim)
        if model.action_dim < 1:
            raise ConfigError(f"{name}: the model has action_dim={model.action_dim}; planning needs actions")
        if prev_plan is not None and tuple(prev_plan.shape) != expected:
            raise ConfigError(
                f"{name}: prev_plan has shape {tuple(prev_plan.shape)}, expected (N, H, A) = {expected}: "
                "pass the plan this planner returned on the previous step (or None after a reset)"
            )
        if self.ensemble is not None and (self.ensemble.feature_dim, self.ensemble.action_dim) != (
            model.feature_dim,
            model.action_dim,
        ):
            raise ConfigError(
                f"{name}: LatentEnsemble(feature_dim={self.ensemble.feature_dim}, action_dim="
                f"{self.ensemble.action_dim}) does not match the model ({model.feature_dim}, {model.action_dim})"
            )

    def _gaussian(
        self, mean: Tensor, std: Tensor | float, generator: torch.Generator | None, count: int | None = None
    ) -> Tensor:
        """mean (N, H, A), std (N, H, A) or float -> candidates (N, J, H, A) clipped to [-1, 1]; J = ``count``
        (default ``candidates``)."""
        noise = torch.randn(
            (mean.shape[0], count or self.candidates, *mean.shape[1:]),
            generator=generator,
            device=mean.device,
            dtype=mean.dtype,
        )
        std = std[:, None] if isinstance(std, Tensor) else std
        return (mean[:, None] + std * noise).clamp(-1.0, 1.0)


class RandomShooting(_Planner):
    """Sample J sequences once (uniform in [-1, 1], or uniform one-hot) and keep the best one
    (Nagabandi et al. 2018). With ``warm_start`` the shifted previous plan is one of the candidates."""

    def _optimize(
        self,
        model: WorldModel,
        states: State,
        features: Tensor,
        prev_plan: Tensor | None,
        generator: torch.Generator | None,
    ) -> Tensor:
        n, j, h, a = features.shape[0], self.candidates, self.horizon, model.action_dim
        if model.discrete:
            uniform = torch.full((n, h, a), 1.0 / a, device=features.device, dtype=features.dtype)
            candidates = _sample_onehot(uniform, j, generator)
        else:
            shape = (n, j, h, a)
            candidates = torch.rand(shape, generator=generator, device=features.device, dtype=features.dtype)
            candidates = 2.0 * candidates - 1.0
        if prev_plan is not None:  # candidate 0 continues the previous plan; its last step stays random
            candidates[:, 0, :-1] = prev_plan[:, 1:].to(candidates)
        returns = self._evaluate(model, states, candidates)  # (N, J)
        return _pick(candidates, returns.argmax(1, keepdim=True))[:, 0]


class CEMPlanner(_Planner):
    """Cross-entropy method (PlaNet, Hafner et al. 2019, Sec. 2): sample J sequences from a diagonal Gaussian
    belief (initially N(0, I)), refit its mean and std to the best K, repeat I times, act on the mean.
    Discrete actions: per-step categoricals (initially uniform) refit to the elites' action frequencies."""

    iterations = 10  # PlaNet App. A: I = 10 optimization iterations
    top_k = 100  # PlaNet App. A: refit to the best K = 100

    def __init__(
        self,
        horizon: int | None = None,
        candidates: int | None = None,
        iterations: int | None = None,
        top_k: int | None = None,
        **options: Any,
    ) -> None:
        """``options``: warm_start, objective, discount, value_fn, ensemble, ensemble_scale, trajectory_sampling, risk,
        compile (see ``_Planner``)."""
        super().__init__(horizon, candidates, **options)
        self.iterations = self.iterations if iterations is None else iterations
        self.top_k = self.top_k if top_k is None else top_k
        if self.iterations < 1 or not 1 <= self.top_k <= self.candidates:
            raise ConfigError(
                f"CEMPlanner(iterations={self.iterations}, top_k={self.top_k}, candidates={self.candidates}): "
                "iterations must be >= 1 and 1 <= top_k <= candidates"
            )

    def _optimize(
        self,
        model: WorldModel,
        states: State,
        features: Tensor,
        prev_plan: Tensor | None,
        generator: torch.Generator | None,
    ) -> Tensor:
        mean = self._initial(model, features, prev_plan)  # (N, H, A); probabilities if discrete
        std = torch.ones_like(mean)
        for _ in range(self.iterations):
            if model.discrete:
                candidates = _sample_onehot(mean, self.candidates, generator)
            else:
                candidates = self._gaussian(mean, std, generator)  # (N, J, H, A)
            returns = self._evaluate(model, states, candidates)  # (N, J)
            elites = _pick(candidates, returns.topk(self.top_k, dim=1).indices)  # (N, K, H, A)
            mean, std = elites.mean(1), elites.std(1, correction=0)
        return _most_likely(mean) if model.discrete else mean


class MPPIPlanner(_Planner):
    """Reward-weighted refits as in PDDM (Nagabandi et al. 2019, Sec. 4): each iteration samples J sequences
    around the mean with temporally smoothed noise, u_t = beta * n_t + (1 - beta) * u_(t-1), n_t ~ N(0,
    noise_std^2), and sets the mean to their average weighted by softmax(gamma * returns). Discrete
    actions: per-step categoricals refit to the weighted action frequencies."""

    iterations = 10  # the same budget as CEMPlanner; PDDM refits once per env step
    gamma = 10.0  # PDDM code, config/cube.txt: mppi_kappa 10 (reward-weighting factor)
    beta = 0.6  # PDDM code, config/cube.txt: mppi_beta 0.6 (noise filter coefficient)
    noise_std = 0.9  # PDDM code, config/cube.txt: mppi_mag_noise 0.9

    def __init__(
        self,
        horizon: int | None = None,
        candidates: int | None = None,
        iterations: int | None = None,
        gamma: float | None = None,
        beta: float | None = None,
        noise_std: float | None = None,
        **options: Any,
    ) -> None:
        """``options``: warm_start, objective, discount, value_fn, ensemble, ensemble_scale, trajectory_sampling, risk,
        compile (see ``_Planner``)."""
        super().__init__(horizon, candidates, **options)
        self.iterations = self.iterations if iterations is None else iterations
        self.gamma = self.gamma if gamma is None else gamma
        self.beta = self.beta if beta is None else beta
        self.noise_std = self.noise_std if noise_std is None else noise_std
        if self.iterations < 1 or self.gamma <= 0 or not 0 < self.beta <= 1 or self.noise_std <= 0:
            raise ConfigError(
                f"MPPIPlanner(iterations={self.iterations}, gamma={self.gamma}, beta={self.beta}, "
                f"noise_std={self.noise_std}): need iterations >= 1, gamma > 0, 0 < beta <= 1, noise_std > 0"
            )

    def _smooth_noise(self, mean: Tensor, generator: torch.Generator | None) -> Tensor:
        """mean (N, H, A) -> filtered noise (N, J, H, A): u_t = beta * n_t + (1 - beta) * u_(t-1), u_0 = beta n_0."""
        noise = self.noise_std * torch.randn(
            (mean.shape[0], self.candidates, *mean.shape[1:]),
            generator=generator,
            device=mean.device,
            dtype=mean.dtype,
        )
        steps = [self.beta * noise[:, :, 0]]
        for t in range(1, noise.shape[2]):
            steps.append(self.beta * noise[:, :, t] + (1.0 - self.beta) * steps[-1])
        return torch.stack(steps, 2)

    def _optimize(
        self,
        model: WorldModel,
        states: State,
        features: Tensor,
        prev_plan: Tensor | None,
        generator: torch.Generator | None,
    ) -> Tensor:
        mean = self._initial(model, features, prev_plan)  # (N, H, A); probabilities if discrete
        for _ in range(self.iterations):
            if model.discrete:
                candidates = _sample_onehot(mean, self.candidates, generator)
            else:
                candidates = (mean[:, None] + self._smooth_noise(mean, generator)).clamp(-1.0, 1.0)
            returns = self._evaluate(model, states, candidates)  # (N, J)
            weights = torch.softmax(self.gamma * returns, dim=1)
            mean = torch.einsum("nj,njha->nha", weights, candidates)
        return _most_likely(mean) if model.discrete else mean.clamp(-1.0, 1.0)  # clamp: float rounding


def _straight_through(logits: Tensor) -> Tensor:
    """logits (..., A) -> one-hot of the argmax forward, softmax gradient backward (Bengio et al. 2013)."""
    soft = torch.softmax(logits, -1)
    return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(soft) + soft - soft.detach()


def _logits(onehot_or_probs: Tensor) -> Tensor:
    """per-step probabilities or one-hots (..., A) -> logits that start a relaxed search there (WARM_MIX)."""
    probs = WARM_MIX * onehot_or_probs + (1.0 - WARM_MIX) / onehot_or_probs.shape[-1]
    return probs.log()


class GradientPlanner(_Planner):
    """Action sequences optimized by gradient ascent through the model (the "shooting by backpropagation" of
    Srinivas et al. 2018, Universal Planning Networks; stable-worldmodel's ``GradientSolver``): ``candidates``
    restarts per environment, batched over restarts and environments, each an (H, A) sequence improved by
    ``iterations`` Adam steps on the objective and projected back into [-1, 1] after every step; the best
    restart by a final evaluation is the plan. Restart 0 starts at the initial mean (zeros or the warm-started
    previous plan), the others at that mean plus N(0, ``init_std``) noise.

    Discrete actions are relaxed: each step holds logits, the model sees the straight-through one-hot of their
    argmax and the gradient flows through the softmax. The objective must be differentiable in the actions
    (decoded images are not: plan those with CEM or MPPI)."""

    candidates = 16  # restarts per environment (our choice: 16 restarts x 50 steps = 800 rollouts per plan)
    iterations = 50  # Adam steps (our choice; ms per plan at PlaNet size: docs/benchmarks.md section 4)
    lr = 0.1  # Adam step size in action units (actions live in [-1, 1])
    init_std = 0.5  # restarts spread around the initial mean

    def __init__(
        self,
        horizon: int | None = None,
        candidates: int | None = None,
        iterations: int | None = None,
        lr: float | None = None,
        init_std: float | None = None,
        **options: Any,
    ) -> None:
        """``options``: warm_start, objective, discount, value_fn, ensemble, ... (see ``_Planner``)."""
        super().__init__(horizon, candidates, **options)
        self.iterations = self.iterations if iterations is None else iterations
        self.lr = self.lr if lr is None else lr
        self.init_std = self.init_std if init_std is None else init_std
        if self.iterations < 0 or self.lr <= 0 or self.init_std < 0:
            raise ConfigError(
                f"{type(self).__name__}(iterations={self.iterations}, lr={self.lr}, init_std={self.init_std}): "
                "need iterations >= 0, lr > 0, init_std >= 0"
            )

    def _optimize(
        self,
        model: WorldModel,
        states: State,
        features: Tensor,
        prev_plan: Tensor | None,
        generator: torch.Generator | None,
    ) -> Tensor:
        mean = self._initial(model, features, prev_plan)  # (N, H, A); probabilities if discrete
        start = self._spread(model, mean, self.candidates, generator)
        return self.refine(model, states, start, self.iterations)

    def _spread(
        self, model: WorldModel, center: Tensor, count: int, generator: torch.Generator | None
    ) -> Tensor:
        """center (N, H, A): actions, or probabilities / one-hots if discrete -> ``count`` starting points
        (N, R, H, A) for ``refine``: the center itself, then the center plus N(0, ``init_std``) noise (on the
        logits if discrete; clipped to [-1, 1] if not)."""
        if model.discrete:
            base = _logits(center)[:, None].expand(-1, count, -1, -1)
            noise = torch.randn(base.shape, generator=generator, device=center.device, dtype=center.dtype)
            start = base + self.init_std * noise
        else:
            start = self._gaussian(center, self.init_std, generator, count)
        start[:, 0] = _logits(center) if model.discrete else center
        return start

    def _actions(self, model: WorldModel, params: Tensor) -> Tensor:
        return _straight_through(params) if model.discrete else params

    def refine(self, model: WorldModel, states: State, params: Tensor, steps: int) -> Tensor:
        """states (N*R, ...), params (N, R, H, A): actions in [-1, 1] (logits if discrete) -> the best of the R
        sequences after ``steps`` Adam steps on the objective (N, H, A), one-hot if discrete."""
        params = params.detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([params], lr=self.lr)
        with torch.enable_grad():
            for _ in range(steps):
                score = self._evaluate(model, states, self._actions(model, params))  # (N, R)
                if not score.requires_grad:
                    raise ConfigError(
                        f"{type(self).__name__}: objective {self.objective} is not differentiable in the actions "
                        "(decoded images are not): plan it with cem or mppi"
                    )
                (params.grad,) = torch.autograd.grad(-score.sum(), [params])  # not into the model's weights
                optimizer.step()
                if not model.discrete:
                    params.data.clamp_(-1.0, 1.0)
        params = params.detach()
        actions = _most_likely(params) if model.discrete else params
        final = self._evaluate(model, states, actions)
        return _pick(actions, final.argmax(1, keepdim=True))[:, 0]


class HybridPlanner(GradientPlanner):
    """Sampling proposals refined by gradients: ``proposal`` ("cem" or "mppi") runs ``iterations`` refits of
    ``candidates`` samples; its plan and ``restarts - 1`` samples around it (std ``init_std``) are then refined
    by ``refine_steps`` Adam steps through the model (``GradientPlanner.refine``) and the best one is the plan.
    Defaults split CEM's budget: half of PlaNet's 10 iterations sample, 10 gradient steps refine 8 restarts."""

    candidates = 1000  # PlaNet App. A: J = 1000 candidate sequences per proposal iteration
    iterations = 5  # half of PlaNet's I = 10; the gradient steps spend the rest (our choice)
    restarts = 8
    refine_steps = 10
    init_std = 0.1

    def __init__(
        self,
        horizon: int | None = None,
        candidates: int | None = None,
        iterations: int | None = None,
        proposal: str = "cem",
        top_k: int | None = None,
        restarts: int | None = None,
        refine_steps: int | None = None,
        lr: float | None = None,
        init_std: float | None = None,
        **options: Any,
    ) -> None:
        """``options``: warm_start, objective, discount, value_fn, ensemble, ... (see ``_Planner``)."""
        super().__init__(horizon, candidates, iterations, lr, init_std, **options)
        proposals = {"cem": CEMPlanner, "mppi": MPPIPlanner}
        if proposal not in proposals:
            raise ConfigError(f"HybridPlanner(proposal={proposal!r}): use one of {list(proposals)}")
        extra = {"top_k": top_k} if proposal == "cem" else {}
        self.proposal = proposals[proposal](self.horizon, self.candidates, self.iterations, **extra)
        self.top_k = getattr(self.proposal, "top_k", None)
        self.restarts = self.restarts if restarts is None else restarts
        self.refine_steps = self.refine_steps if refine_steps is None else refine_steps
        if self.restarts < 1 or self.refine_steps < 0:
            raise ConfigError(
                f"HybridPlanner(restarts={self.restarts}, refine_steps={self.refine_steps}): need restarts >= 1 "
                "and refine_steps >= 0"
            )

    def _optimize(
        self,
        model: WorldModel,
        states: State,
        features: Tensor,
        prev_plan: Tensor | None,
        generator: torch.Generator | None,
    ) -> Tensor:
        self.proposal._score = self._score  # the proposal scores with this planner's objective
        plan = self.proposal._optimize(model, states, features, prev_plan, generator)  # (N, H, A)
        start_state = {k: v[:: self.candidates] for k, v in states.items()}  # (N, ...)
        start = self._spread(model, plan, self.restarts, generator)
        return self.refine(model, tile(start_state, self.restarts), start, self.refine_steps)


class _HeadsLinear(nn.Module):
    """K independent linear layers applied at once: x (K, M, I) -> (K, M, O)."""

    def __init__(self, heads: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        bound = in_dim**-0.5  # nn.Linear's default initialization, per head
        self.weight = nn.Parameter(torch.empty(heads, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(heads, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class LatentEnsemble(nn.Module):
    """K one-step MLP heads predicting features_(t+1) from (features_t, action_(t+1)); their disagreement is
    the epistemic uncertainty a planner penalizes (PETS, Chua et al. 2018) or seeks (Plan2Explore, Sekar et
    al. 2020) through ``ensemble_scale``."""

    def __init__(
        self, feature_dim: int, action_dim: int, heads: int = 5, hidden: int = 200, layers: int = 2
    ) -> None:
        super().__init__()
        # heads = 5: PETS (Chua et al. 2018) ensembles B = 5 bootstrapped models
        if min(feature_dim, heads, hidden) < 1 or action_dim < 0 or layers < 0:
            raise ConfigError(
                f"LatentEnsemble(feature_dim={feature_dim}, action_dim={action_dim}, heads={heads}, "
                f"hidden={hidden}, layers={layers}): sizes must be positive (action_dim, layers >= 0)"
            )
        self.feature_dim, self.action_dim, self.heads = feature_dim, action_dim, heads
        dims = [feature_dim + action_dim] + [hidden] * layers + [feature_dim]
        mods: list[nn.Module] = []
        for i in range(len(dims) - 1):
            mods += [_HeadsLinear(heads, dims[i], dims[i + 1]), nn.ELU()]
        self.net = nn.Sequential(*mods[:-1])

    def forward(self, features: Tensor, action: Tensor) -> Tensor:
        """features (M, F), action (M, A) -> each head's predicted next features (K, M, F)."""
        x = torch.cat([features, action.to(features)], -1)
        return self.net(repeat(x, "m i -> k m i", k=self.heads))

    def step(self, features: Tensor, action: Tensor) -> Tensor:
        """Each head on its own input: features (K, M, F), action (M, A) -> next features (K, M, F)."""
        action = repeat(action.to(features), "m a -> k m a", k=self.heads)
        return self.net(torch.cat([features, action], -1))

    def rollout(self, model: WorldModel, features: Tensor, actions: Tensor) -> Rollout:
        """features (M, F), actions (M, H, A) -> the K heads' own rollouts as one ``Rollout`` of M*K
        particles (candidate-major), in feature space: rewards and continuation from the model's heads on the
        predicted features (PETS TS-infinity: particle k follows head k for the whole horizon)."""
        state = repeat(features, "m f -> k m f", k=self.heads)
        steps = [state]
        for t in range(actions.shape[1]):
            state = self.step(state, actions[:, t])
            steps.append(state)
        particles = rearrange(torch.stack(steps, 2), "k m h f -> (m k) h f")
        return Rollout(model, repeat(actions, "m h a -> (m k) h a", k=self.heads), features=particles)

    def disagreement(self, features: Tensor, action: Tensor) -> Tensor:
        """features (M, F), action (M, A) -> variance across heads, averaged over feature dims (M,)."""
        return self(features, action).var(0, correction=0).mean(-1)

    def loss(self, features: Tensor, actions: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """features (B, T, F), actions (B, T, A) -> mean squared error of every head on its own bootstrap
        resample of the B*(T-1) pairs (features_t, action_(t+1)) -> features_(t+1). Inputs and targets are
        detached: training the ensemble leaves the world model alone."""
        features, actions = features.detach(), actions.detach().to(features)
        inputs = rearrange(features[:, :-1], "b t f -> (b t) f")
        pred = self(inputs, rearrange(actions[:, 1:], "b t a -> (b t) a"))  # (K, M, F)
        target = rearrange(features[:, 1:], "b t f -> (b t) f")
        errors = (pred - target).square().mean(-1)  # (K, M)
        m = errors.shape[1]
        draws = torch.randint(m, (self.heads, m), generator=generator, device=errors.device)
        counts = torch.zeros_like(errors).scatter_add_(1, draws, torch.ones_like(errors))  # bootstrap (K, M)
        return (counts * errors).sum(1).div(m).mean()
