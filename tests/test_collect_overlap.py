"""OnlineDataModule.collect with overlap (two env groups, one acting while the other steps) stores what the
one-group loop stores: the same episodes (images, actions, rewards, flags) of every env, given a policy whose
action for an env depends on that env's frames alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from agents.online import OnlineDataModule
from worldmodels.store import EpisodeStore

POINT = "worldmodels.pixel_point:PixelPoint-v0"  # 16x16 frames, 30-step episodes


class FramePolicy:
    """A deterministic policy with a carry: the action of env row n is a function of its frame and of how many
    steps ago its episode began (the carry, reset where ``is_first``). Records the torch thread count."""

    def __init__(self) -> None:
        self.threads: set[int] = set()

    def act(
        self, obs: torch.Tensor, is_first: torch.Tensor, state: Any, explore: bool
    ) -> tuple[torch.Tensor, Any]:
        """obs (N, 16, 16, 3) uint8, is_first (N,) bool, state (N,) step counts or None -> action (N, 1)."""
        self.threads.add(torch.get_num_threads())
        count = torch.zeros(obs.shape[0]) if state is None else state
        count = torch.where(is_first, torch.zeros_like(count), count + 1)
        column = obs[..., 0].float().argmax(-1).float().mean(-1)  # where the dot is
        return torch.sin(column + 0.7 * count)[:, None], count


def collect(path: Path, overlap: bool, num_envs: int, calls: list[dict[str, int]]) -> dict[str, Any]:
    """Run ``collect`` once per entry of ``calls`` and tear down -> the returns, the stored episodes (sorted
    by content) and the agent steps counted before teardown."""
    dm = OnlineDataModule(
        str(path), env=POINT, size=16, action_repeat=1, num_envs=num_envs, seed_episodes=1, collect_steps=1,
        batch_size=2, length=4, chunk_steps=4, seed=3, overlap=overlap,
    )  # fmt: skip
    policy, returns = FramePolicy(), []
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # as training sets it: acting runs with act_threads=1, then 2 again
    try:
        for call in calls:
            returns += dm.collect(policy, **call)
            assert all(p is None for p in dm._pending)  # nothing in flight between calls
        assert torch.get_num_threads() == 2 and policy.threads == {1}
    finally:
        torch.set_num_threads(threads)
    steps = dm.agent_steps()
    dm.teardown("fit")
    store = EpisodeStore(path)
    episodes = sorted((store.episode(i) for i in range(len(store))), key=lambda e: e["image"].tobytes())
    return {"returns": returns, "episodes": episodes, "steps": steps, "groups": len(dm._groups)}


def assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["returns"] == b["returns"] and a["steps"] == b["steps"]
    assert len(a["episodes"]) == len(b["episodes"])
    for x, y in zip(a["episodes"], b["episodes"]):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


@pytest.mark.parametrize("num_envs", [3, 4])
def test_overlapped_collect_stores_the_episodes_of_the_one_group_loop(tmp_path: Path, num_envs: int) -> None:
    # 70 steps: two finished 30-step episodes per env (and the autoreset steps), then one in progress with
    # written 4-step chunks that teardown stores truncated; split over calls as the env loop does
    calls = [{"steps": 1}, {"steps": 44}, {"steps": 25}]
    overlapped = collect(tmp_path / "overlap", True, num_envs, calls)
    sequential = collect(tmp_path / "sequential", False, num_envs, [{"steps": 70}])
    assert (overlapped["groups"], sequential["groups"]) == (2, 1)  # 3 envs: groups of 2 and 1
    assert len(overlapped["returns"]) == 2 * num_envs
    assert_same(overlapped, sequential)


def test_overlapped_collect_of_episodes_stops_where_the_one_group_loop_stops(tmp_path: Path) -> None:
    overlapped = collect(tmp_path / "overlap", True, 2, [{"episodes": 1}, {"episodes": 3}])
    sequential = collect(tmp_path / "sequential", False, 2, [{"episodes": 1}, {"episodes": 3}])
    assert len(overlapped["returns"]) == 2 + 4 and overlapped["groups"] == 2  # both envs end at once
    assert_same(overlapped, sequential)


def test_a_run_resumes_from_an_overlapped_collection(tmp_path: Path) -> None:
    """The store an overlapped run leaves (finished episodes, one truncated at teardown) counts and resumes
    as before; the checkpointed state is unchanged."""
    first = collect(tmp_path, True, 2, [{"steps": 40}])  # per env: a 30-step episode, a reset, 9 steps
    assert first["steps"] == 30 + 2 * 30 + 2 * 7  # the seed episode; 2 x 30; 2 x 8 frames in written chunks
    dm = OnlineDataModule(
        str(tmp_path), env=POINT, size=16, action_repeat=1, num_envs=2, seed_episodes=1, collect_steps=1,
        batch_size=2, length=4, chunk_steps=4, seed=3,
    )  # fmt: skip
    assert dm.agent_steps() == 30 + 2 * 30 + 2 * 9  # teardown stored the 10-frame episodes in progress
    assert dm.state_dict() == {"env": POINT, "action_repeat": 1, "size": 16, "offline": False}
    dm.collect(FramePolicy(), steps=3)  # 4 frames per env: one written chunk each
    assert dm.agent_steps() == 30 + 2 * 30 + 2 * 9 + 2 * 3
    dm.teardown("fit")
