"""Latent planners on a toy model whose optimal actions are known: a point that moves by 0.3 * action."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from agents.planners import (
    CEMPlanner,
    LatentEnsemble,
    MPPIPlanner,
    RandomShooting,
    imagine_returns,
    shift_plan,
)
from worldmodels.errors import ConfigError
from worldmodels.interface import State

STEP = 0.3
MOVES = torch.tensor([[-1.0], [0.0], [1.0]])  # discrete actions: left, stay, right on a line


class PointModel:
    """state {"x": (B, D), "t": (B,)}; imagine: x' = x + 0.3 * a (one-hot left / stay / right if discrete);
    reward -||x' - goal||^2 (0 without a goal); cont 1, or 0 from step ``stop`` on; features x."""

    image_size = 16

    def __init__(
        self, dim: int = 2, discrete: bool = False, goal: float | None = 0.0, stop: int | None = None
    ):
        self.discrete, self.goal, self.stop = discrete, goal, stop
        self.feature_dim = dim
        self.action_dim = 3 if discrete else dim

    def start(self, x: list[list[float]]) -> State:
        x = torch.tensor(x)
        return {"x": x, "t": torch.zeros(len(x))}

    def imagine(self, state: State, action: torch.Tensor) -> State:
        move = action @ MOVES if self.discrete else action
        return {"x": state["x"] + STEP * move, "t": state["t"] + 1}

    def features(self, state: State) -> torch.Tensor:
        return state["x"]

    def reward(self, state: State) -> torch.Tensor:
        if self.goal is None:
            return torch.zeros(state["x"].shape[:-1])
        return -(state["x"] - self.goal).square().sum(-1)

    def cont(self, state: State) -> torch.Tensor:
        if self.stop is None:
            return torch.ones(state["t"].shape)
        return (state["t"] < self.stop).float()

    def reward_from_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.reward({"x": features})

    def cont_from_features(self, features: torch.Tensor) -> torch.Tensor:
        return torch.ones(features.shape[:-1])  # features do not hold the step count: no cut-off


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# three environments far from the goal at 0 (12 steps of 0.3 cannot overshoot): the best first action
# saturates towards the goal in every far coordinate, and is 0 in a coordinate already at the goal
STARTS = [[3.0, 0.0], [0.0, -3.0], [-2.5, 2.5]]
OPTIMAL = torch.tensor([[-1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
CORNERS = [[3.0, 3.0], [-3.0, 2.5], [2.5, -3.0]]  # every coordinate far: the best first action is a corner
CORNER_OPTIMAL = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])

SMALL = dict(horizon=12, candidates=500, iterations=8)


def assert_near(
    action: torch.Tensor, optimal: torch.Tensor, min_cosine: float, min_norm_share: float
) -> None:
    assert action.shape == optimal.shape
    assert action.abs().max() <= 1.0
    cosine = F.cosine_similarity(action, optimal, dim=-1)
    assert (cosine > min_cosine).all(), cosine
    share = action.norm(dim=-1) / optimal.norm(dim=-1)
    assert (share > min_norm_share).all(), share


def test_cem_planet_defaults_find_the_optimal_first_action_per_env():
    planner = CEMPlanner()
    assert (planner.horizon, planner.candidates, planner.iterations, planner.top_k) == (12, 1000, 10, 100)
    model = PointModel()
    action, plan = planner(model, model.start(STARTS), generator=gen())
    assert plan.shape == (3, 12, 2)
    assert torch.equal(action, plan[:, 0])
    assert_near(action, OPTIMAL, 0.95, 0.9)


@pytest.mark.parametrize(
    "planner, min_cosine, min_share",
    [
        (CEMPlanner(**SMALL, top_k=50), 0.95, 0.9),
        (MPPIPlanner(**SMALL), 0.95, 0.9),
        # one shot at 12 steps leaves the first action nearly random; 3 steps show the search works
        (RandomShooting(horizon=3, candidates=1000), 0.8, 0.25),
    ],
    ids=["cem", "mppi", "random"],
)
def test_planners_move_each_env_towards_its_goal(planner, min_cosine, min_share):
    model = PointModel()
    action, plan = planner(model, model.start(CORNERS), generator=gen())
    assert plan.shape == (3, planner.horizon, 2)
    assert torch.equal(action, plan[:, 0])
    assert_near(action, CORNER_OPTIMAL, min_cosine, min_share)


@pytest.mark.parametrize(
    "planner",
    [CEMPlanner(**SMALL, top_k=50), MPPIPlanner(**SMALL), RandomShooting(horizon=3, candidates=300)],
    ids=["cem", "mppi", "random"],
)
def test_discrete_actions_step_towards_the_goal(planner):
    model = PointModel(dim=1, discrete=True)
    action, plan = planner(model, model.start([[2.0], [-2.0], [0.0]]), generator=gen())
    assert plan.shape == (3, planner.horizon, 3)
    assert torch.equal(plan.sum(-1), torch.ones(3, planner.horizon))  # one-hot sequences
    assert action.argmax(-1).tolist() == [0, 2, 1]  # left, right, stay


def test_same_generator_seed_gives_the_same_plan():
    model = PointModel()
    planner = MPPIPlanner(horizon=5, candidates=50, iterations=2)
    first = planner(model, model.start(STARTS), generator=gen(3))[1]
    second = planner(model, model.start(STARTS), generator=gen(3))[1]
    third = planner(model, model.start(STARTS), generator=gen(4))[1]
    assert torch.equal(first, second)
    assert not torch.equal(first, third)


def test_shift_plan_drops_the_executed_step_and_appends_zeros():
    plan = torch.arange(12.0).reshape(1, 3, 4)
    shifted = shift_plan(plan)
    assert torch.equal(shifted[:, :2], plan[:, 1:])
    assert torch.equal(shifted[:, 2], torch.zeros(1, 4))


def flat_planner(planner_cls, candidates: int, **options) -> object:
    """A planner whose refit keeps the average of all candidates (top_k = J, or equal MPPI weights when
    every return ties): its plan is then the mean it started from, up to sampling noise."""
    if planner_cls is CEMPlanner:
        return CEMPlanner(horizon=6, candidates=candidates, iterations=1, top_k=candidates, **options)
    if planner_cls is MPPIPlanner:
        return MPPIPlanner(horizon=6, candidates=candidates, iterations=1, **options)
    return RandomShooting(horizon=6, candidates=candidates, **options)  # ties: argmax keeps candidate 0


@pytest.mark.parametrize("planner_cls", [CEMPlanner, MPPIPlanner, RandomShooting])
def test_warm_start_shifts_the_previous_plan(planner_cls):
    model = PointModel(dim=1, goal=None)  # flat rewards: only the starting mean shapes the plan
    state = model.start([[0.0], [0.0]])
    prev = 0.8 * torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0, -1.0])  # (H,) per step
    prev = torch.stack([prev, -prev])[..., None]  # (N=2, H=6, A=1), opposite in the two envs
    plan = flat_planner(planner_cls, 4000, warm_start=True)(model, state, prev_plan=prev, generator=gen())[1]
    if planner_cls is RandomShooting:
        assert torch.equal(plan[:, :-1], prev[:, 1:])
    else:
        assert torch.equal(torch.sign(plan[:, :-1]), torch.sign(prev[:, 1:]))
        assert plan[:, :-1].abs().min() > 0.2
        assert plan[:, -1].abs().max() < 0.1  # the appended step starts at zero
    cold = flat_planner(planner_cls, 4000)(model, state, prev_plan=prev, generator=gen())[1]
    if planner_cls is not RandomShooting:
        assert cold.abs().max() < 0.1  # prev_plan is ignored without warm_start


