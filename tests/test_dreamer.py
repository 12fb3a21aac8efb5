"""The Dreamer head (agents/dreamer.py): returns, return scale, critic, actor gradients, training steps, acting,
checkpoints, the train-ratio schedule (agents/online.py) and the command line (agent, eval, dream)."""

from __future__ import annotations

import csv
import inspect
import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader

import cli.main as cli
from agents.dreamer import DreamerAgent, ReturnScale, discount_weights
from agents.evaluate import evaluate, load_agent
from agents.head import lambda_return
from agents.online import EnvLoop, OnlineDataModule, TrainRatio
from tests.synthetic import moving_squares
from worldmodels.distributions import symexp, symlog
from worldmodels.errors import ConfigError, NonFiniteLossError
from worldmodels.interface import detach, flatten_time

SIZE = 16
RECIPES = Path(__file__).resolve().parents[1] / "configs"
TINY_V3 = dict(deter=16, stoch=4, classes=4, hidden=16, mlp_layers=1, cnn_depth=4)
TINY_V1 = dict(deter=16, stoch=4, hidden=16, mlp_layers=1, cnn_depth=4)
POINT = "worldmodels.pixel_point:PixelPoint-v0"


def rssm_spec(preset: str = "dreamerv3-XS", **sizes: int) -> dict:
    return {"class_path": "worldmodels.rssm.RSSM", "init_args": {"preset": preset, **sizes}}


def tiny(version: str = "v3", discrete: bool = False, action_dim: int = 2, **kwargs) -> DreamerAgent:
    torch.manual_seed(0)
    spec = rssm_spec("dreamerv3-XS", **TINY_V3) if version == "v3" else rssm_spec("dreamerv1", **TINY_V1)
    return DreamerAgent(
        world_model=spec,
        version=version,
        image_size=SIZE,
        action_dim=action_dim,
        discrete=discrete,
        horizon=4,
        hidden=16,
        actor_layers=1,
        critic_layers=1,
        **kwargs,
    )


def squares_batch(discrete: bool = False, batch: int = 3, length: int = 8) -> dict[str, torch.Tensor]:
    """Moving squares (B, T, ...); discrete: the first action dim, binned in 3, becomes a one-hot action."""
    episodes = moving_squares(episodes=batch, length=length, size=SIZE, seed=1)
    out = {k: torch.from_numpy(np.stack([e[k] for e in episodes])) for k in episodes[0]}
    if discrete:
        index = torch.bucketize(out["action"][..., 0].contiguous(), torch.tensor([-1 / 3, 1 / 3]))
        out["action"] = torch.nn.functional.one_hot(index, 3).float()
        out["action"][:, 0] = 0.0
    return out


def randomize_heads(agent: DreamerAgent) -> None:
    """Zero-initialized output layers (DreamerV3) predict 0 everywhere; a trained agent's do not."""
    for layer in (agent.world_model.reward_head[-1], agent.critic[-1]):
        nn.init.normal_(layer.weight, std=0.3)


