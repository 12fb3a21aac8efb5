"""Objectives (reward, goal, user function), the gradient and hybrid planners and PETS trajectory sampling, on
the point model of tests/test_planners.py whose optimal actions are known (x' = x + 0.3 a)."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from agents.objectives import (
    FunctionObjective,
    GoalObjective,
    RewardObjective,
    Rollout,
    discounted_sum,
    goal_features,
    make_objective,
    rollout,
)
from agents.planners import (
    CEMPlanner,
    GradientPlanner,
    HybridPlanner,
    LatentEnsemble,
    MPPIPlanner,
    imagine_returns,
)
from tests.test_planners import (
    CORNER_OPTIMAL,
    CORNERS,
    STEP,
    PointModel,
    assert_near,
    gen,
)
from worldmodels.errors import ConfigError

SMALL = dict(horizon=12, candidates=300, iterations=6)
GOALS = torch.tensor([[2.0, 2.0], [-2.0, 0.0], [0.0, -2.0]])  # one goal per env, all starting at the origin
TOWARDS = torch.tensor([[1.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])  # the best first action for each


def planners() -> list:
    return [
        CEMPlanner(**SMALL, top_k=30),
        MPPIPlanner(**SMALL),
        GradientPlanner(horizon=12),
        HybridPlanner(horizon=12, candidates=200, iterations=3, top_k=20),
    ]


IDS = ["cem", "mppi", "gradient", "hybrid"]


def hand_rollout(features: list[list[float]]) -> Rollout:
    """A one-candidate rollout whose 1-dim features are given: start, then the imagined steps."""
    x = torch.tensor(features)[None, :, None]  # (1, H+1, 1)
    return Rollout(PointModel(dim=1, goal=None), torch.zeros(1, x.shape[1] - 1, 1), features=x)


def test_goal_cost_is_the_mean_squared_feature_distance_over_steps_or_at_the_last_step():
    trajectory = hand_rollout([0.0, 1.0, 2.0, 4.0])  # imagined 1, 2, 4; goal 2: squared errors 1, 0, 4
    goal = torch.tensor([[2.0]])
    torch.testing.assert_close(GoalObjective(goal)(trajectory), torch.tensor([-5.0 / 3]))
    torch.testing.assert_close(GoalObjective(goal, steps="final")(trajectory), torch.tensor([-4.0]))
    # cosine: features (3, 4) against the goal (4, -3) are orthogonal, so the cost is 1
    two = Rollout(
        PointModel(goal=None), torch.zeros(1, 1, 2), features=torch.tensor([[[0.0, 0.0], [3.0, 4.0]]])
    )
    cosine = GoalObjective(torch.tensor([[4.0, -3.0]]), distance="cosine", steps="final")
    torch.testing.assert_close(cosine(two), torch.tensor([-1.0]))


def test_discounted_sum_stops_counting_after_the_episode_ends():
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    cont = torch.tensor([[1.0, 0.0, 1.0]])  # the episode ends at the second imagined state
    total, weight = discounted_sum(rewards, cont, 0.5)
    torch.testing.assert_close(total, torch.tensor([1.0 + 0.5 * 2.0]))  # step 3 is cut off
    torch.testing.assert_close(weight, torch.tensor([0.0]))  # so is the terminal value


def test_the_reward_objective_is_planets_return():
    model = PointModel()
    state = model.start(CORNERS)
    actions = torch.rand(3, 5, 2, generator=gen()) * 2 - 1
    x = torch.tensor(CORNERS)[:, None] + STEP * actions.cumsum(1)  # (3, 5, 2) imagined positions
    expected = -(x.square().sum(-1)).sum(1)  # reward -||x||^2, discount 1, no cut-off
    torch.testing.assert_close(RewardObjective(1.0)(rollout(model, state, actions)), expected)
    torch.testing.assert_close(imagine_returns(model, state, actions, discount=1.0), expected)


@pytest.mark.parametrize("planner", planners(), ids=IDS)
def test_every_planner_steers_each_env_to_its_own_goal(planner):
    model = PointModel(goal=None)  # no reward at all: only the goal says where to go
    planner.objective = GoalObjective(GOALS)
    action, plan = planner(model, model.start([[0.0, 0.0]] * 3), generator=gen())
    assert plan.shape == (3, 12, 2)
    assert_near(action, TOWARDS, 0.9, 0.7)
    # following the whole plan ends near the goal (2 / 0.3 = 6.7 steps away; 12 steps to get there and stay)
    end = STEP * plan.sum(1)
    assert (end - GOALS).norm(dim=-1).max() < 0.5, end


@pytest.mark.parametrize("planner", planners()[2:], ids=IDS[2:])
def test_gradient_planners_find_the_optimal_first_action_of_the_reward(planner):
    model = PointModel()
    action, plan = planner(model, model.start(CORNERS), generator=gen())
    assert torch.equal(action, plan[:, 0]) and plan.abs().max() <= 1.0  # actions stay in bounds
    assert_near(action, CORNER_OPTIMAL, 0.95, 0.9)


def test_a_user_function_objective_replaces_the_reward_at_test_time():
    model = PointModel()  # its reward pulls to the origin
    planner = CEMPlanner(**SMALL, top_k=30)
    start = model.start([[0.0, 0.0]])
    assert planner(model, start, generator=gen())[0].abs().max() < 0.3  # at the goal already: stay
    planner.objective = FunctionObjective(lambda f: f[..., 0] - f[..., 1])  # new reward: go right and down
    action = planner(model, start, generator=gen())[0]
    assert action[0, 0] > 0.9 and action[0, 1] < -0.9


class DrawingPointModel(PointModel):
    """The point model with a decoder: a 1x4 image whose brightest pixel is where x[0] falls in [-2, 2]."""

    def decode(self, state):
        column = ((state["x"][..., 0] + 2) / 4 * 3).round().clamp(0, 3).long()
        image = torch.zeros(*column.shape, 1, 4, 3, dtype=torch.uint8)
        image[..., 0, :, 0].scatter_(-1, column[..., None], 255)
        return image


def test_a_user_function_may_read_decoded_images_but_gradient_planners_refuse_it():
    def lit_column(features, images):  # the column of the dot the dream shows: 0 (left) .. 3
        return (images[..., 0, :, 0].float() / 255 * torch.arange(4.0)).sum(-1)

    model = DrawingPointModel(goal=None)
    planner = CEMPlanner(horizon=8, candidates=200, iterations=3, top_k=20)  # 5 moves reach the last column
    planner.objective = FunctionObjective(lit_column)
    assert planner(model, model.start([[0.0, 0.0]]), generator=gen())[0][0, 0] > 0.5
    gradient = GradientPlanner(horizon=4, objective=FunctionObjective(lit_column))
    with pytest.raises(ConfigError, match="not differentiable"):
        gradient(model, model.start([[0.0, 0.0]]), generator=gen())


@pytest.mark.parametrize("planner_cls", [GradientPlanner, HybridPlanner])
def test_discrete_gradient_planning_is_relaxed_and_returns_one_hot_plans(planner_cls):
    model = PointModel(dim=1, discrete=True)
    options = dict(candidates=100, iterations=2, top_k=10) if planner_cls is HybridPlanner else {}
    action, plan = planner_cls(horizon=6, **options)(
        model, model.start([[2.0], [-2.0], [0.0]]), generator=gen()
    )
    assert torch.equal(plan.sum(-1), torch.ones(3, 6))  # one-hot sequences
    assert action.argmax(-1).tolist() == [0, 2, 1]  # left, right, stay


def exact_ensemble(steps: list[float]) -> LatentEnsemble:
    """Linear heads x' = x + step_k * a, one per entry of ``steps``: an ensemble whose members are known."""
    ensemble = LatentEnsemble(feature_dim=2, action_dim=2, heads=len(steps), layers=0)
    with torch.no_grad():
        head = ensemble.net[0]
        head.bias.zero_()
        for k, step in enumerate(steps):
            head.weight[k] = torch.cat([torch.eye(2), step * torch.eye(2)])  # (F + A, F)
    return ensemble