@pytest.mark.parametrize("planner_cls", [CEMPlanner, MPPIPlanner, RandomShooting])
def test_discrete_warm_start_shifts_the_previous_plan(planner_cls):
    model = PointModel(dim=1, discrete=True, goal=None)
    prev = F.one_hot(torch.tensor([[0, 2, 1, 0, 2, 2], [2, 1, 1, 0, 0, 2]]), 3).float()  # (N, H, 3)
    planner = flat_planner(planner_cls, 2000, warm_start=True)
    plan = planner(model, model.start([[0.0], [0.0]]), prev_plan=prev, generator=gen())[1]
    assert torch.equal(plan[:, :-1].argmax(-1), prev[:, 1:].argmax(-1))


@pytest.mark.parametrize("planner_cls", [CEMPlanner, MPPIPlanner, RandomShooting])
def test_warm_start_from_a_good_plan_beats_a_cold_start_on_a_small_budget(planner_cls):
    model = PointModel()
    state = model.start(CORNERS)
    good = CORNER_OPTIMAL[:, None].expand(3, 12, 2).clone()
    options = dict(horizon=12, candidates=8)
    if planner_cls is not RandomShooting:
        options["iterations"] = 1
    if planner_cls is CEMPlanner:
        options["top_k"] = 2
    warm = planner_cls(**options, warm_start=True)(model, state, prev_plan=good, generator=gen())[0]
    cold = planner_cls(**options)(model, state, generator=gen())[0]
    assert (warm - CORNER_OPTIMAL).norm(dim=-1).mean() < (cold - CORNER_OPTIMAL).norm(dim=-1).mean()


