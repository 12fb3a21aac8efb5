"""Goal reaching (agents/goals.py): stores that record reset seeds and may hold no rewards, start states replayed
from them, the Wilson interval, and `worldmodels eval --objective goal:STORE` on a reward-free world model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from agents.goals import (
    SUCCESS_FRACTION,
    draw_pairs,
    goal_store,
    make_env,
    pixel_rmse,
    replay_start,
    wilson_interval,
)
from tests.cli import run_cli
from worldmodels.collect import collect
from worldmodels.errors import ConfigError, StoreError
from worldmodels.store import METADATA, EpisodeStore, load_episode, write_episode

POINT = "worldmodels.pixel_point:PixelPoint-v0"
SIZE = 16
SMALL_CEM = (
    '{"horizon": 4, "candidates": 32, "iterations": 2, "top_k": 8}'  # seconds on one core, not PlaNet's
)


def one_line_error(result, *fragments: str) -> str:
    """Exit status 2 and exactly one `worldmodels: error:` line holding every fragment; returns that line."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.startswith("worldmodels: error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def without_seeds(store: Path) -> None:
    """Rewrite every episode file of ``store`` without its ``seed``, as stores were written before seeds."""
    for path in sorted(store.glob("*.npz")):
        episode = {k: v for k, v in load_episode(path).items() if k != "seed"}
        write_episode(store, episode, path.name)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A reward-free PixelPoint store (collected as `--no_rewards` does) and a tiny RSSM `worldmodels fit` on it
    for 10 steps: enough to run the goal protocol end to end, not to reach goals."""
    root = tmp_path_factory.mktemp("goals")
    collect(POINT, 6, root / "store", size=SIZE, action_repeat=1, seed=0, progress=False, rewards=False)
    result = run_cli(
        "fit", "-c", "configs/tiny_rssm.yaml", "--data.path", str(root / "store"),
        "--trainer.max_steps", "10", "--trainer.default_root_dir", str(root / "fit"),
        "--trainer.enable_progress_bar", "false", "--checkpoint_every", "10",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return {"root": root, "store": root / "store", "ckpt": root / "fit" / "checkpoints" / "last.ckpt"}


# --- stores: recorded seeds, no rewards ----------------------------------------------------------------------


def test_collect_records_each_episodes_seed_and_replaying_it_reaches_the_stored_frames(tmp_path):
    collect(POINT, 3, tmp_path / "store", size=SIZE, action_repeat=1, seed=40, progress=False)
    store = EpisodeStore(tmp_path / "store")
    episodes = [store.episode(i) for i in range(len(store))]
    assert sorted(int(e["seed"]) for e in episodes) == [40, 41, 42]
    env, spec = make_env(store, None, None)
    assert spec == POINT
    for episode in episodes:
        for t in (0, 7, len(episode["image"]) - 1):
            frame = replay_start(env, episode, t, "episode")
            np.testing.assert_array_equal(frame, episode["image"][t])
    other = dict(episodes[0], action=-episodes[0]["action"])  # actions the episode did not take
    with pytest.raises(StoreError, match="not deterministic under replay"):
        replay_start(env, other, 10, "episode")
    with pytest.raises(ConfigError, match="collected with 1"):
        make_env(store, None, 2)  # another action repeat would replay other states


def test_no_rewards_stores_zeros_and_says_so_in_metadata_provenance_and_info(tmp_path):
    store = tmp_path / "store"
    result = run_cli("collect", "--env", POINT, "--episodes", "2", "--size", str(SIZE), "--out", str(store),
                     "--action_repeat", "1", "--no_rewards")  # fmt: skip
    assert result.returncode == 0 and "rewards not stored" in result.stdout, result.stderr[-2000:]
    loaded = EpisodeStore(store)
    assert all(not loaded.episode(i)["reward"].any() for i in range(2))  # PixelPoint pays 1 - |x| > 0 a step
    meta = json.loads((store / METADATA).read_text())
    assert meta["rewards"] is False and meta["provenance"][-1]["rewards"] is False
    info = run_cli("info", str(store))
    assert "rewards: False" in info.stdout and "none stored (collected with --no_rewards)" in info.stdout
    one_line_error(
        run_cli("collect", "--env", POINT, "--episodes", "1", "--size", str(SIZE), "--out", str(store)),
        "metadata.json",
        "without rewards",
        "add --no_rewards",
    )


def test_old_stores_without_seeds_still_load_and_train_windows_ignore_the_seed(tmp_path):
    collect(POINT, 2, tmp_path / "store", size=SIZE, action_repeat=1, seed=0, progress=False)
    without_seeds(tmp_path / "store")
    store = EpisodeStore(tmp_path / "store", on_corrupt="raise")
    assert len(store) == 2 and "seed" not in store.episode(0)
    assert set(store.read(0, 0, 4)) == {"image", "action", "reward", "is_first", "is_last", "is_terminal"}


# --- the protocol's pieces -----------------------------------------------------------------------------------


def test_wilson_interval_matches_hand_computed_values():
    # 8 of 10, z = 1.96: center (0.8 + 1.9208 / 10) / 1.38415 = 0.71673, half 1.96 sqrt(0.016 + 0.0096037)
    # / 1.38415 = 0.22658 -> [0.4902, 0.9433]
    low, high = wilson_interval(8, 10)
    assert math.isclose(low, 0.4902, abs_tol=1e-4) and math.isclose(high, 0.9433, abs_tol=1e-4)
    low, high = wilson_interval(0, 10)  # never 0 wide at the edge: [0, z^2 / (n + z^2)] = [0, 0.2775]
    assert low == 0.0 and math.isclose(high, 3.8415 / 13.8415, abs_tol=1e-4)
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and math.isclose(low, 1 - 3.8415 / 13.8415, abs_tol=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_pairs_are_seeded_a_fixed_offset_apart_and_never_start_at_their_goal(tmp_path):
    collect(POINT, 3, tmp_path / "store", size=SIZE, action_repeat=1, seed=0, progress=False)
    store = EpisodeStore(tmp_path / "store")
    pairs = draw_pairs(store, 50, 5, seed=3)
    assert pairs == draw_pairs(store, 50, 5, seed=3) and pairs != draw_pairs(store, 50, 5, seed=4)
    for pair in pairs:
        images = store.episode(pair.episode)["image"]
        assert pair.goal == pair.start + 5 < len(images)
        assert pixel_rmse(images[pair.start], images[pair.goal]) >= 0.01
    with pytest.raises(StoreError, match="smaller --goal_offset"):
        draw_pairs(store, 1, 40, seed=0)  # PixelPoint episodes have 31 frames


def test_goal_store_is_a_directory_objective_and_other_objectives_are_not(tmp_path):
    assert goal_store("reward") is None and goal_store("goal:picture.png") is None
    assert goal_store("goal:data/x@3:25") is None
    with pytest.raises(StoreError, match="not an episode store"):
        goal_store(f"goal:{tmp_path}")
    collect(POINT, 1, tmp_path / "store", size=SIZE, action_repeat=1, seed=0, progress=False)
    assert goal_store(f"goal:{tmp_path / 'store'}") == str(tmp_path / "store")


def test_pixel_rmse_is_in_unit_range():
    black, white = np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 255, np.uint8)
    assert pixel_rmse(black, white) == 1.0 and pixel_rmse(white, white) == 0.0
    half = black.copy()
    half[:2] = 255
    assert math.isclose(float(pixel_rmse(half, black)), math.sqrt(0.5))


# --- `worldmodels eval` on a world model fitted without rewards --------------------------------------------


def test_eval_runs_the_goal_protocol_on_a_reward_free_fit_checkpoint_and_reports_every_field(fitted):
    out = fitted["root"] / "goals.json"
    result = run_cli(
        "eval", "--ckpt", str(fitted["ckpt"]), "--objective", f"goal:{fitted['store']}", "--episodes", "3",
        "--goal_offset", "4", "--planner", "cem", "--planner_options", SMALL_CEM, "--json_out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "\ncem " in result.stdout and "\nrandom_actions " in result.stdout, result.stdout
    report = json.loads(out.read_text())
    assert report["env"] == POINT and report["budget"] == 4 and report["planner_options"]["candidates"] == 32
    assert set(report["rows"]) == {"cem", "random_actions"}
    for policy, row in report["rows"].items():
        assert (
            row["pairs"] == 3 and 0 <= row["success_ci95"][0] <= row["success_rate"] <= row["success_ci95"][1]
        )
        assert row["final_rmse"] >= 0 and row["final_rmse_se"] >= 0 and row["final_latent"] >= 0
        closer = [p[policy]["final_rmse"] < p[policy]["start_rmse"] for p in report["pairs"]]
        assert row["closer"] == np.mean(closer)
        assert (row["ms_per_action"] > 0) if policy == "cem" else row["ms_per_action"] is None
    for pair in report["pairs"]:
        assert pair["goal"] == pair["start"] + 4
        cem, random = pair["cem"], pair["random_actions"]
        assert cem["start_rmse"] == random["start_rmse"] > 0  # both start from the same replayed state
        assert cem["steps"] == random["steps"] == 4 and len(cem["seconds"]) == 4
        assert cem["success"] == (cem["final_rmse"] <= SUCCESS_FRACTION * cem["start_rmse"])


def test_eval_refuses_a_reward_objective_on_a_model_fitted_without_rewards(fitted):
    one_line_error(
        run_cli("eval", "--ckpt", str(fitted["ckpt"]), "--env", POINT, "--episodes", "1"),
        "last.ckpt",
        str(fitted["store"]),
        "holds no rewards",
        "goal:",
    )


def test_a_goal_store_without_recorded_seeds_is_one_line_error_through_the_cli(fitted, tmp_path):
    collect(POINT, 2, tmp_path / "old", size=SIZE, action_repeat=1, seed=0, progress=False)
    without_seeds(tmp_path / "old")
    one_line_error(
        run_cli(
            "eval",
            "--ckpt",
            str(fitted["ckpt"]),
            "--objective",
            f"goal:{tmp_path / 'old'}",
            "--episodes",
            "1",
            "--planner_options",
            SMALL_CEM,
        ),  # fmt: skip
        "records no reset seed",
        "re-collect",
    )


def test_planner_options_must_be_a_json_object(fitted):
    one_line_error(
        run_cli(
            "eval",
            "--ckpt",
            str(fitted["ckpt"]),
            "--objective",
            f"goal:{fitted['store']}",
            "--planner_options",
            "horizon=3",
        ),  # fmt: skip
        "--planner_options",
        "not JSON",
    )


# --- a goal image is reached on a small pixel task -----------------------------------------------------------


@pytest.mark.slow
def test_a_goal_image_is_reached_on_a_small_pixel_task(tmp_path):
    """PixelPoint without rewards: 100 random episodes, a tiny RSSM fitted for 1500 steps (a few CPU minutes),
    then 20 start/goal pairs 5 steps apart from held-out episodes; CEM toward the goal's latent must end
    closer to the goal frame than random actions and succeed more often."""
    collect(POINT, 100, tmp_path / "train", size=SIZE, action_repeat=1, seed=0, progress=False, rewards=False)
    collect(POINT, 10, tmp_path / "goals", size=SIZE, action_repeat=1, seed=10_000, progress=False)
    result = run_cli(
        "fit", "-c", "configs/tiny_rssm.yaml", "--data.path", str(tmp_path / "train"),
        "--data.batch_size", "16", "--trainer.max_steps", "1500", "--trainer.default_root_dir",
        str(tmp_path / "fit"), "--trainer.enable_progress_bar", "false", "--checkpoint_every", "500",
        "--model.init_args.lr", "0.001",
        timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "goals.json"
    result = run_cli(
        "eval", "--ckpt", str(tmp_path / "fit" / "checkpoints" / "last.ckpt"), "--objective",
        f"goal:{tmp_path / 'goals'}", "--episodes", "20", "--goal_offset", "5", "--planner", "cem",
        "--planner_options", '{"horizon": 5, "candidates": 200, "iterations": 4, "top_k": 20}',
        "--json_out", str(out), "--seed", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    print(result.stdout)
    rows = json.loads(out.read_text())["rows"]
    random = rows["random_actions"]
    assert rows["cem"]["final_rmse"] < random["final_rmse"] - 2 * random["final_rmse_se"]
    assert rows["cem"]["success_rate"] > random["success_rate"]