def posterior_starts(agent: DreamerAgent, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        states = agent.world_model.observe(batch["image"], batch["action"], batch["is_first"])
    return detach(flatten_time(states))


# --- returns and their scale ------------------------------------------------------------------------------


def test_lambda_return_matches_a_hand_computation():
    reward, value = torch.tensor([[1.0, 2.0]]), torch.tensor([[10.0, 20.0, 30.0]])
    discount = torch.tensor([[0.5, 0.9]])
    # R_1 = 2 + 0.9 * (0.2 * 30 + 0.8 * 30) = 29;  R_0 = 1 + 0.5 * (0.2 * 20 + 0.8 * 29) = 14.6
    torch.testing.assert_close(lambda_return(reward, value, discount, 0.8), torch.tensor([[14.6, 29.0]]))
    # lambda 0: one-step targets; lambda 1: discounted sums bootstrapped at the horizon
    torch.testing.assert_close(lambda_return(reward, value, discount, 0.0), torch.tensor([[11.0, 29.0]]))
    torch.testing.assert_close(lambda_return(reward, value, discount, 1.0), torch.tensor([[15.5, 29.0]]))


def test_discount_weights_stop_at_predicted_and_real_episode_ends():
    weights = discount_weights(torch.tensor([1.0, 0.0]), torch.tensor([[1.0, 0.5], [1.0, 1.0]]), 0.9)
    torch.testing.assert_close(weights, torch.tensor([[1.0, 0.9, 0.405], [0.0, 0.0, 0.0]]))


def test_return_scale_is_an_ema_of_the_5_to_95_percentile_range_and_at_least_one():
    scale = ReturnScale()
    returns = torch.arange(101.0)[torch.randperm(101)]  # 5th percentile 5, 95th 95
    scale.update(returns)
    torch.testing.assert_close((scale.low, scale.high), (torch.tensor(0.05), torch.tensor(0.95)))
    assert scale.scale() == 1.0  # range 0.9 < 1: small returns are not scaled up
    for _ in range(499):
        scale.update(returns)
    torch.testing.assert_close(scale.high - scale.low, torch.tensor(90 * (1 - 0.99**500)))
    assert scale.scale() == scale.high - scale.low > 88
    assert set(scale.state_dict()) == {"low", "high"}  # travels with checkpoints


# --- critic -----------------------------------------------------------------------------------------------


def test_critic_loss_is_two_hot_cross_entropy_to_returns_and_slow_values():
    agent = tiny()
    randomize_heads(agent)
    nn.init.normal_(agent.slow_critic[-1].weight, std=0.3)
    states = agent.world_model.initial(2)
    states = {
        k: torch.stack([v, v + 0.1 * torch.randn_like(v), v], 1) for k, v in states.items()
    }  # (2, 3, ...)
    returns, weight = torch.tensor([[3.0, -250.0], [0.0, 0.7]]), torch.tensor([[1.0, 0.5], [0.25, 0.0]])
    features = agent.world_model.features(states)[:, :-1]
    loss, _ = agent.critic_loss(features, returns, weight)

    log_probs = agent.critic(features).log_softmax(-1)
    bins = torch.linspace(-20, 20, 255)

    def two_hot_nll(target: torch.Tensor) -> torch.Tensor:
        x = symlog(target)
        below = torch.floor((x + 20) / (40 / 254)).long()
        above_weight = (x - bins[below]) / (bins[below + 1] - bins[below])
        picked = lambda i: log_probs.gather(-1, i[..., None]).squeeze(-1)
        return -((1 - above_weight) * picked(below) + above_weight * picked(below + 1))

    slow = symexp((agent.slow_critic(features).softmax(-1) * bins).sum(-1))
    expected = (weight * (two_hot_nll(returns) + two_hot_nll(slow))).mean()
    torch.testing.assert_close(loss, expected)


def test_critic_learns_the_returns_it_is_given():
    agent = tiny()
    agent.slow_critic_scale = 0.0
    states = agent.world_model.initial(4)
    states = {k: torch.stack([v + 0.3 * torch.randn_like(v) for _ in range(3)], 1) for k, v in states.items()}
    returns = torch.tensor([[-40.0, 2.0], [0.5, 7.0], [120.0, 0.0], [-1.0, 3.0]])
    optimizer = torch.optim.Adam(agent.critic.parameters(), lr=1e-2)
    for _ in range(400):
        loss, _ = agent.critic_loss(agent.world_model.features(states)[:, :-1], returns, torch.ones(4, 2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    values = agent.value(agent.world_model.features(states)[:, :-1])
    torch.testing.assert_close(symlog(values), symlog(returns), rtol=0, atol=0.05)  # bins are even in symlog


# --- actor ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("actor_grad", ["backprop", "reinforce"])
def test_actor_gradients_flow_through_the_dynamics_only_with_backprop(actor_grad: str):
    agent = tiny(actor_grad=actor_grad, actor_entropy=0.0)  # no entropy term: only the returns move the actor
    randomize_heads(agent)
    start = posterior_starts(agent, squares_batch())
    loss, _, _ = agent.actor_loss(start, torch.ones(start["deter"].shape[0]))
    actor, dynamics = list(agent.actor.parameters()), list(agent.world_model.cell.parameters())
    grads = torch.autograd.grad(loss, actor + dynamics, allow_unused=True)
    actor_grads, dynamics_grads = grads[: len(actor)], grads[len(actor) :]
    assert sum(g.abs().sum() for g in actor_grads if g is not None) > 0
    if actor_grad == "backprop":  # d return / d action through world_model.imagine
        assert all(g is not None for g in dynamics_grads) and sum(g.abs().sum() for g in dynamics_grads) > 0
    else:  # log pi(a) * sg(advantage): the dynamics are not in the graph
        assert all(g is None for g in dynamics_grads)


def test_paper_defaults_for_the_actor_gradient():
    assert tiny().actor_grad == "backprop"  # DreamerV3 (Jan 2023): continuous actions
    assert tiny(discrete=True, action_dim=3).actor_grad == "reinforce"  # DreamerV3: discrete actions
    assert tiny("v1").actor_grad == tiny("v1", discrete=True, action_dim=3).actor_grad == "backprop"


@pytest.mark.parametrize("discrete", [False, True])
def test_entropy_bonus_lowers_the_actor_loss_by_eta_times_weighted_entropy(discrete: bool):
    agent = tiny(discrete=discrete, action_dim=3 if discrete else 2)
    randomize_heads(agent)
    start = posterior_starts(agent, squares_batch(discrete))
    first_cont = torch.ones(start["deter"].shape[0])
    fresh = {k: v.clone() for k, v in agent.return_scale.state_dict().items()}

    def loss_and_metrics(eta: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        agent.actor_entropy = eta
        agent.return_scale.load_state_dict(fresh)
        torch.manual_seed(1)
        loss, trajectory, metrics = agent.actor_loss(start, first_cont)
        return loss, {**metrics, **trajectory}

    base, _ = loss_and_metrics(0.0)
    bonus, out = loss_and_metrics(0.5)
    policy = agent.actor(out["features"])
    expected = -0.5 * (out["weight"] * policy.entropy()).mean()
    torch.testing.assert_close(bonus - base, expected)
    assert expected < 0
    if discrete:  # the logged entropy is the categorical's -sum p log p, at most log 3 for 3 actions
        probs = policy.probs
        torch.testing.assert_close(out["policy_entropy"], -(probs * probs.log()).sum(-1).mean())
        assert out["policy_entropy"] <= math.log(3) + 1e-6


# --- training steps ---------------------------------------------------------------------------------------


def fit_steps(agent: DreamerAgent, batch: dict[str, torch.Tensor], steps: int) -> L.Trainer:
    trainer = L.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(agent, DataLoader([batch] * steps, batch_size=None))
    return trainer


@pytest.mark.parametrize(
    "version, discrete", [("v3", False), ("v3", True), ("v1", False)], ids=["v3", "v3-discrete", "v1"]
)
def test_one_training_step_updates_world_model_actor_and_critic(version: str, discrete: bool):
    agent = tiny(version, discrete=discrete, action_dim=3 if discrete else 2)
    before = {k: v.clone() for k, v in agent.state_dict().items()}
    trainer = fit_steps(agent, squares_batch(discrete), steps=1)
    assert trainer.global_step == 1  # three optimizers, one step
    changed = lambda prefix: any(
        not torch.equal(v, before[k]) for k, v in agent.state_dict().items() if k.startswith(prefix)
    )
    for group in ("world_model.", "actor.", "critic."):
        assert changed(group), group
    if version == "v3":
        assert changed("slow_critic.") and agent.return_scale.high > agent.return_scale.low
    else:
        assert agent.slow_critic is None and agent.return_scale is None
    optimizers = [o.optimizer if hasattr(o, "optimizer") else o for o in trainer.optimizers]
    assert [o.param_groups[0]["lr"] for o in optimizers] == (
        [1e-4, 3e-5, 3e-5] if version == "v3" else [6e-4, 8e-5, 8e-5]  # DreamerV3 Table W.1, DreamerV1 App. A
    )


@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_a_non_finite_loss_stops_naming_the_term_or_skips_the_batch(mode: str):
    agent = tiny(on_nonfinite=mode)
    batches = [squares_batch() for _ in range(3)]
    batches[1]["reward"][0, 2] = float("nan")
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu"
    )
    if mode == "stop":
        with pytest.raises(NonFiniteLossError, match="at step 1: .*reward=nan"):
            trainer.fit(agent, DataLoader(batches, batch_size=None))
        return
    trainer.fit(agent, DataLoader(batches, batch_size=None))
    assert trainer.global_step == 2  # the bad batch updated nothing
    assert all(torch.isfinite(p).all() for p in agent.parameters())


# --- acting -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version, discrete",
    [("v3", False), ("v3", True), ("v1", False), ("v1", True)],
    ids=["v3", "v3-d", "v1", "v1-d"],
)
def test_act_returns_bounded_or_one_hot_actions_and_a_state_to_pass_back(version: str, discrete: bool):
    agent = tiny(version, discrete=discrete, action_dim=3).eval()
    obs = torch.from_numpy(squares_batch(batch=5)["image"][:, 1].numpy())  # (5, 16, 16, 3) uint8
    for explore in (False, True):
        action, state = agent.act(obs, torch.ones(5, dtype=torch.bool), None, explore)
        assert action.shape == (5, 3)
        action, state = agent.act(obs, torch.tensor([False, True, False, False, True]), state, explore)
        assert action.shape == (5, 3) and state[1] is action and state[0]["deter"].shape == (5, 16)
        if discrete:
            assert torch.all(action.sum(-1) == 1) and set(action.unique().tolist()) <= {0.0, 1.0}
        else:
            assert action.abs().max() <= 1


# --- checkpoints ------------------------------------------------------------------------------------------


def test_world_model_sizes_and_hyperparameters_survive_a_checkpoint_round_trip(tmp_path: Path):
    overrides = dict(deter=24, stoch=3, classes=5, hidden=20, mlp_layers=1, cnn_depth=4)
    agent = DreamerAgent(
        rssm_spec(**overrides), image_size=SIZE, action_dim=2, horizon=3, actor_lr=1e-4, hidden=20
    )
    trainer = L.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu"
    )
    trainer.strategy.connect(agent)
    trainer.save_checkpoint(tmp_path / "agent.ckpt")
    loaded = load_agent(tmp_path / "agent.ckpt")  # as `worldmodels eval` loads it
    assert isinstance(loaded, DreamerAgent) and (loaded.action_dim, loaded.discrete, loaded.image_size) == (
        2,
        False,
        16,
    )
    model = loaded.world_model
    assert {k: model.config[k] for k in overrides} == overrides
    assert model.cell.norm.normalized_shape == (3 * 24,)  # the DreamerV3 GRU of the overridden width
    assert model.feature_dim == 24 + 3 * 5 and loaded.critic[0].in_features == 39
    # the RSSM records its own arguments, not the agent's (Lightning's save_hyperparameters frame walk)
    assert model.hparams["deter"] == 24 and "version" not in model.hparams and "horizon" not in model.hparams
    assert loaded.horizon == 3 and loaded.actor_lr == 1e-4
    # the saved hyperparameters hold the values in force, not the None that means "the version's"
    assert loaded.hparams["discount"] == 1 - 1 / 333 and loaded.hparams["critic_lr"] == 3e-5
    assert loaded.hparams["world_model"]["init_args"]["lr"] == 1e-4  # the preset's, resolved
    for key, value in agent.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_bad_settings_raise_config_errors():
    with pytest.raises(ConfigError, match="version 'v2'"):
        DreamerAgent(version="v2", image_size=SIZE)
    with pytest.raises(ConfigError, match=r"RSSM has no argument \['depth'\]; it takes \['preset', "):
        DreamerAgent(world_model=rssm_spec(depth=8), image_size=SIZE)
    with pytest.raises(ConfigError, match="actor_grad='straight'"):
        DreamerAgent(world_model=rssm_spec(**TINY_V3), image_size=SIZE, actor_grad="straight")
    with pytest.raises(ConfigError, match="train_ratio=0"):
        TrainRatio(0, 64)


# --- the train-ratio schedule -----------------------------------------------------------------------------


def test_train_ratio_collects_replayed_steps_over_ratio_policy_steps():
    one_env = TrainRatio(512, 16 * 64)  # DreamerV3 DMC: batch 16 x 64, ratio 512 -> 2 policy steps per step
    assert [one_env() for _ in range(3)] == [2, 2, 2]
    four_envs = TrainRatio(512, 16 * 64, num_envs=4)  # a vector step is 4 policy steps: every second step
    assert [four_envs() for _ in range(4)] == [0, 1, 0, 1]
    fractional = TrainRatio(100, 64, num_envs=2)  # 0.64 policy steps per training step
    steps = [fractional() for _ in range(1000)]
    assert sum(steps) * 2 == 640 and set(steps) == {0, 1}


# --- the command line: `worldmodels agent dreamer`, resume, `worldmodels eval`, `worldmodels dream` ----------


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/dreamer_tiny.yaml for 10 steps, then resumed with --ckpt_path last up to step 30."""
    root = tmp_path_factory.mktemp("dreamer_run")
    argv = [
        "agent",
        "dreamer",
        "-c",
        str(RECIPES / "dreamer_tiny.yaml"),
        "--trainer.default_root_dir",
        str(root),
    ]
    argv += ["--data.path", str(root / "episodes"), "--trainer.enable_progress_bar", "false"]
    argv += ["--trainer.log_every_n_steps", "1", "--checkpoint_every", "5"]
    cli.main([*argv, "--trainer.max_steps", "10"])
    assert torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 10
    cli.main([*argv, "--trainer.max_steps", "30", "--ckpt_path", "last"])
    return root


def test_an_online_run_evaluates_the_policys_mode_at_its_start_and_every_n_env_steps(tmp_path: Path, capsys):
    argv = ["agent", "dreamer", "-c", str(RECIPES / "dreamer_tiny.yaml"), "--trainer.default_root_dir"]
    argv += [
        str(tmp_path),
        "--data.path",
        str(tmp_path / "episodes"),
        "--trainer.enable_progress_bar",
        "false",
    ]
    argv += [
        "--trainer.max_steps",
        "16",
        "--checkpoint_every",
        "1",
        "--eval_every",
        "40",
        "--eval_episodes",
        "2",
    ]
    cli.main(argv)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("evaluate it: "))
    assert line == (
        f"evaluate it: worldmodels eval --ckpt {tmp_path / 'checkpoints' / 'last.ckpt'} --env {POINT} "
        "--action_repeat 1 --episodes 10"
    )
    args = cli.build_parser().parse_args(line.split()[3:])
    mode_returns = args.func(args)
    assert len(mode_returns) == 10  # the printed command runs: 10 returns
    args = cli.build_parser().parse_args([*line.split()[3:], "--explore"])  # DreamerV3's protocol: sampled
    assert args.explore and args.func(args) != mode_returns
    rows = list(csv.DictReader(open(tmp_path / "eval.csv")))
    # 2 seed episodes of 30 steps, then 2 policy steps per training step: the 3rd episode ends at step 15
    assert [(int(r["step"]), int(r["env_steps"])) for r in rows] == [(0, 60), (15, 90)]  # 90 >= 80
    agent = load_agent(tmp_path / "checkpoints" / "step15.ckpt")
    returns, _ = evaluate(agent, POINT, episodes=2, size=SIZE, action_repeat=1, seed=10_000)
    assert json.loads(rows[1]["returns"]) == pytest.approx(
        returns
    )  # the policy at step 15, its mode, same seeds
    logged = list(csv.DictReader(open(tmp_path / "csv" / "version_0" / "metrics.csv")))
    assert sum(bool(r.get("eval/return")) for r in logged) == 2
    assert (tmp_path / "eval" / "step15.mp4").stat().st_size > 0
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    assert [e.step for e in events.Images("eval/video")] == [0, 15]  # the GIF of each evaluation


def test_cli_trains_checkpoints_and_resumes_the_whole_run(run: Path):
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 30 and checkpoint["model_class"] == "agents.dreamer.DreamerAgent"
    # world model, actor and critic optimizers all continued from their saved state: 30 Adam steps each
    assert [float(o["state"][0]["step"]) for o in checkpoint["optimizer_states"]] == [30.0, 30.0, 30.0]
    assert {"slow_critic.0.weight", "return_scale.low", "return_scale.high"} <= set(checkpoint["state_dict"])
    assert checkpoint["state_dict"]["return_scale.high"] != 0
    assert (run / "checkpoints" / "step5.ckpt").exists() and (run / "checkpoints" / "step15.ckpt").exists()
    logged = [
        sorted(csv.DictReader(open(path)), key=lambda r: int(r["step"]))
        for path in sorted(run.glob("csv/version_*/metrics.csv"))
    ]
    assert len(logged) == 2 and int(logged[1][0]["step"]) >= 10  # the resumed run starts at the saved step
    assert any(row.get("env/return") for row in logged[1])  # 40 policy steps: an episode of 30 finished
    assert len(list((run / "episodes").glob("*.npz"))) >= 3  # 2 seed episodes + what the agent collected


def test_cli_eval_plays_the_checkpoint(run: Path, capsys: pytest.CaptureFixture):
    cli.main(["eval", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--env", POINT, "--episodes", "2"])
    assert f"{POINT}: return" in capsys.readouterr().out


def test_cli_dream_shows_the_actor_dreaming_next_to_the_truth(run: Path, tmp_path: Path):
    out = tmp_path / "dream.mp4"
    argv = ["dream", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--data", str(run / "episodes")]
    cli.main([*argv, "--out", str(out), "--context", "3", "--horizon", "5", "--sequences", "2"])
    import imageio.v3 as iio

    frames = iio.imread(out)
    # 5 columns of 2 sequences under a header: 92 x 49 px before scaling (3 columns would be 56 x 49)
    assert len(frames) == 3 + 5 and frames.shape[2] > 1.6 * frames.shape[1]
    rows = list(csv.DictReader(open(tmp_path / "dream_metrics.csv")))
    assert len(rows) == 5 and {"mse", "reward_true", "reward_policy", "value_dream", "value_policy"} <= set(
        rows[0]
    )
    assert (tmp_path / "dream_values.png").stat().st_size > 0


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("dreamer_*.yaml")), ids=lambda p: p.name)
def test_recipes_name_real_options_and_build_their_agent(recipe: Path):
    config = yaml.safe_load(recipe.read_text())
    assert set(config["model"]) <= set(inspect.signature(DreamerAgent).parameters)
    assert set(config["data"]) <= set(inspect.signature(OnlineDataModule).parameters)
    assert set(config["trainer"]) <= set(inspect.signature(L.Trainer).parameters)
    discrete = config["data"]["env"] == "CartPole-v1"
    agent = DreamerAgent(
        world_model=config.get("world_model"),
        **config["model"],
        image_size=config["data"]["size"],
        action_dim=2,
        discrete=discrete,
    )
    assert agent.actor_grad == ("reinforce" if discrete else "backprop")
    data = (config["data"]["batch_size"], config["data"]["length"], config["data"]["train_ratio"])
    if recipe.name == "dreamer_cartpole_cpu.yaml":  # sized for a 2-core CPU (its header says how)
        assert agent.world_model.config["deter"] == 256 and data == (16, 32, 64)
    elif recipe.name != "dreamer_tiny.yaml":  # DreamerV3 settings for DMC vision
        assert agent.world_model.config["deter"] == 512 and agent.discount == 1 - 1 / 333
        assert (config["data"]["batch_size"], config["data"]["length"], config["data"]["train_ratio"]) == (
            16,
            64,
            512,
        )


# --- learning (slow) --------------------------------------------------------------------------------------


class RandomPolicy:
    """Uniform random actions in [-1, 1], for the baseline return."""

    action_dim, discrete, image_size = 1, False, SIZE

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def act(
        self, obs: torch.Tensor, is_first: torch.Tensor, state: None, explore: bool
    ) -> tuple[torch.Tensor, None]:
        return torch.rand(obs.shape[0], 1, generator=self.generator) * 2 - 1, None


@pytest.mark.slow
def test_dreamer_learns_pixel_point_clearly_above_random(tmp_path: Path):
    """PixelPoint (worldmodels/pixel_point.py, 16x16): a random policy scores about 14.5, steering to the middle about
    29.5. A small DreamerV3 trained online for 800 steps (about 3,300 env steps, a few CPU minutes) must beat the
    random policy by 8 on the same 10 evaluation episodes. Short run, small model: learning rates are 10x the
    paper's (world model 1e-3, actor and critic 3e-4)."""
    L.seed_everything(0)
    data = OnlineDataModule(
        str(tmp_path / "episodes"), POINT, size=SIZE, action_repeat=1, seed_episodes=5, train_ratio=64,
        batch_size=16, length=16,
    )  # fmt: skip
    sizes = dict(deter=64, stoch=8, classes=8, hidden=64, mlp_layers=1, cnn_depth=8, lr=1e-3)
    agent = DreamerAgent(
        rssm_spec(**sizes), image_size=SIZE, action_dim=1, horizon=10, actor_lr=3e-4, critic_lr=3e-4,
        hidden=64, actor_layers=1, critic_layers=1,
    )  # fmt: skip
    trainer = L.Trainer(
        max_steps=800,
        callbacks=[EnvLoop()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(agent, datamodule=data)
    learned, _ = evaluate(agent.eval(), POINT, episodes=10, seed=1000)
    random, _ = evaluate(RandomPolicy(0), POINT, episodes=10, seed=1000)
    print(
        f"PixelPoint returns over 10 episodes: Dreamer {np.mean(learned):.1f}, random {np.mean(random):.1f}"
    )
    assert np.mean(learned) > np.mean(random) + 8