@pytest.mark.parametrize("planner_cls", [CEMPlanner, MPPIPlanner])
def test_terminal_value_steers_the_plan_when_rewards_are_flat(planner_cls):
    model = PointModel(goal=None)
    planner = planner_cls(**SMALL, value_fn=lambda features: features[:, 1])  # V(s_H) = x[1]: go up
    action, _ = planner(model, model.start(STARTS), generator=gen())
    assert (action[:, 1] > 0.8).all(), action  # x[0] does not matter: no check


def test_returns_stop_accumulating_once_cont_is_zero():
    model = PointModel(dim=1, goal=None, stop=3)
    model.reward = lambda state: state["x"][:, 0]  # reward = position
    state = model.start([[1.0], [1.0]])
    actions = torch.ones(2, 6, 1)
    returns = imagine_returns(model, state, actions, discount=1.0)
    # positions 1.3, 1.6, 1.9 count (cont(s_3) = 0 cuts off s_4 on); 2.2, 2.5, 2.8 do not
    torch.testing.assert_close(returns, torch.full((2,), 1.3 + 1.6 + 1.9))
    value = imagine_returns(model, state, actions, discount=1.0, value_fn=lambda f: f[:, 0])
    torch.testing.assert_close(value, returns)  # the terminal value is cut off too
    discounted = imagine_returns(
        PointModel(dim=1, goal=None), state, actions, 0.5, value_fn=lambda f: f[:, 0]
    )
    torch.testing.assert_close(discounted, torch.full((2,), 0.5**6 * 2.8))


def test_cont_cutoff_changes_the_best_plan():
    # reward -x for the first 2 steps, +10 x afterwards: worth going right unless the episode ends at step 2
    def reward(state):
        return state["x"][:, 0] * torch.where(state["t"] <= 2, -1.0, 10.0)

    actions = {}
    for stop in (None, 2):
        model = PointModel(dim=1, goal=None, stop=stop)
        model.reward = reward
        planner = CEMPlanner(horizon=6, candidates=200, iterations=4, top_k=20, discount=1.0)
        actions[stop] = planner(model, model.start([[0.0]]), generator=gen())[0]
    assert actions[None].item() > 0.9
    assert actions[2].item() < -0.9


def trained_ensemble() -> LatentEnsemble:
    """An ensemble trained on moves of the point model inside x[0] in [-6, 0], x[1] in [-4, 4]."""
    torch.manual_seed(0)
    ensemble = LatentEnsemble(feature_dim=2, action_dim=2, heads=5, hidden=64)
    optimizer = torch.optim.Adam(ensemble.parameters(), lr=1e-2)
    for _ in range(150):
        start = torch.rand(32, 1, 2) * torch.tensor([4.0, 8.0]) - torch.tensor([5.0, 4.0])
        actions = torch.rand(32, 4, 2) * 2 - 1
        features = start + STEP * torch.cumsum(actions, 1)  # features[:, t] follow actions[:, t]
        optimizer.zero_grad()
        ensemble.loss(features, actions, generator=gen(1)).backward()
        optimizer.step()
    return ensemble


@pytest.fixture(scope="module")
def ensemble() -> LatentEnsemble:
    return trained_ensemble()