def test_trajectory_sampling_with_exact_members_plans_as_the_model_does():
    model = PointModel()
    ensemble = exact_ensemble([STEP, STEP, STEP])
    planner = CEMPlanner(**SMALL, top_k=30, ensemble=ensemble, trajectory_sampling=True)
    action = planner(model, model.start(CORNERS), generator=gen())[0]
    assert_near(action, CORNER_OPTIMAL, 0.95, 0.9)


def test_each_particle_follows_one_member_for_the_whole_horizon():
    model = PointModel(goal=None)
    ensemble = exact_ensemble([0.1, 0.3])
    with torch.no_grad():
        particles = ensemble.rollout(model, torch.zeros(1, 2), torch.ones(1, 4, 2))
    # candidate-major: particle 0 moves 0.1 per step, particle 1 moves 0.3, for all 4 steps
    torch.testing.assert_close(particles.features[:, -1, 0], torch.tensor([0.4, 1.2]))


def test_risk_makes_trajectory_sampling_seek_or_avoid_where_members_disagree():
    model = PointModel(goal=None)
    ensemble = exact_ensemble([STEP, -STEP])  # the members disagree on the sign of every move
    go_right = FunctionObjective(lambda f: f[..., 0], discount=1.0)  # mean return 0 for every plan
    moves = {}
    for risk in (-1.0, 1.0):
        planner = CEMPlanner(
            horizon=5,
            candidates=300,
            iterations=5,
            top_k=30,
            ensemble=ensemble,
            trajectory_sampling=True,
            risk=risk,
        )
        planner.objective = go_right
        moves[risk] = planner(model, model.start([[0.0, 0.0]]), generator=gen())[1][0, :, 0]
    assert moves[1.0].abs().mean() > 0.8  # optimistic: large moves, one member is rewarded a lot
    assert moves[-1.0].abs().mean() < 0.2  # pessimistic: stay, where the members agree
    with pytest.raises(ConfigError, match="trajectory_sampling"):
        CEMPlanner(risk=1.0)


