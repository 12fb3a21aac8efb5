"""The World Models controller (agents/controller.py): policy, batched dream fitness, CMA-ES loop, real-env
fitness in worker processes, resume, checkpoints and the command line."""

from __future__ import annotations

import shlex
from pathlib import Path

import gymnasium as gym
import lightning as L
import numpy as np
import pytest
import torch

import cli.main as cli
from agents.controller import (
    LAST,
    Controller,
    ControllerAgent,
    RealFitness,
    build_parser,
    dream_returns,
    evolve,
    parse_config,
    read_evolution,
    rollout,
    train,
)
from agents.evaluate import load_agent
from worldmodels import envs
from worldmodels.collect import collect
from worldmodels.errors import CheckpointError, ConfigError
from worldmodels.interface import State
from worldmodels.mdnrnn import MDNRNN
from worldmodels.rssm import RSSM
from worldmodels.vae import VAE

SIZE = 16


def controller_main(argv: list[str]) -> None:
    """`worldmodels agent controller ARGV` in this process."""
    train(parse_config(argv))


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _save(model: L.LightningModule, path: Path) -> str:
    trainer = L.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu"
    )
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    return str(path)


def _mdnrnn(action_dim: int = 1, **kwargs) -> MDNRNN:
    torch.manual_seed(0)
    return MDNRNN(vae=VAE(SIZE, 4, 0.25), action_dim=action_dim, hidden=8, mixtures=2, **kwargs)