def test_ensemble_disagrees_more_off_distribution(ensemble):
    action = torch.zeros(100, 2)
    inside = torch.rand(100, 2) * torch.tensor([4.0, 6.0]) - torch.tensor([5.0, 3.0])
    outside = torch.rand(100, 2) * 2 + torch.tensor([3.0, 0.0])
    with torch.no_grad():
        assert (
            ensemble.disagreement(outside, action).mean() > 10 * ensemble.disagreement(inside, action).mean()
        )


@pytest.mark.parametrize("planner_cls", [CEMPlanner, MPPIPlanner])
def test_ensemble_scale_sign_steers_away_from_or_towards_uncertainty(ensemble, planner_cls):
    model = PointModel(goal=None)  # flat rewards: only the ensemble term decides
    state = model.start([[0.0, 0.0]])  # the data lies to the left (x[0] <= 0)
    moves = {}
    for scale in (-10.0, 10.0):  # disagreement is ~0.001 to 0.2 here: scale it to matter under MPPI's gamma
        planner = planner_cls(**SMALL, ensemble=ensemble, ensemble_scale=scale)
        moves[scale] = planner(model, state, generator=gen())[0][0, 0]
    assert moves[10.0] > 0.8  # exploration bonus: into the unknown region
    assert moves[-10.0] < -0.3  # penalty: back into the data


def test_ensemble_loss_trains_heads_only_on_detached_features():
    ensemble = LatentEnsemble(feature_dim=3, action_dim=2, heads=4, hidden=8)
    features = torch.randn(2, 5, 3, requires_grad=True)
    loss = ensemble.loss(features, torch.randn(2, 5, 2), generator=gen())
    loss.backward()
    assert features.grad is None
    assert all(p.grad is not None for p in ensemble.parameters())
    # each head sees its own bootstrap resample, so identical heads get different gradients
    with torch.no_grad():
        for p in ensemble.parameters():
            p.copy_(p[:1].expand_as(p))
    ensemble.zero_grad()
    ensemble.loss(features, torch.randn(2, 5, 2), generator=gen()).backward()
    grad = ensemble.net[0].weight.grad
    assert not torch.allclose(grad[0], grad[1])


def test_bad_options_and_plans_raise_config_errors():
    with pytest.raises(ConfigError, match="top_k"):
        CEMPlanner(candidates=10, top_k=20)
    with pytest.raises(ConfigError, match="beta"):
        MPPIPlanner(beta=0.0)
    with pytest.raises(ConfigError, match="ensemble_scale"):
        RandomShooting(ensemble_scale=1.0)
    model = PointModel()
    with pytest.raises(ConfigError, match="prev_plan"):
        CEMPlanner(horizon=4, candidates=10, top_k=2, warm_start=True)(
            model, model.start(STARTS), prev_plan=torch.zeros(3, 5, 2)
        )
    with pytest.raises(ConfigError, match="LatentEnsemble"):
        ensemble = LatentEnsemble(feature_dim=7, action_dim=2)
        CEMPlanner(ensemble=ensemble, ensemble_scale=1.0)(model, model.start(STARTS))


def test_cem_plans_inside_an_rssm():
    from worldmodels.rssm import RSSM

    torch.manual_seed(0)
    model = RSSM(preset="planet", action_dim=2, image_size=16, deter=16, stoch=4, hidden=16, cnn_depth=4)
    state = model.initial(3)
    action, plan = CEMPlanner(horizon=4, candidates=20, iterations=2, top_k=5, warm_start=True)(
        model, state, prev_plan=torch.zeros(3, 4, 2), generator=gen()
    )
    assert action.shape == (3, 2) and plan.shape == (3, 4, 2)
    assert action.abs().max() <= 1.0 and torch.isfinite(plan).all()


@pytest.mark.slow
def test_compiled_scan_plans_like_the_eager_one():
    model = PointModel()
    options = dict(horizon=6, candidates=50, iterations=3, top_k=10)
    eager = CEMPlanner(**options)(model, model.start(CORNERS), generator=gen())[1]
    compiled = CEMPlanner(**options, compile=True)(model, model.start(CORNERS), generator=gen())[1]
    torch.testing.assert_close(compiled, eager)
