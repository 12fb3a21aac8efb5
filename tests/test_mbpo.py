from unittest.mock import PropertyMock, patch

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from agents.evaluate import evaluate, load_agent
from agents.mbpo import MBPOAgent
from tests.cli import run_cli

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log()`")
STOP = 3  # the counter model predicts the episode ends once its step counter reaches 3


class Counter(nn.Module):
    """A hand-written world model: the state x (..., 2) is (position, step counter). Filtering reads them off the
    first pixel of each frame (red: position, green: counter); a dream step moves the position by the action and
    counts one step; the reward is the position, and P(continue) drops to 0 once the counter reaches ``STOP``."""

    feature_dim, action_dim, discrete, image_size = 2, 1, False, 4
    grad_clip, grad_clip_algorithm = None, "norm"
    hparams: dict = {}

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))

    def initial(self, batch_size: int) -> dict[str, Tensor]:
        return {"x": torch.zeros(batch_size, 2)}

    def observe(self, images, actions, is_first, state=None):
        return {"x": images[..., 0, 0, :2].float()}

    def imagine(self, state, action):
        return {"x": torch.stack([state["x"][..., 0] + action[..., 0], state["x"][..., 1] + 1], -1)}

    def features(self, state):
        return state["x"]

    def reward_from_features(self, features):
        return features[..., 0]

    def cont_from_features(self, features):
        return (features[..., 1] < STOP).float()

    def reward(self, state):
        return self.reward_from_features(state["x"])

    def cont(self, state):
        return self.cont_from_features(state["x"])

    def decode(self, state):
        raise NotImplementedError

    def loss(self, batch):
        raise NotImplementedError

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters())


def counter_batch(batch: int = 2, length: int = 6) -> dict[str, Tensor]:
    """A replay window whose frames encode (position, counter) = (10 b + t, t) in their first pixel."""
    image = torch.zeros(batch, length, 4, 4, 3, dtype=torch.uint8)
    steps = torch.arange(length)
    for b in range(batch):
        image[b, :, 0, 0, 0] = 10 * b + steps
        image[b, :, 0, 0, 1] = steps
    flags = torch.zeros(batch, length, dtype=torch.bool)
    is_first = flags.clone()
    is_first[:, 0] = True
    return dict(
        image=image,
        action=torch.rand(batch, length, 1) * 2 - 1,
        reward=torch.rand(batch, length),
        is_first=is_first,
        is_terminal=flags,
    )


def counter_agent(**options) -> MBPOAgent:
    options = dict(dict(hidden=16, layers=1, learner_batch=64, updates_per_step=1), **options)
    return MBPOAgent(Counter(), train_world_model=False, **options)


def test_branches_start_at_replay_states_and_stop_at_predicted_terminations():
    torch.manual_seed(0)
    agent = counter_agent(rollout_length=5)
    batch = counter_batch()
    starts = []
    branch = agent.branch
    agent.branch = lambda start, cont, k: (starts.append(start["x"]), branch(start, cont, k))[1]
    agent.training_step(batch)
    # every posterior state of the window is a branch's start
    assert torch.equal(starts[0], batch["image"][..., 0, 0, :2].float().reshape(-1, 2))

    start = {"x": torch.tensor([[0.0, 0.0], [5.0, 1.0], [7.0, 2.0], [9.0, 5.0], [4.0, 0.0]])}
    start_cont = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])  # the last replay state is a real terminal
    out, stats = agent.branch(start, start_cont, 5)
    # counters 0, 1, 2 reach STOP after 3, 2, 1 steps; counter 5 is past it: its first step already ends
    # it; a terminal start makes no branch. Step-major order: the 4 first steps, then 2 second ones, then 1.
    assert len(out["reward"]) == 3 + 2 + 1 + 1
    assert torch.equal(out["features"][:4], start["x"][:4])  # each branch's first state is its replay state
    assert torch.equal(out["next"][:4, 1], torch.tensor([1.0, 2.0, 3.0, 6.0]))
    assert torch.equal(out["cont"], torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]))
    assert torch.equal(out["features"][4:6], out["next"][:2])  # a branch goes on from where it got to
    assert torch.equal(out["features"][6], out["next"][4])
    assert torch.allclose(out["next"][:, 0], out["features"][:, 0] + out["action"][:, 0])  # the model's step
    assert torch.equal(out["reward"], out["next"][:, 0])  # the model's reward of the state reached
    assert stats["rollout/steps"] == pytest.approx(7 / 4) and stats["rollout/stopped"] == 1.0


@pytest.mark.parametrize("real_ratio, real", [(0.05, 3), (0.25, 16), (0.5, 32)])
def test_learner_batches_mix_real_and_model_data_at_the_recipe_ratio(real_ratio, real):
    torch.manual_seed(0)
    agent = counter_agent(rollout_length=2, real_ratio=real_ratio, learner_batch=64)
    pool = {"features": torch.zeros(40, 2), "action": torch.zeros(40, 1), "cont": torch.ones(40)}
    mixed, n_model = agent.mix(
        dict(pool, reward=torch.ones(40), next=torch.zeros(40, 2)),
        dict(pool, reward=-torch.ones(40), next=torch.zeros(40, 2)),
    )
    assert len(mixed["reward"]) == 64 and n_model == 64 - real
    assert int((mixed["reward"] == 1).sum()) == real  # counted: real transitions carry reward 1
    batches = []
    learner_step = agent.learner_step
    agent.learner_step = lambda b, *a, **k: (batches.append(b), learner_step(b, *a, **k))[1]
    batch = counter_batch()
    agent.training_step(batch)
    assert agent.last_metrics["train/model_share"] == pytest.approx((64 - real) / 64)
    # counted in the learner's batch: rows that are transitions of the window (model ones take the policy's
    # actions and the model's rewards, so they match none)
    assert (
        count_real(batches[0], agent.real_transitions(batch["image"][..., 0, 0, :2].float(), batch)) == real
    )


def test_rollout_length_zero_learns_from_real_transitions_only():
    torch.manual_seed(0)
    agent = counter_agent(rollout_length=0, real_ratio=0.05, updates_per_step=3)
    agent.branch = None  # would fail if called
    batches = []
    learner_step = agent.learner_step
    agent.learner_step = lambda b, *a, **k: (batches.append(b), learner_step(b, *a, **k))[1]
    batch = counter_batch()
    agent.training_step(batch)
    assert len(batches) == 3 and agent.last_metrics["train/model_share"] == 0
    real = agent.real_transitions(batch["image"][..., 0, 0, :2].float(), batch)
    assert len(real["reward"]) == 2 * 5  # B (T - 1): no transition into an episode's first step
    assert all(count_real(mixed, real) == 64 for mixed in batches)  # every transition is one of the window's


def count_real(mixed: dict[str, Tensor], real: dict[str, Tensor]) -> int:
    """How many transitions of ``mixed`` are rows of ``real`` (features, action, reward, next all equal)."""
    keys = ("features", "action", "reward", "next")
    rows = torch.cat([mixed[k].reshape(len(mixed["reward"]), -1) for k in keys], 1)
    pool = torch.cat([real[k].reshape(len(real["reward"]), -1) for k in keys], 1)
    return sum(bool((pool == row).all(1).any()) for row in rows)


def bandit(discrete: bool, size: int = 256) -> dict[str, Tensor]:
    """One-step episodes (cont 0): reward -(a - 0.5)^2 for continuous actions, 1 for action 2 of 3 else 0."""
    features = torch.randn(size, 2)
    if discrete:
        index = torch.randint(3, (size,))
        action, reward = nn.functional.one_hot(index, 3).float(), (index == 2).float()
    else:
        action = torch.rand(size, 1) * 2 - 1
        reward = -(action[:, 0] - 0.5).square()
    return dict(features=features, action=action, reward=reward, cont=torch.zeros(size), next=features)


@pytest.mark.parametrize("discrete", [False, True])
def test_sac_and_q_learner_updates_lower_their_losses_on_a_fixed_batch(discrete):
    torch.manual_seed(0)
    model = Counter()
    if discrete:
        model.action_dim, model.discrete = 3, True
    agent = MBPOAgent(model, train_world_model=False, hidden=32, layers=1, lr=3e-3)
    optimizers = agent.configure_optimizers()
    batch = bandit(discrete)
    with torch.no_grad():
        initial = agent.policy(batch["features"])
    first = agent.learner_step(batch, optimizers, counts_as_step=False)
    for _ in range(300):
        last = agent.learner_step(batch, optimizers, counts_as_step=False)
    assert last["q_loss"] < 0.2 * first["q_loss"]
    with torch.no_grad():
        action = agent.policy(batch["features"])
    if discrete:  # the greedy action is the rewarded one
        assert (action.argmax(-1) == 2).float().mean() > 0.9
    else:  # the actor's mean action moved to the best action 0.5, and the temperature went down
        assert action.mean() == pytest.approx(0.5, abs=0.15) and last["alpha"] < first["alpha"]
        assert -(action - 0.5).square().mean() > -(initial - 0.5).square().mean()  # its reward went up


def test_agent_cli_trains_checkpoints_resumes_and_evaluates(tmp_path):
    common = [
        "agent",
        "mbpo",
        "-c",
        "configs/mbpo_tiny.yaml",
        "--data.path",
        str(tmp_path / "episodes"),
        "--trainer.default_root_dir",
        str(tmp_path / "run"),
        "--checkpoint_every",
        "4",
    ]
    first = run_cli(*common, "--trainer.max_steps", "8")
    assert first.returncode == 0, first.stderr[-2000:]
    assert "MBPOAgent hyperparameters in force" in first.stdout and "target_entropy: -1.0" in first.stdout
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=False)
    assert saved["global_step"] == 8 and "q_target.0.0.weight" in saved["state_dict"]
    again = run_cli(*common, "--trainer.max_steps", "12", "--ckpt_path", "last")
    assert again.returncode == 0, again.stderr[-2000:]
    assert torch.load(ckpt, weights_only=False)["global_step"] == 12
    metrics = next((tmp_path / "run").glob("csv/**/metrics.csv")).read_text()
    assert "train/model_share" in metrics and "rollout/stopped" in metrics

    agent = load_agent(ckpt)
    returns, videos = evaluate(
        agent, "worldmodels.pixel_point:PixelPoint-v0", episodes=1, size=16, action_repeat=1
    )
    assert len(returns) == 1 and videos[0].shape == (31, 16, 16, 3)
    result = run_cli(
        "eval", "--ckpt", str(ckpt), "--env", "worldmodels.pixel_point:PixelPoint-v0", "--episodes", "1"
    )
    assert result.returncode == 0 and "return" in result.stdout, result.stderr[-2000:]


def test_discrete_agent_acts_epsilon_greedy_and_trains():
    torch.manual_seed(0)
    tiny = {
        "class_path": "worldmodels.rssm.RSSM",
        "init_args": dict(
            preset="dreamerv3-XS", deter=16, stoch=4, classes=4, hidden=16, mlp_layers=1, cnn_depth=4
        ),
    }
    agent = MBPOAgent(
        tiny,
        image_size=16,
        action_dim=3,
        discrete=True,
        hidden=16,
        layers=1,
        learner_batch=32,
        updates_per_step=2,
        rollout_length=2,
        epsilon=1.0,
    )
    obs = torch.randint(0, 255, (64, 16, 16, 3), dtype=torch.uint8)
    action, (posterior, last) = agent.act(obs, torch.ones(64, dtype=torch.bool), None, explore=True)
    assert torch.equal(action.sum(-1), torch.ones(64)) and len(action.argmax(-1).unique()) == 3  # epsilon 1
    torch.manual_seed(1)  # the posterior is a sample: the greedy action and the check see the same one
    greedy, _ = agent.act(obs[:1], torch.ones(1, dtype=torch.bool), None, explore=False)
    torch.manual_seed(1)
    posterior = agent.observe(obs[:1], torch.ones(1, dtype=torch.bool), None)
    assert torch.equal(
        greedy,
        nn.functional.one_hot(
            agent.q[0](agent.world_model.features(posterior)).argmax(-1),
            3,
        ).float(),
    )
    before = [p.detach().clone() for p in agent.parameters()]
    batch = {
        "image": torch.randint(0, 255, (2, 8, 16, 16, 3), dtype=torch.uint8),
        "action": nn.functional.one_hot(torch.randint(3, (2, 8)), 3).float(),
        "reward": torch.rand(2, 8),
        "is_first": torch.zeros(2, 8, dtype=torch.bool),
        "is_terminal": torch.zeros(2, 8, dtype=torch.bool),
    }
    agent.training_step(batch)
    changed = [not torch.equal(a, p) for a, p in zip(before, agent.parameters())]
    assert all(
        changed[i]
        for i, (n, _) in enumerate(agent.named_parameters())
        if n.startswith(("q.", "world_model.encoder"))
    )
    assert np.isclose(float(agent.last_metrics["train/model_share"]), 1 - round(0.05 * 32) / 32)


def test_rollout_length_ramps_linearly_from_one_to_k_over_the_recipe_steps():
    agent = counter_agent(rollout_length=5, rollout_ramp=[10, 50])
    lengths = []
    for step in (0, 10, 20, 30, 50, 100):
        with patch.object(MBPOAgent, "global_step", new_callable=PropertyMock, return_value=step):
            lengths.append(agent.current_rollout_length())
    assert lengths == [1, 1, 2, 3, 5, 5]  # MBPO's schedule: k = 1 before the ramp, k after it
    assert counter_agent(rollout_length=0, rollout_ramp=[10, 50]).current_rollout_length() == 0
