"""Pixel environments: spaces, seeding, action repeat, errors, vector envs and space JSON."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from gymnasium import spaces

from worldmodels import envs
from worldmodels.errors import ConfigError, UnknownEnvError

SIZE = 32


def _fixed_action(space: spaces.Space) -> np.ndarray | int:
    return 1 if envs.is_discrete(space) else np.full(space.shape, 0.5, np.float32)


def _rollout(spec: str, seed: int | None, steps: int = 3, **kwargs) -> tuple[np.ndarray, list[float]]:
    """Frames (steps + 1, H, W, 3) and rewards of a fixed-action rollout from the first reset."""
    env = envs.make(spec, size=SIZE, seed=seed, **kwargs)
    obs, _ = env.reset()
    frames, rewards = [obs], []
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(_fixed_action(env.action_space))
        frames.append(obs)
        rewards.append(reward)
    env.close()
    return np.stack(frames), rewards


def _check_pixels(env, obs: np.ndarray) -> None:
    assert env.observation_space == spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
    assert obs.shape == (SIZE, SIZE, 3) and obs.dtype == np.uint8
    assert obs.std() > 0  # a rendered scene, not a blank frame


def test_dmc_env_renders_pixels_with_float32_box_actions():
    env = envs.make("dmc:cartpole-swingup", size=SIZE, seed=0)
    obs, _ = env.reset()
    _check_pixels(env, obs)
    assert env.action_space == spaces.Box(-1.0, 1.0, (1,), np.float32)
    obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    _check_pixels(env, obs)
    assert isinstance(reward, float) and not terminated and not truncated
    env.close()


@pytest.mark.parametrize(
    ("spec", "action_space"),
    [
        ("CartPole-v1", spaces.Discrete(2)),  # state observations: pixels come from env.render()
        ("Pendulum-v1", spaces.Box(-1.0, 1.0, (1,), np.float32)),  # torque [-2, 2] rescaled to [-1, 1]
        ("CarRacing-v3", spaces.Box(-1.0, 1.0, (3,), np.float32)),  # image observations; World Models map
    ],
)
def test_gymnasium_env_renders_pixels_with_unit_action_space(spec, action_space):
    env = envs.make(spec, size=SIZE, seed=0)
    obs, _ = env.reset()
    _check_pixels(env, obs)
    assert env.action_space == action_space
    obs, *_ = env.step(env.action_space.sample())
    _check_pixels(env, obs)
    env.close()


def test_box_actions_are_rescaled_to_the_env_bounds():
    env = envs.make("Pendulum-v1", size=SIZE, seed=0)
    env.reset()
    env.step(np.array([1.0], np.float32))
    assert env.unwrapped.last_u == pytest.approx(2.0)  # +1 is the env's max torque
    env.close()


def test_dmc_spec_splits_on_first_dash():
    specs = envs.list_specs()
    assert {"dmc:ball_in_cup-catch", "dmc:finger-turn_easy", "CarRacing-v3", "CartPole-v1"} <= set(specs)
    env = envs.make("dmc:ball_in_cup-catch", size=SIZE)
    assert env.reset()[0].shape == (SIZE, SIZE, 3)
    env.close()


@pytest.mark.parametrize("spec", ["dmc:cartpole-swingup", "Pendulum-v1"])
def test_same_seed_same_frames_different_seed_different_frames(spec):
    first, _ = _rollout(spec, seed=1)
    again, _ = _rollout(spec, seed=1)
    other, _ = _rollout(spec, seed=2)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    # the first reset() of a seeded env is reset(seed=seed)
    np.testing.assert_array_equal(first[0], envs.make(spec, size=SIZE).reset(seed=1)[0])


def test_default_action_repeat_follows_planet():
    repeats = {
        "dmc:cartpole-swingup": 8,
        "dmc:reacher-easy": 4,
        "dmc:cheetah-run": 4,
        "dmc:finger-spin": 2,
        "dmc:ball_in_cup-catch": 4,
        "dmc:walker-walk": 2,
        "dmc:quadruped-walk": 2,
        "CarRacing-v3": 1,
        "CartPole-v1": 1,
    }
    assert {spec: envs.default_action_repeat(spec) for spec in repeats} == repeats


def test_action_repeat_sums_rewards_of_the_repeated_steps():
    _, repeated = _rollout("dmc:cartpole-swingup", seed=0, steps=3)  # default repeat 8
    _, single = _rollout("dmc:cartpole-swingup", seed=0, steps=24, action_repeat=1)
    expected = [sum(single[i : i + 8]) for i in range(0, 24, 8)]
    np.testing.assert_allclose(repeated, expected, rtol=1e-6)
    assert sum(repeated) > 0


def test_action_repeat_stops_when_the_episode_terminates():
    env = envs.make("CartPole-v1", size=SIZE, action_repeat=4, seed=1)
    env.reset()
    total, terminated = 0.0, False
    while not terminated:
        _, reward, terminated, truncated, _ = env.step(1)  # always push right: falls in ~10 steps
        total += reward
    assert env.unwrapped.steps_beyond_terminated == 0  # no underlying step after the fall
    single = envs.make("CartPole-v1", size=SIZE, action_repeat=1, seed=1)
    single.reset()
    steps = 1
    while not single.step(1)[2]:
        steps += 1
    assert steps % 4 != 0  # the fall happens inside a repeated step, not at its end
    assert total == steps  # every underlying step's reward counted once


def test_dmc_time_limit_truncates():
    env = envs.make("dmc:cartpole-swingup", size=SIZE, seed=0)
    env.reset()
    steps, terminated, truncated = 0, False, False
    while not (terminated or truncated):
        _, _, terminated, truncated, _ = env.step(np.zeros(1, np.float32))
        steps += 1
    assert truncated and not terminated
    assert steps == 1000 // 8  # dm_control's 1000 physics steps at action repeat 8
    env.close()


@pytest.mark.parametrize(
    "spec", ["dmc:cartpole_swingup", "cartpole-swingup", "dmc:nope-nothing", "NoSuchEnv"]
)
def test_unknown_spec_says_how_to_list_specs(spec):
    with pytest.raises(UnknownEnvError, match="run `worldmodels envs` to list valid specs") as err:
        envs.make(spec)
    if "cartpole" in spec:
        assert "dmc:cartpole-swingup" in str(err.value)  # close match suggested


def test_bad_action_repeat_is_a_config_error():
    with pytest.raises(ConfigError, match="action_repeat"):
        envs.make("CartPole-v1", action_repeat=0)


def test_make_vector_spawns_seeded_workers():
    vector_env = envs.make_vector("dmc:cartpole-swingup", num_envs=2, size=SIZE, seed=3)
    obs, _ = vector_env.reset()
    assert obs.shape == (2, SIZE, SIZE, 3) and obs.dtype == np.uint8
    for i in range(2):  # env i is seeded with seed + i
        np.testing.assert_array_equal(
            obs[i], envs.make("dmc:cartpole-swingup", size=SIZE).reset(seed=3 + i)[0]
        )
    obs, reward, terminated, truncated, _ = vector_env.step(vector_env.action_space.sample())
    assert obs.shape == (2, SIZE, SIZE, 3) and reward.shape == (2,)
    vector_env.close()


@pytest.mark.parametrize(
    ("space", "dim", "discrete"),
    [
        (spaces.Box(np.float32([-1.0, -1.0, -0.8]), np.float32([1.0, 1.1, 0.8]), (3,), np.float32), 3, False),
        (spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8), SIZE * SIZE * 3, False),
        (spaces.Box(-np.inf, np.inf, (2, 2), np.float64), 4, False),
        (spaces.Discrete(5), 5, True),
        (spaces.Discrete(3, start=1), 3, True),
    ],
)
def test_space_json_round_trip(space, dim, discrete):
    restored = envs.space_from_json(json.loads(json.dumps(envs.space_to_json(space))))
    assert restored == space and restored.dtype == space.dtype
    assert envs.action_dim(space) == dim and envs.is_discrete(space) == discrete


def test_brownian_policy_wanders_inside_the_box_and_repeats_with_its_seed(tmp_path):
    from worldmodels.collect import BROWNIAN_DT, collect
    from worldmodels.store import EpisodeStore

    collect(
        "Pendulum-v1", 2, tmp_path / "b", size=16, seed=3, max_steps=60, policy="brownian", progress=False
    )
    collect("Pendulum-v1", 1, tmp_path / "u", size=16, seed=3, max_steps=60, progress=False)
    collect(
        "Pendulum-v1", 1, tmp_path / "again", size=16, seed=3, max_steps=60, policy="brownian", progress=False
    )
    brownian, uniform = EpisodeStore(tmp_path / "b"), EpisodeStore(tmp_path / "u")
    actions = brownian.episode(0)["action"][1:]  # step 0 holds the zero action before the first frame
    assert actions.shape == (60, 1) and np.abs(actions).max() <= 1.0
    steps = np.diff(actions[:, 0])
    inside = np.abs(actions[1:, 0]) < 1.0  # steps that the box did not clip
    assert np.std(steps[inside]) == pytest.approx(np.sqrt(BROWNIAN_DT), rel=0.35)
    assert np.abs(np.diff(uniform.episode(0)["action"][1:, 0])).mean() > 3 * np.abs(steps).mean()
    again = EpisodeStore(tmp_path / "again").episode(0)["action"]
    walks = [brownian.episode(i)["action"] for i in range(2)]  # seeds 3 and 4, in the store's file order
    assert sum(np.array_equal(again, walk) for walk in walks) == 1  # the same seed, the same walk
    assert not np.array_equal(brownian.episode(1)["action"], brownian.episode(0)["action"])


def test_brownian_policy_needs_continuous_actions(tmp_path):
    from worldmodels.collect import collect

    with pytest.raises(ConfigError, match="Box"):
        collect("CartPole-v1", 1, tmp_path / "c", size=16, policy="brownian", progress=False)
    with pytest.raises(ConfigError, match="uniform, brownian"):
        collect("Pendulum-v1", 1, tmp_path / "p", size=16, policy="gaussian", progress=False)
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").glob("*.npz"))


# ---- CarRacing as World Models sees it (hardmaru/WorldModelsExperiments, carracing/) ----


def test_carracing_tanh_zero_is_half_gas_and_no_brake_as_world_models_get_action(monkeypatch):
    """carracing/model.py get_action: steer = a[0], gas = (a[1] + 1) / 2, brake = clip(a[2], 0, 1)."""
    env = envs.make("CarRacing-v3", size=SIZE, seed=0)
    env.reset()
    received = []
    base_step = env.unwrapped.step
    monkeypatch.setattr(env.unwrapped, "step", lambda a: (received.append(np.array(a)), base_step(a))[1])
    for action in ([0.0, 0.0, 0.0], [0.5, -1.0, -0.4], [-1.0, 1.0, 0.6], [0.2, 0.5, 1.0]):
        env.step(np.array(action, np.float32))
    expected = [[0.0, 0.5, 0.0], [0.5, 0.0, 0.0], [-1.0, 1.0, 0.6], [0.2, 0.75, 1.0]]  # (steer, gas, brake)
    np.testing.assert_allclose(np.stack(received), expected, atol=1e-6)
    assert env.action_space == spaces.Box(-1.0, 1.0, (3,), np.float32)
    env.close()


def _band_frame() -> np.ndarray:
    """A 96x96 frame: value 10 on the 84 playfield rows, 200 on the 12 dashboard rows below."""
    frame = np.full((96, 96, 3), 10, np.uint8)
    frame[84:] = 200
    return frame


def test_preprocess_keeps_the_playfield_rows_then_resizes():
    cropped = envs.preprocess(_band_frame(), 64, rows=84)
    assert cropped.shape == (64, 64, 3) and np.all(cropped == 10)  # no dashboard pixel is left
    whole = envs.preprocess(_band_frame(), 64)
    assert whole[-1].min() > 150 and np.all(whole[:50] == 10)  # 12/96 of the frame: the bottom 8 rows
    assert envs.crop_rows("CarRacing-v3") == 84 and envs.crop_rows("CarRacing-v3", crop=False) is None
    assert envs.crop_rows("Pendulum-v1") is None and envs.crop_rows("dmc:cartpole-swingup") is None


def _carracing_frame(rows: int | None) -> np.ndarray:
    """CarRacing's reset frame of seed 0, rows 0:rows, resized with PIL bilinear to 64x64 by hand."""
    import gymnasium as gym
    from PIL import Image

    raw_env = gym.make("CarRacing-v3")
    raw, _ = raw_env.reset(seed=0)
    raw_env.close()
    assert raw.shape == (96, 96, 3)
    return np.asarray(Image.fromarray(raw[:rows]).resize((64, 64), Image.Resampling.BILINEAR))


