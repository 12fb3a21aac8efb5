"""Heads reuse any trained world model: every head on every model family, from `fit` checkpoints (also of video
folders with sidecar actions and rewards), frozen or fine-tuned, online or offline (agents/head.py)."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from agents.dreamer import DreamerAgent
from agents.evaluate import evaluate, load_agent
from agents.planet import PlaNetAgent
from agents.planners import imagine_returns
from tests.cli import run_cli
from tests.synthetic import moving_squares
from worldmodels.checkpoints import load_world_model
from worldmodels.collect import collect
from worldmodels.errors import CheckpointError
from worldmodels.mdnrnn import MDNRNN
from worldmodels.store import EpisodeStore
from worldmodels.vae import VAE

SIZE = 16
POINT = "worldmodels.pixel_point:PixelPoint-v0"
ROOT = Path(__file__).resolve().parents[1]


def mdnrnn(action_dim: int = 2) -> MDNRNN:
    torch.manual_seed(0)
    return MDNRNN(vae=VAE(SIZE, z_dim=6, width=0.25), action_dim=action_dim, hidden=16, mixtures=3)


def squares(batch: int = 3, length: int = 8) -> dict[str, torch.Tensor]:
    episodes = moving_squares(episodes=batch, length=length, size=SIZE, seed=1)
    return {k: torch.from_numpy(np.stack([e[k] for e in episodes])) for k in episodes[0]}


# --- every head on the VAE + MDN-RNN pair ------------------------------------------------------------------


def test_planet_plans_inside_an_mdnrnn_dream_for_more_predicted_reward_than_random_plans():
    model = mdnrnn()
    torch.nn.init.normal_(model.reward_head.weight, std=1.0)  # a reward that depends on where the dream goes
    model.temperature = 1e-4  # nearly deterministic dreams: returns of plans are comparable
    options = dict(horizon=4, candidates=200, iterations=5, top_k=20)
    agent = PlaNetAgent(model, planner_options=options).eval()
    assert agent.world_model is model and (agent.action_dim, agent.image_size) == (2, SIZE)
    obs = squares()["image"][:, 0]
    torch.manual_seed(0)
    action, state = agent.act(obs, torch.ones(3, dtype=torch.bool), None, explore=False)
    assert action.shape == (3, 2) and action.abs().max() <= 1
    posterior, plan = state["carry"][0], state["plan"]
    with torch.no_grad():
        torch.manual_seed(1)
        planned = imagine_returns(model, posterior, plan, discount=1.0)
        random = torch.rand(50, 3, 4, 2) * 2 - 1
        repeated = {k: v.repeat(50, *[1] * (v.ndim - 1)) for k, v in posterior.items()}
        baseline = imagine_returns(model, repeated, random.reshape(150, 4, 2), discount=1.0).reshape(50, 3)
    assert (planned > baseline.mean(0)).all()


def test_planet_training_step_trains_the_mdnrnn_but_not_its_frozen_vae():
    model = mdnrnn()
    agent = PlaNetAgent(model, planner_options=dict(horizon=2, candidates=10, iterations=1, top_k=2))
    optimizer = agent.configure_optimizers()
    before = {n: p.detach().clone() for n, p in agent.named_parameters()}
    agent.training_step(squares()).backward()
    optimizer.step()
    changed = {n for n, p in agent.named_parameters() if not torch.equal(before[n], p)}
    assert "world_model.lstm.weight_ih" in changed and "world_model.mdn.weight" in changed
    assert not any(n.startswith("world_model.vae.") for n in changed)


def test_dreamer_learns_in_an_mdnrnn_imagination_raising_its_imagined_return():
    model = mdnrnn()
    torch.nn.init.normal_(model.reward_head.weight, std=1.0)
    agent = DreamerAgent(model, train_world_model=False, horizon=5, actor_lr=3e-3, critic_lr=3e-3, hidden=32)
    assert agent.actor_grad == "backprop"  # continuous actions: gradients through MDNRNN.imagine
    actor_opt, critic_opt = agent.configure_optimizers()  # a frozen model brings no optimizer
    batch = squares()
    with torch.no_grad():
        starts = model.observe(batch["image"], batch["action"], batch["is_first"])
    start = {k: v.flatten(0, 1) for k, v in starts.items()}
    first_cont = torch.ones(start["z"].shape[0])
    imagined = []
    for _ in range(60):
        torch.manual_seed(0)  # the same dream noise each step: the return changes only with the actor
        loss, trajectory, metrics = agent.actor_loss(start, first_cont)
        actor_opt.zero_grad()
        loss.backward()
        actor_opt.step()
        imagined.append(float(metrics["imagined_reward"]))
    assert np.mean(imagined[-5:]) > np.mean(imagined[:5]) + 0.05, imagined[::10]
    assert all(p.grad is None for p in model.parameters())  # the frozen model learnt nothing


def test_a_world_model_that_does_not_fit_the_data_is_one_clear_error():
    with pytest.raises(CheckpointError, match=r"expects 2-dim continuous actions and 16px.*has 1-dim"):
        DreamerAgent(mdnrnn(action_dim=2), action_dim=1, image_size=SIZE)


# --- from `worldmodels fit` on a video folder to PlaNet and Dreamer, online and offline ----------------------


def video_folder(root: Path, store: Path) -> Path:
    """The store's episodes as PNG frame folders with `<folder>.npz` sidecars of actions and rewards."""
    source = EpisodeStore(store)
    root.mkdir()
    for i in range(len(source)):
        episode = source.episode(i)
        frames = root / f"episode{i}"
        frames.mkdir()
        for t, frame in enumerate(episode["image"]):
            iio.imwrite(frames / f"{t:03d}.png", frame)
        np.savez(root / f"episode{i}.npz", action=episode["action"], reward=episode["reward"])
    return root


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """PixelPoint episodes -> a video folder with sidecars -> `worldmodels fit` of a tiny RSSM on it."""
    root = tmp_path_factory.mktemp("reuse")
    collect(POINT, 6, root / "store", size=SIZE, action_repeat=1, seed=0)
    videos = video_folder(root / "videos", root / "store")
    result = run_cli(
        "fit", "-c", "configs/tiny_rssm.yaml", "--data.path", str(videos), "--data.size", str(SIZE),
        "--trainer.max_steps", "20", "--trainer.default_root_dir", str(root / "fit"),
        "--trainer.enable_progress_bar", "false",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return {"root": root, "videos": videos, "ckpt": root / "fit" / "checkpoints" / "last.ckpt"}


def agent_run(head: str, recipe: str, root: Path, *args: str) -> Path:
    result = run_cli(
        "agent", head, "-c", f"configs/{recipe}", "--trainer.default_root_dir", str(root),
        "--data.size", "null", "--trainer.enable_progress_bar", "false", *args,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "checkpoints" / "last.ckpt"


def test_dreamer_learns_offline_from_videos_with_sidecars_starting_from_a_fit_checkpoint(fitted):
    ckpt = agent_run(
        "dreamer", "dreamer_tiny.yaml", fitted["root"] / "dreamer",
        "--world_model.ckpt", str(fitted["ckpt"]), "--offline", "true", "--train_world_model", "false",
        "--data.path", str(fitted["videos"]), "--trainer.max_steps", "6",
    )  # fmt: skip
    checkpoint = torch.load(ckpt, weights_only=False)
    assert checkpoint["global_step"] == 6 and checkpoint["OnlineDataModule"]["offline"]
    fit = torch.load(fitted["ckpt"], weights_only=False)["state_dict"]
    for key, value in fit.items():  # the frozen world model is the fitted one, weight for weight
        torch.testing.assert_close(checkpoint["state_dict"][f"world_model.{key}"], value)
    assert len(checkpoint["optimizer_states"]) == 2  # actor and critic only
    agent = load_agent(ckpt)
    returns, _ = evaluate(agent, POINT, episodes=1, size=SIZE, action_repeat=1)  # as `worldmodels eval` does
    assert len(returns) == 1


def test_planet_fine_tunes_a_fit_checkpoint_online_and_eval_runs_it(fitted):
    ckpt = agent_run(
        "planet", "planet_tiny.yaml", fitted["root"] / "planet",
        "--world_model.ckpt", str(fitted["ckpt"]), "--data.path", str(fitted["root"] / "planet_episodes"),
        "--data.seed_episodes", "2", "--data.train_every", "4", "--trainer.max_steps", "4",
        "--model.planner_options", "{horizon: 3, candidates: 20, iterations: 2, top_k: 4}",
    )  # fmt: skip
    checkpoint = torch.load(ckpt, weights_only=False)
    spec = checkpoint["hyper_parameters"]["world_model"]
    assert spec["class_path"] == "worldmodels.rssm.RSSM" and spec["init_args"]["deter"] == 32  # tiny_rssm's
    fit = torch.load(fitted["ckpt"], weights_only=False)["state_dict"]
    moved = [k for k, v in fit.items() if not torch.equal(checkpoint["state_dict"][f"world_model.{k}"], v)]
    assert moved  # fine-tuned (train_world_model defaults to true)
    result = run_cli("eval", "--ckpt", str(ckpt), "--env", POINT, "--episodes", "1")
    assert result.returncode == 0 and f"{POINT}: return" in result.stdout, result.stderr[-2000:]
    # an agent checkpoint hands its world model on, too
    model = load_world_model({"ckpt": str(ckpt)})
    assert model.image_size == SIZE and model.action_dim == 1


def test_planet_learns_its_terminal_value_offline_on_a_frozen_fit_checkpoint(fitted):
    ckpt = agent_run(
        "planet", "planet_tiny.yaml", fitted["root"] / "planet_offline",
        "--world_model.ckpt", str(fitted["ckpt"]), "--offline", "true", "--train_world_model", "false",
        "--model.value_critic", "true", "--data.path", str(fitted["videos"]), "--trainer.max_steps", "5",
        "--model.planner_options", "{horizon: 3, candidates: 20, iterations: 2, top_k: 4}",
    )  # fmt: skip
    checkpoint = torch.load(ckpt, weights_only=False)
    assert checkpoint["global_step"] == 5
    hparams = checkpoint["hyper_parameters"]  # the values in force, the planner's defaults resolved
    assert hparams["planner_options"]["horizon"] == 3 and hparams["exploration_noise"] == 0.3
    assert hparams["planner_options"]["warm_start"] is False  # a CEM default, not given in the recipe
    fit = torch.load(fitted["ckpt"], weights_only=False)["state_dict"]
    assert all(torch.equal(checkpoint["state_dict"][f"world_model.{k}"], v) for k, v in fit.items())
    assert any(k.startswith("critic.") for k in checkpoint["state_dict"])


def test_a_checkpoint_of_another_action_space_is_refused_naming_both(fitted, tmp_path):
    result = run_cli(
        "agent", "dreamer", "-c", "configs/dreamer_tiny.yaml", "--world_model.ckpt", str(fitted["ckpt"]),
        "--data.env", "CartPole-v1", "--data.size", "null", "--data.path", str(tmp_path / "ep"),
        "--data.seed_episodes", "1", "--trainer.default_root_dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "expects 1-dim continuous actions and 16px images" in line and "has 2-dim discrete" in line
    assert "world model" in line and str(fitted["ckpt"]) in line


def test_agent_help_lists_the_heads_and_each_head_names_itself():
    result = run_cli("agent", "--help")
    assert result.returncode == 0
    assert all(f"  {name}" in result.stdout for name in ("controller", "planet", "dreamer"))
    result = run_cli("agent", "planet", "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: worldmodels agent planet")
    assert "--world_model.ckpt" in result.stdout and "--offline" in result.stdout


@pytest.mark.slow
def test_dreamer_learns_pixel_point_offline_from_random_episodes_and_beats_random(tmp_path):
    """No env step while learning: 150 random PixelPoint episodes (4,500 steps), then Dreamer offline (world
    model and actor-critic, 1500 steps); `worldmodels eval` in the real env must beat a random policy by 5
    (random about 14.5 on these seeds, steering to the middle about 29.5)."""
    store = tmp_path / "store"
    collect(POINT, 150, store, size=SIZE, action_repeat=1, seed=0)
    sizes = "{preset: dreamerv3-XS, deter: 64, stoch: 8, classes: 8, hidden: 64, mlp_layers: 1, cnn_depth: 8, lr: 0.001}"
    ckpt = agent_run(
        "dreamer", "dreamer_tiny.yaml", tmp_path / "run", "--offline", "true", "--data.path", str(store),
        "--world_model.init_args", sizes, "--model.horizon", "10", "--model.hidden", "64",
        "--model.actor_lr", "3e-4", "--model.critic_lr", "3e-4", "--data.batch_size", "16",
        "--trainer.max_steps", "1500", "--checkpoint_every", "500",
    )  # fmt: skip
    result = run_cli("eval", "--ckpt", str(ckpt), "--env", POINT, "--episodes", "10", "--seed", "1000")
    assert result.returncode == 0, result.stderr[-2000:]
    learned = float(result.stdout.split("return ")[1].split()[0])
    print(result.stdout)
    assert learned > 14.5 + 5