def _rssm() -> RSSM:
    torch.manual_seed(0)
    return RSSM(
        preset="dreamerv3-S",
        image_size=SIZE,
        action_dim=1,
        deter=8,
        stoch=4,
        classes=4,
        hidden=8,
        mlp_layers=1,
        cnn_depth=4,
    )


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Untrained tiny world models for Pendulum-v1 at 16 px (1-dim actions); mdnrnn_mean observes the VAE mean."""
    root = tmp_path_factory.mktemp("models")
    return {
        "mdnrnn": _save(_mdnrnn(), root / "mdnrnn.ckpt"),
        "mdnrnn_mean": _save(_mdnrnn(observe_z="mean"), root / "mdnrnn_mean.ckpt"),
        "rssm": _save(_rssm(), root / "rssm.ckpt"),
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("store") / "pendulum"
    collect("Pendulum-v1", 2, path, size=SIZE, seed=0, max_steps=12, progress=False)
    return str(path)


# ---- the policy ----


@pytest.mark.parametrize("hidden", [0, 5])
def test_controller_shapes_squashing_and_flat_params(hidden: int) -> None:
    torch.manual_seed(0)
    controller = Controller(feature_dim=6, action_dim=3, discrete=False, hidden=hidden)
    expected = 6 * 3 + 3 if hidden == 0 else (6 * 5 + 5) + (5 * 3 + 3)
    assert controller.num_params == expected
    params, features = 10 * torch.randn(4, expected), 10 * torch.randn(4, 7, 6)  # (P, n), (P, R, F)
    actions = controller.act(params, features)
    assert actions.shape == (4, 7, 3)
    assert actions.abs().max() <= 1.0 and actions.abs().max() > 0.99  # tanh-squashed, saturating
    assert torch.equal(Controller.flatten(controller.layers(params)), params)  # flat round trip
    # each policy acts on its own rows only: policy 2 alone gives the same actions
    x = features[2]
    for i, (w, b) in enumerate(controller.layers(params[2:3])):
        x = x @ w[0] + b[0]
        x = torch.tanh(x) if i == 0 and hidden else x
    torch.testing.assert_close(actions[2], torch.tanh(x))
    with pytest.raises(ConfigError, match=f"\\(P, {expected}\\)"):
        controller.layers(torch.zeros(4, expected + 1))


def test_discrete_controller_is_one_hot() -> None:
    torch.manual_seed(0)
    controller = Controller(feature_dim=4, action_dim=3, discrete=True)
    params, features = torch.randn(2, controller.num_params), torch.randn(2, 50, 4)
    greedy = controller.act(params, features)
    assert torch.equal(greedy.argmax(-1), controller.logits(params, features).argmax(-1))
    sampled = controller.act(params, features, sample=True)
    for actions in (greedy, sampled):
        assert set(actions.unique().tolist()) == {0.0, 1.0} and torch.equal(
            actions.sum(-1), torch.ones(2, 50)
        )
    assert not torch.equal(greedy, sampled)


def test_the_controller_acts_on_a_sampled_z_as_world_models_encode_obs() -> None:
    """carracing/model.py encode_obs: z = mu + exp(logvar / 2) * N(0, 1), not the mean mu."""
    model = _mdnrnn().eval()
    with torch.no_grad():  # every frame encodes to mu 0.5, logvar log 4 (std 2)
        for layer, value in ((model.vae.encoder.mu, 0.5), (model.vae.encoder.logvar, np.log(4.0))):
            layer.weight.zero_()
            layer.bias.fill_(value)
    controller = Controller(model.feature_dim, 1, False)
    params = torch.zeros(1, controller.num_params)
    params[0, 0] = 1.0  # W[z_0] = 1, all else 0: action = tanh(z_0)
    agent = ControllerAgent(model, controller, params)
    torch.manual_seed(3)
    z0 = 0.5 + 2.0 * torch.randn(1, 4)[0, 0]  # the one draw observe makes for this frame
    torch.manual_seed(3)
    action, (posterior, _) = agent.act(torch.zeros(1, SIZE, SIZE, 3, dtype=torch.uint8), torch.tensor([True]))
    torch.testing.assert_close(action, torch.tanh(z0).reshape(1, 1))
    assert posterior["z"][0, 0] != 0.5


# ---- the dream ----


def test_batched_dream_equals_per_candidate_loop() -> None:
    """One (P*R)-row dream gives each candidate the returns it gets alone, on a real MDN-RNN."""
    model = _mdnrnn(action_dim=2).eval()
    zk = model.z_dim * model.mixtures
    with torch.no_grad():  # make the mixture deterministic: one component, std e^-20
        model.mdn.weight[:zk] = 0
        model.mdn.weight[2 * zk :] = 0
        model.mdn.bias[:zk] = torch.tensor([50.0, 0.0]).repeat(model.z_dim)
        model.mdn.bias[2 * zk :] = -20.0
        model.done_head.weight.mul_(20.0)  # episode ends vary with h
    controller = Controller(model.feature_dim, 2, False)
    torch.manual_seed(1)
    params = torch.randn(5, controller.num_params)
    starts = {"z": torch.randn(3, model.z_dim), "h": torch.randn(3, 8), "c": torch.randn(3, 8)}
    batched = dream_returns(model, controller, params, starts, horizon=12)
    looped = torch.cat(
        [dream_returns(model, controller, params[p : p + 1], starts, horizon=12) for p in range(5)]
    )
    assert batched.shape == (5, 3)
    torch.testing.assert_close(batched, looped, atol=1e-4, rtol=1e-4)
    assert batched.std() > 0


class ToyModel:
    """A hand-written WorldModel: the state drifts with the action; reward = action . (1, -1) per step."""

    feature_dim, action_dim, discrete, image_size = 3, 2, False, SIZE

    def __init__(self) -> None:
        self.mix = torch.tensor([[0.5, -0.2, 0.1], [0.3, 0.4, -0.5]])

    def initial(self, batch_size: int) -> State:
        return {"x": torch.zeros(batch_size, 3), "r": torch.zeros(batch_size)}

    def imagine(self, state: State, action: torch.Tensor) -> State:
        return {
            "x": torch.tanh(0.8 * state["x"] + action @ self.mix),
            "r": action @ torch.tensor([1.0, -1.0]),
        }

    def features(self, state: State) -> torch.Tensor:
        return state["x"]

    def reward(self, state: State) -> torch.Tensor:
        return state["r"]

    def cont(self, state: State) -> torch.Tensor:
        return torch.ones_like(state["r"])


def _toy_fitness(calls: list | None = None, fail_at: int | None = None):
    model, controller = ToyModel(), Controller(3, 2, False)

    def fitness(params: np.ndarray, seeds: np.ndarray) -> np.ndarray:  # (P, n), (R,) -> (P, R)
        if calls is not None:
            calls.append(len(seeds))
            if fail_at is not None and len(calls) == fail_at:
                raise KeyboardInterrupt
        starts = {
            "x": torch.from_numpy(np.random.default_rng(seeds).normal(size=(len(seeds), 3))).float(),
            "r": torch.zeros(len(seeds)),
        }
        params_t = torch.as_tensor(params, dtype=torch.float32)
        return dream_returns(model, controller, params_t, starts, horizon=10).double().numpy()

    return fitness, controller.num_params


def test_cmaes_improves_toy_fitness(tmp_path: Path) -> None:
    fitness, n = _toy_fitness()
    best_calls = []
    state = evolve(
        fitness,
        n,
        tmp_path,
        population=8,
        rollouts=2,
        generations=8,
        sigma=0.1,
        eval_every=4,
        eval_rollouts=4,
        seed=0,
        on_best=lambda *a: best_calls.append(a),
        progress=False,
    )
    history = state["history"]
    assert [h["generation"] for h in history] == list(range(8))
    assert history[0]["mean"] < 0.5  # near the zero policy (return 0); the best possible return is 20
    assert history[-1]["mean"] > history[0]["mean"] + 5 and state["best"]["score"] > 10
    assert best_calls and best_calls[-1][1] == state["best"]["score"]
    assert list(
        tmp_path.glob("events.out.tfevents.*")
    )  # TensorBoard events in the run folder, as Lightning's
    assert read_evolution(tmp_path / "checkpoints" / LAST)["generation"] == 8
    rows = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    assert rows[0] == "generation,best,mean,std,sigma,eval,seconds" and len(rows) == 1 + 8
    assert rows[1].split(",")[5] == "" and rows[4].split(",")[5] != ""  # eval after generations 3 and 7 only


def test_resume_after_interrupt_continues_with_identical_es_state(tmp_path: Path) -> None:
    kwargs = dict(
        population=6, rollouts=2, generations=4, eval_every=2, eval_rollouts=3, seed=3, progress=False
    )
    fitness, n = _toy_fitness()
    straight = evolve(fitness, n, tmp_path / "straight", **kwargs)

    calls: list[int] = []
    fitness, n = _toy_fitness(calls, fail_at=4)  # calls: gen 0, gen 1, eval after gen 1, gen 2 <- interrupted
    with pytest.raises(KeyboardInterrupt):
        evolve(fitness, n, tmp_path / "resumed", **kwargs)
    checkpoints = tmp_path / "resumed" / "checkpoints"
    assert read_evolution(checkpoints / LAST)["generation"] == 2
    assert not list(checkpoints.glob("step*.ckpt"))  # checkpoint_every 100: none after 2 generations
    calls.clear()
    fitness, n = _toy_fitness(calls)
    resumed = evolve(fitness, n, tmp_path / "resumed", ckpt_path="last", **kwargs)
    assert calls == [2, 2, 3]  # generations 2 and 3 only, then the final evaluation

    strip = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]
    assert strip(resumed["history"]) == strip(straight["history"])
    np.testing.assert_array_equal(resumed["es"].mean, straight["es"].mean)
    assert resumed["es"].sigma == straight["es"].sigma
    np.testing.assert_array_equal(resumed["es"].sm.C, straight["es"].sm.C)
    np.testing.assert_array_equal(resumed["best"]["params"], straight["best"]["params"])
    with pytest.raises(ConfigError, match="leave out --ckpt_path"):
        evolve(fitness, n + 1, tmp_path / "resumed", ckpt_path="last", **kwargs)


def test_without_ckpt_path_a_run_starts_over_and_step_checkpoints_resume_from_their_generation(
    tmp_path: Path,
) -> None:
    kwargs = dict(population=6, rollouts=2, eval_every=2, eval_rollouts=3, seed=3, progress=False)
    fitness, n = _toy_fitness()
    evolve(fitness, n, tmp_path, generations=4, checkpoint_every=2, **kwargs)
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt", "step2.ckpt", "step4.ckpt"]
    assert read_evolution(checkpoints / "step2.ckpt")["generation"] == 2
    again = evolve(
        fitness, n, tmp_path, generations=1, **kwargs
    )  # like Lightning: no --ckpt_path, a fresh run
    assert [h["generation"] for h in again["history"]] == [0]
    calls: list[int] = []
    fitness, n = _toy_fitness(calls)
    from_step = evolve(fitness, n, tmp_path, generations=3, ckpt_path=checkpoints / "step2.ckpt", **kwargs)
    assert [h["generation"] for h in from_step["history"]] == [0, 1, 2] and calls == [2, 3]
    assert len((tmp_path / "csv" / "version_2" / "metrics.csv").read_text().splitlines()) == 1 + 1
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        evolve(fitness, n, tmp_path, ckpt_path=tmp_path / "nope.ckpt", **kwargs)


def test_a_run_folder_from_before_checkpoints_resumes_from_its_evolution_pkl(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import pickle

    kwargs = dict(population=6, rollouts=2, eval_every=1, eval_rollouts=2, seed=3, progress=False)
    fitness, n = _toy_fitness()
    old = evolve(fitness, n, tmp_path / "new", generations=2, task="rollout_steps=200", **kwargs)
    old["task"] = "max_steps=200"  # what a run of the old controller recorded for the same fitness
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "evolution.pkl").write_bytes(pickle.dumps(old))
    resumed = evolve(
        fitness, n, tmp_path / "old", generations=3, ckpt_path="last", task="rollout_steps=200", **kwargs
    )
    assert [h["generation"] for h in resumed["history"]] == [0, 1, 2]
    assert (
        resumed["best"]["score"] >= old["best"]["score"]
    )  # the same task after the rename: the best is kept
    assert read_evolution(tmp_path / "old" / "checkpoints" / LAST)["generation"] == 3


def test_resume_with_another_task_keeps_the_search_and_forgets_the_best(tmp_path: Path) -> None:
    """A curriculum (e.g. short episodes, then full ones): scores of the old task are not comparable."""
    kwargs = dict(population=6, rollouts=2, eval_every=1, eval_rollouts=2, seed=3, progress=False)
    fitness, n = _toy_fitness()
    short = evolve(fitness, n, tmp_path, generations=2, task="rollout_steps=200", **kwargs)
    assert short["best"]["generation"] in (0, 1)
    easier = lambda params, seeds: fitness(params, seeds) - 100.0  # the new task scores lower
    kwargs["ckpt_path"] = "last"
    full = evolve(easier, n, tmp_path, generations=3, task="rollout_steps=None", **kwargs)
    assert [h["generation"] for h in full["history"]] == [0, 1, 2]  # the search went on
    assert full["best"]["generation"] == 2 and full["best"]["score"] < -50  # best of the new task only
    assert full["task"] == "rollout_steps=None"
    same = evolve(easier, n, tmp_path, generations=3, task="rollout_steps=None", **kwargs)
    assert same["best"]["score"] == full["best"]["score"]  # the same task keeps its best


# ---- the real environment ----


def test_real_fitness_in_two_spawn_workers_matches_one_process(checkpoints: dict[str, str]) -> None:
    torch.manual_seed(0)
    n = Controller(12, 1, False).num_params  # MDN-RNN features: z 4 + h 8
    params, seeds = 0.5 * np.random.default_rng(0).normal(size=(3, n)), np.array([11, 12])
    local = RealFitness(checkpoints["mdnrnn"], "Pendulum-v1", size=SIZE, rollout_steps=15, workers=1)
    pooled = RealFitness(checkpoints["mdnrnn"], "Pendulum-v1", size=SIZE, rollout_steps=15, workers=2)
    try:
        expected, got = local(params, seeds), pooled(params, seeds)
    finally:
        local.close()
        pooled.close()
    assert got.shape == (3, 2) and np.all(got < 0)  # Pendulum rewards are negative
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert len(np.unique(got.round(3))) > 1


class ScriptedRewards(gym.Env):
    """16 px frames, a 1-dim action, and rewards read from a list (then -0.1 each step) for 100 steps."""

    observation_space = gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, rewards: list[float]) -> None:
        self.rewards, self.steps = rewards, 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.steps = 0
        return np.zeros(self.observation_space.shape, np.uint8), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = self.rewards[self.steps] if self.steps < len(self.rewards) else -0.1
        self.steps += 1
        return np.zeros(self.observation_space.shape, np.uint8), reward, False, self.steps >= 100, {}


def test_patience_ends_an_episode_after_steps_without_progress(checkpoints: dict[str, str]) -> None:
    model = MDNRNN.load_from_checkpoint(checkpoints["mdnrnn"]).eval()
    controller = Controller(model.feature_dim, model.action_dim, model.discrete)
    agent = ControllerAgent(model, controller, torch.zeros(controller.num_params))
    env = ScriptedRewards([1.0, 1.0, -0.1, -0.1, -0.1, -0.1, 1.0])
    # steps 0-1 and 6 pay; idle steps 2-5 (4 of them) do not reach patience 5; 7-11 do: 12 steps played
    assert rollout(agent, env, seed=0, patience=5) == pytest.approx(3.0 - 0.1 * 9)
    assert rollout(agent, env, seed=0) == pytest.approx(3.0 - 0.1 * 97)  # without it: all 100 steps
    assert rollout(agent, env, seed=0, patience=5, rollout_steps=4) == pytest.approx(2.0 - 0.1 * 2)
    with pytest.raises(ConfigError, match="patience"):
        controller_main(["--model", checkpoints["mdnrnn"], "--env", "Pendulum-v1", "--patience", "0"])


def _recipe(tmp_path: Path, text: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


def _eval_line(printed: str) -> list[str]:
    """The `worldmodels eval ...` line a run suggests, as argv for cli.main."""
    line = next(line for line in printed.splitlines() if line.startswith("evaluate it: "))
    words = shlex.split(line.removeprefix("evaluate it: "))
    assert words[:2] == ["worldmodels", "eval"]
    return words[1:]


def test_cli_real_fitness_then_the_suggested_worldmodels_eval_line_runs(
    tmp_path: Path, checkpoints: dict[str, str], capsys: pytest.CaptureFixture
) -> None:
    # z = the VAE mean, so that fitness rollouts and `worldmodels eval` filter frames identically
    out = tmp_path / "run"
    recipe = _recipe(
        tmp_path,
        f"model: {checkpoints['mdnrnn_mean']}\nout: {out}\nfitness: real\nenv: Pendulum-v1\n"
        "population: 4\nrollouts: 1\ngenerations: 2\neval_every: 1\neval_rollouts: 1\n"
        f"size: {SIZE}\nrollout_steps: 8\naction_repeat: 2\nprogress: false\n",
    )
    cli.main(["agent", "controller", "-c", recipe])
    printed = capsys.readouterr().out
    ckpt = out / "checkpoints" / "last.ckpt"
    assert f"{ckpt}: 2 generations, best mean" in printed
    argv = _eval_line(printed)
    assert argv[:7] == ["eval", "--ckpt", str(ckpt), "--env", "Pendulum-v1", "--action_repeat", "2"]
    agent = load_agent(ckpt)
    assert isinstance(agent, ControllerAgent) and (agent.action_dim, agent.discrete, agent.image_size) == (
        1,
        False,
        16,
    )
    checkpoint = torch.load(ckpt, weights_only=False)
    assert checkpoint["world_model"]["state_dict"]  # the model travels inside
    assert checkpoint["trained_on"] == {"env": "Pendulum-v1", "action_repeat": 2}
    state = read_evolution(ckpt)  # the CMA-ES state travels inside too: no evolution.pkl
    assert state["generation"] == 2 and len(state["history"]) == 2 and not (out / "evolution.pkl").exists()
    np.testing.assert_array_equal(agent.params[0].numpy(), state["best"]["params"].astype(np.float32))
    assert (out / "config.yaml").is_file() and "rollout_steps: 8" in (out / "config.yaml").read_text()
    assert len((out / "csv" / "version_0" / "metrics.csv").read_text().splitlines()) == 1 + 2

    argv[argv.index("--episodes") + 1] = "1"
    cli.main([*argv, "--seed", "5"])  # the printed line, as printed (but 1 episode)
    printed = capsys.readouterr().out
    env = envs.make("Pendulum-v1", size=SIZE, action_repeat=2)
    expected = rollout(agent, env, seed=5)  # what the fitness measures is what `worldmodels eval` plays
    assert f"Pendulum-v1: return {expected:.1f} +- 0.0" in printed
    # the action repeat is read from the checkpoint, and --action-repeat spelled with a hyphen works as well
    for spelling in ([], ["--action-repeat", "2"], ["--action_repeat=2"]):
        cli.main(
            ["eval", "--ckpt", str(ckpt), "--env", "Pendulum-v1", "--episodes", "1", "--seed", "5", *spelling]
        )
        assert f"Pendulum-v1: return {expected:.1f} +- 0.0" in capsys.readouterr().out

    # --ckpt_path last goes on from generation 2 with the saved search; --max_steps still works, with a note
    cli.main(["agent", "controller", "-c", recipe, "--generations", "3", "--ckpt_path", "last"])
    printed = capsys.readouterr().out
    assert f"resuming from {ckpt}" in printed and f"{ckpt}: 3 generations" in printed
    resumed = read_evolution(ckpt)
    assert [h["generation"] for h in resumed["history"]] == [0, 1, 2]
    assert resumed["history"][:2] == state["history"]
    assert len((out / "csv" / "version_1" / "metrics.csv").read_text().splitlines()) == 1 + 1
    cli.main(
        ["agent", "controller", "-c", recipe, "--generations", "4", "--resume", "true", "--max_steps", "8"]
    )
    printed = capsys.readouterr().out
    assert (
        "--resume is deprecated: use --ckpt_path last" in printed
        and "--max_steps is now --rollout_steps" in printed
    )
    assert read_evolution(ckpt)["generation"] == 4


def test_a_missing_or_wrong_model_checkpoint_says_how_to_make_a_world_model(
    tmp_path: Path, checkpoints: dict[str, str], capsys: pytest.CaptureFixture
) -> None:
    vae = _save(VAE(SIZE, 4, 0.25), tmp_path / "vae.ckpt")
    for model, says in (
        (
            [],
            "model: no world-model checkpoint given; the controller evolves a policy on a trained world model",
        ),
        (["--model", str(tmp_path / "nope.ckpt")], f"model: {tmp_path / 'nope.ckpt'}: no such checkpoint;"),
        (["--model", vae], f"model: {vae} holds a VAE (V) alone; the controller needs V + M"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["agent", "controller", "--env", "Pendulum-v1", "--out", str(tmp_path / "run"), *model])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert (
            err.count("\n") == 1 and says in err and "worldmodels fit -c configs/carracing_mdnrnn.yaml" in err
        )


def test_every_option_of_every_command_has_a_help_text(capsys: pytest.CaptureFixture) -> None:
    parser = build_parser()
    bare = [a.dest for a in parser._actions if not a.help]
    assert bare == []
    with pytest.raises(SystemExit):
        cli.main(["agent", "controller", "--help"])
    shown = capsys.readouterr().out
    assert "trained world model (--model)" in shown and "--ckpt_path CKPT_PATH" in shown
    assert "cut each fitness episode after this many" in shown
    subparsers = next(a for a in cli.build_parser()._actions if a.dest == "command")
    for name, sub in subparsers.choices.items():
        bare = [a.dest for a in sub._actions if not a.help]
        assert bare == [], name


def test_options_work_spelled_with_hyphens_or_underscores() -> None:
    assert cli.underscore_flags(
        [
            "collect",
            "--action-repeat",
            "2",
            "--max-steps=5",
            "-c",
            "a-b.yaml",
            "--out",
            "x-y",
            "--data.action-repeat",
        ]
    ) == [
        "collect",
        "--action_repeat",
        "2",
        "--max_steps=5",
        "-c",
        "a-b.yaml",
        "--out",
        "x-y",
        "--data.action_repeat",
    ]


def test_collect_takes_both_spellings_of_action_repeat_and_rollout_steps(tmp_path: Path) -> None:
    common = ["collect", "--env", "Pendulum-v1", "--episodes", "1", "--size", str(SIZE)]
    for i, spelling in enumerate(
        (["--action-repeat", "2", "--max-steps", "5"], ["--action_repeat", "2", "--rollout_steps", "5"])
    ):
        cli.main([*common, "--out", str(tmp_path / str(i)), *spelling])
        info = cli.summarize(tmp_path / str(i))
        assert (info["action_repeat"], info["steps"]) == (2, 1 + 5)  # the reset frame, then 5 agent steps


@pytest.mark.parametrize("kind", ["mdnrnn", "rssm"])
def test_cli_dream_fitness_on_any_world_model(
    tmp_path: Path, checkpoints: dict[str, str], store: str, kind: str, capsys: pytest.CaptureFixture
) -> None:
    """The same code evolves a controller on an MDN-RNN or an RSSM, through the shared interface; the eval line
    names the env the dream store was collected in, and a controller checkpoint serves as a world model."""
    out = tmp_path / kind
    controller_main(
        [
            "-c",
            str(CONFIGS / "controller_carracing_dream.yaml"),
            "--model",
            checkpoints[kind],
            "--out",
            str(out),
            "--data",
            store,
            "--population",
            "4",
            "--rollouts",
            "2",
            "--generations",
            "2",
            "--horizon",
            "5",
            "--context",
            "3",
            "--eval_every",
            "2",
            "--eval_rollouts",
            "2",
            "--device",
            "cpu",
            "--temperature",
            "1.15" if kind == "mdnrnn" else "null",
            "--progress",
            "false",
        ]
    )
    agent = ControllerAgent.load(out / "checkpoints" / LAST)
    action, state = agent.act(torch.zeros(2, SIZE, SIZE, 3, dtype=torch.uint8), torch.tensor([True, True]))
    assert action.shape == (2, 1) and action.abs().max() <= 1
    action, _ = agent.act(
        torch.zeros(2, SIZE, SIZE, 3, dtype=torch.uint8), torch.tensor([False, True]), state
    )
    assert action.shape == (2, 1)
    argv = _eval_line(capsys.readouterr().out)
    assert argv[:5] == ["eval", "--ckpt", str(out / "checkpoints" / LAST), "--env", "Pendulum-v1"]
    again = [  # --world_model.ckpt and --trainer.default_root_dir: PlaNet's and Dreamer's names of --model, --out
        "--world_model.ckpt",
        str(out / "checkpoints" / LAST),
        "--trainer.default_root_dir",
        str(tmp_path / "again"),
        "--fitness",
        "real",
    ]
    again += ["--env", "Pendulum-v1", "--population", "2", "--rollouts", "1", "--generations", "1"]
    controller_main(
        [*again, "--eval_rollouts", "1", "--size", str(SIZE), "--rollout_steps", "3", "--progress", "false"]
    )
    assert read_evolution(tmp_path / "again" / "checkpoints" / LAST)["generation"] == 1
    if kind == "rssm":
        with pytest.raises(ConfigError, match="no sampling temperature"):
            controller_main(
                [
                    "-c",
                    str(CONFIGS / "controller_carracing_dream.yaml"),
                    "--model",
                    checkpoints[kind],
                    "--out",
                    str(out),
                    "--data",
                    store,
                    "--device",
                    "cpu",
                ]
            )


# ---- the recipes ----


@pytest.mark.parametrize("recipe", sorted(CONFIGS.glob("controller_*.yaml")), ids=lambda p: p.name)
def test_recipes_parse(recipe: Path) -> None:
    cfg = parse_config(["-c", str(recipe)])
    assert cfg.population >= 2 and cfg.model.endswith(".ckpt")


def test_unknown_config_key_exits_with_status_2(tmp_path: Path, checkpoints: dict[str, str]) -> None:
    recipe = _recipe(tmp_path, f"model: {checkpoints['mdnrnn']}\npopulaton: 4\n")  # typo
    for argv in (
        ["agent", "controller", "-c", recipe],
        ["agent", "controller", "--model", "m.ckpt", "--nope", "1"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