def test_carracing_frames_are_cropped_to_rows_0_84_before_the_resize_as_world_models_process_frame():
    """carracing/env.py _process_frame: frame[0:84, :, :], then 64x64; crop=False squashes the whole frame."""
    for crop, rows in ((None, 84), (True, 84), (False, None)):
        env = envs.make("CarRacing-v3", size=64, seed=0, crop=crop)
        obs, _ = env.reset()
        env.close()
        np.testing.assert_array_equal(obs, _carracing_frame(rows))


def test_collected_carracing_episodes_hold_the_cropped_frames_and_record_their_rows(tmp_path):
    import json

    from worldmodels.collect import collect
    from worldmodels.store import EpisodeStore

    collect("CarRacing-v3", 1, tmp_path / "crop", size=64, seed=0, max_steps=2, progress=False)
    store = EpisodeStore(tmp_path / "crop")
    np.testing.assert_array_equal(store.episode(0)["image"][0], _carracing_frame(84))
    assert store.metadata["crop_rows"] == 84
    collect("CarRacing-v3", 1, tmp_path / "whole", size=64, seed=0, max_steps=2, progress=False, crop=False)
    whole = EpisodeStore(tmp_path / "whole")
    np.testing.assert_array_equal(whole.episode(0)["image"][0], _carracing_frame(None))
    assert whole.metadata["crop_rows"] is None
    with pytest.raises(
        ConfigError, match="crop=False"
    ):  # cropped episodes do not join a store of whole frames
        collect("CarRacing-v3", 1, tmp_path / "whole", size=64, seed=0, max_steps=2, progress=False)
    legacy = json.loads((tmp_path / "whole" / "metadata.json").read_text())
    del legacy["crop_rows"]  # a store written before the crop
    (tmp_path / "whole" / "metadata.json").write_text(json.dumps(legacy))
    with pytest.raises(ConfigError, match="new --out"):
        collect(
            "CarRacing-v3", 1, tmp_path / "whole", size=64, seed=0, max_steps=2, progress=False, crop=False
        )


@pytest.mark.parametrize("spec", ["dmc:cartpole-swingup", "CartPole-v1"])
def test_envs_pass_gymnasiums_checker_and_their_spec_recreates_them(spec):
    import warnings

    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env

    env = envs.make(spec, size=16, action_repeat=2, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checker's advice on wrapped envs; errors still raise
        check_env(env, skip_render_check=True)
    again = gym.make(env.spec)  # what Minari's DataCollector and gymnasium's tools do
    first, _ = env.reset(seed=5)
    second, _ = again.reset(seed=5)
    assert np.array_equal(first, second)  # same task, size, wrappers and seed: the same frame
    assert [w.name for w in env.spec.additional_wrappers][-1] == "SeedFirstReset"
    env.close()
    again.close()


def test_rendering_a_pygame_env_prints_no_display_noise():
    import subprocess
    import sys

    code = "from worldmodels import envs; e = envs.make('CartPole-v1', size=16); e.reset(seed=0); e.step(0)"
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "SDL_VIDEODRIVER")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "XDG_RUNTIME_DIR" not in result.stderr