def test_objectives_are_made_from_their_names(tmp_path, monkeypatch):
    model = PointModel()
    assert isinstance(make_objective("reward", model), RewardObjective)
    module = types.ModuleType("my_rewards")
    module.upright = lambda features: features[..., 1]
    monkeypatch.setitem(sys.modules, "my_rewards", module)
    objective = make_objective("my_rewards:upright", model)
    assert isinstance(objective, FunctionObjective) and objective.name == "my_rewards:upright"
    with pytest.raises(ConfigError, match="does not exist"):
        make_objective(f"goal:{tmp_path}/missing.png", model)
    with pytest.raises(ConfigError, match="cannot import"):
        make_objective("no_such_module_here:fn", model)
    with pytest.raises(ConfigError, match="unknown"):
        make_objective("rewards", model)


def tiny_rssm():
    from worldmodels.rssm import RSSM

    torch.manual_seed(0)
    return RSSM(
        preset="planet", action_dim=1, image_size=16, deter=16, stoch=4, hidden=16, cnn_depth=4
    ).eval()


def test_a_goal_image_and_a_store_frame_become_the_models_features(tmp_path):
    import imageio.v3 as iio

    from tests.synthetic import moving_squares
    from worldmodels.store import EpisodeStore

    model = tiny_rssm()
    episode = moving_squares(episodes=1, length=6, size=16, seed=0)[0]
    episode["action"] = episode["action"][:, :1]
    store = EpisodeStore(tmp_path / "store", create=True)
    store.add(episode)
    iio.imwrite(tmp_path / "goal.png", np.kron(episode["image"][3], np.ones((4, 4, 1), np.uint8)))  # 64x64
    torch.manual_seed(1)
    from_store = make_objective(f"goal:{tmp_path / 'store'}@0:3", model)
    torch.manual_seed(1)
    by_hand = goal_features(
        model, torch.from_numpy(episode["image"][None, :4]), torch.from_numpy(episode["action"][None, :4])
    )
    torch.testing.assert_close(from_store.goal, by_hand)
    from_image = make_objective(f"goal:{tmp_path / 'goal.png'}", model, goal_steps="final")
    assert from_image.goal.shape == (1, model.feature_dim) and from_image.steps == "final"
    with pytest.raises(ConfigError, match="frames 0..5"):
        make_objective(f"goal:{tmp_path / 'store'}@0:9", model)


def test_a_planet_agent_swaps_its_objective_at_test_time(tmp_path):
    from agents.planet import PlaNetAgent

    agent = PlaNetAgent(
        tiny_rssm(),
        train_world_model=False,
        planner_options=dict(horizon=3, candidates=20, iterations=2, top_k=4),
    )
    assert isinstance(agent.planner.objective, RewardObjective)
    module = types.ModuleType("left_rewards")
    module.left = lambda features: -features[..., 0]
    sys.modules["left_rewards"] = module
    try:
        agent.set_objective("left_rewards:left")
    finally:
        del sys.modules["left_rewards"]
    assert agent.planner.objective.name == "left_rewards:left"
    action, _ = agent.act(
        torch.zeros(2, 16, 16, 3, dtype=torch.uint8), torch.ones(2, dtype=torch.bool), None, False
    )
    assert action.shape == (2, 1)
