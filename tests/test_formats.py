"""Datasets of other toolkits (worldmodels/formats.py, docs/datasets.md): HDF5 files in the robomimic,
stable-worldmodel and episode-group layouts (h5py), Minari datasets (minari), LeRobot folders v2.1 and v3.0
(pyarrow + mp4), each made here with the real library, read lazily, summarized, imported and trained on."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.cli import ROOT, run_cli
from tests.synthetic import moving_squares
from worldmodels.errors import FormatError, StoreError
from worldmodels.sources import open_source

h5py = pytest.importorskip("h5py", reason="HDF5 datasets need h5py (pip install -e .)")

SIZE, STEPS = 16, 9  # an episode: STEPS actions, STEPS + 1 frames


def episodes(count: int = 2, steps: int = STEPS, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Episodes in the toolkit's convention (action[t] led to frame t), the last one ending terminal: what every
    dataset written below must read back as."""
    out = moving_squares(episodes=count, length=steps + 1, size=SIZE, seed=seed)
    for i, episode in enumerate(out):
        episode["reward"][1:] += 10 * i  # episodes tell apart by their rewards (none led to the first frame)
        episode["is_terminal"][-1] = i == count - 1
    return out


def taken(episode: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same episode as most toolkits record it: per step the action taken at a frame, the reward and the
    termination that followed it (T rows for T + 1 frames)."""
    done = np.zeros(len(episode["reward"]) - 1, bool)
    done[-1] = episode["is_terminal"][-1]
    return episode["action"][1:], episode["reward"][1:], done


# --- writers: each format, as its toolkit lays it out -----------------------------------------------------


def write_robomimic(path: Path, eps: list[dict]) -> Path:
    """robomimic: data/demo_N/{obs,next_obs}/<camera>_image, actions, rewards, dones (row t: frame t, the action
    taken there, what followed)."""
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "type": 1})
        for i, episode in enumerate(eps):
            demo = data.create_group(f"demo_{i}")
            action, reward, done = taken(episode)
            demo.attrs["num_samples"] = len(action)
            demo["obs/agentview_image"] = episode["image"][:-1]
            demo["obs/robot0_eye_in_hand_image"] = 255 - episode["image"][:-1]
            demo["obs/robot0_eef_pos"] = np.zeros((len(action), 3))
            demo["next_obs/agentview_image"] = episode["image"][1:]
            demo["actions"], demo["rewards"], demo["dones"] = (
                action.astype(np.float64),
                reward,
                done.astype(int),
            )
    return path


def write_stable_worldmodel(path: Path, eps: list[dict]) -> Path:
    """stable-worldmodel's HDF5Writer: one column per key over all steps, ep_len / ep_offset; the action row t is
    the one taken at frame t (NaN on the last row), the reward row t led to frame t (NaN on the first row)."""
    rows = {"pixels": [], "action": [], "reward": [], "terminated": [], "step_idx": []}
    for episode in eps:
        n = len(episode["image"])
        rows["pixels"].append(episode["image"])
        rows["action"].append(np.concatenate([episode["action"][1:], np.full((1, 2), np.nan, np.float32)]))
        rows["reward"].append(np.concatenate([[np.nan], episode["reward"][1:]]))
        rows["terminated"].append(episode["is_terminal"])
        rows["step_idx"].append(np.arange(n))
    with h5py.File(path, "w") as f:
        for key, parts in rows.items():
            column = np.concatenate(parts)
            f.create_dataset(
                key, data=column, chunks=(1, *column.shape[1:]), maxshape=(None, *column.shape[1:])
            )
        lengths = [len(e["image"]) for e in eps]
        f["ep_len"] = np.array(lengths, np.int32)
        f["ep_offset"] = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return path


def write_episode_groups(path: Path, eps: list[dict], discrete: bool = False) -> Path:
    """One group per episode with image / action / reward / is_terminal, in the toolkit's convention."""
    with h5py.File(path, "w") as f:
        for i, episode in enumerate(eps):
            group = f.create_group(f"episode_{i}")
            group["image"] = episode["image"]
            group["action"] = discrete_actions(episode) if discrete else episode["action"]
            group["reward"], group["is_terminal"] = episode["reward"], episode["is_terminal"]
    return path


def discrete_actions(episode: dict[str, np.ndarray]) -> np.ndarray:
    """Integer actions 0..2 (-1 at the first frame) standing in for a discrete action space."""
    out = (np.arange(len(episode["reward"])) % 3).astype(np.int64)
    out[0] = -1
    return out


def write_minari(
    root: Path, monkeypatch, eps: list[dict], storage: str = "hdf5", dict_obs: bool = False
) -> Path:
    """A Minari dataset written by minari.create_dataset_from_buffers; ``dict_obs``: Dict observations
    {"state", "pixels"} (as AddRenderObservation records frames beside the state) and Discrete(3) actions."""
    minari = pytest.importorskip("minari", reason="Minari datasets need minari (pip install -e '.[minari]')")
    import gymnasium as gym
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    image = gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
    if dict_obs:
        observation_space = gym.spaces.Dict(
            {"state": gym.spaces.Box(-1, 1, (2,), np.float32), "pixels": image}
        )
        action_space = gym.spaces.Discrete(3)
    else:
        observation_space, action_space = image, gym.spaces.Box(-1, 1, (2,), np.float32)
    buffers = []
    for i, episode in enumerate(eps):
        action, reward, done = taken(episode)
        frames = list(episode["image"])
        observations = (
            {"state": [np.zeros(2, np.float32)] * len(frames), "pixels": frames} if dict_obs else frames
        )
        buffers.append(
            EpisodeBuffer(
                id=i,
                observations=observations,
                actions=list(discrete_actions(episode)[1:]) if dict_obs else list(action),
                rewards=list(reward),
                terminations=list(done),
                truncations=[False] * (len(reward) - 1) + [not done[-1]],
            )
        )
    name = f"test/squares-{storage}{'-dict' if dict_obs else ''}-v0"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # minari warns about the author, description, ... left out
        minari.create_dataset_from_buffers(
            name,
            buffers,
            observation_space=observation_space,
            action_space=action_space,
            data_format=storage,
            jpeg_encoding=False,
        )
    return root / name


def write_video(path: Path, frames: np.ndarray, fps: int = 10) -> None:
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, frames, codec="libx264", macro_block_size=1, fps=fps, quality=10)


def png(frame: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


def lerobot_table(episode: dict, index: int, first_row: int, list_type) -> dict:
    """The parquet columns of one episode: row t is (frame t, the action taken there, next.reward / next.done
    after it); the last row's action and reward lead past the stored frames (zeros here)."""
    import pyarrow as pa

    n = len(episode["image"])
    action = np.concatenate([episode["action"][1:], np.zeros((1, 2), np.float32)])
    reward = np.concatenate([episode["reward"][1:], [0.0]]).astype(np.float32)
    done = np.zeros(n, bool)
    done[-1] = episode["is_terminal"][
        -1
    ]  # the step out of the last frame ended the episode (not a time limit)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    return {
        "action": pa.array(list(action), type=list_type),
        "observation.state": pa.array(list(np.zeros((n, 2), np.float32)), type=list_type),
        "observation.images.wrist": pa.array(
            [{"bytes": png(255 - f), "path": None} for f in episode["image"]], type=image_type
        ),
        "next.reward": pa.array(reward),
        "next.done": pa.array(done),
        "timestamp": pa.array((np.arange(n) / 10).astype(np.float32)),
        "frame_index": pa.array(np.arange(n)),
        "episode_index": pa.array(np.full(n, index)),
        "index": pa.array(first_row + np.arange(n)),
        "task_index": pa.array(np.zeros(n, np.int64)),
    }


FEATURES = {
    "observation.images.top": {
        "dtype": "video",
        "shape": [SIZE, SIZE, 3],
        "names": ["height", "width", "channels"],
        "info": {"video.fps": 10.0, "video.codec": "h264", "video.pix_fmt": "yuv420p"},
    },
    "observation.images.wrist": {
        "dtype": "image",
        "shape": [SIZE, SIZE, 3],
        "names": ["height", "width", "channel"],
    },
    "observation.state": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
    "action": {"dtype": "float32", "shape": [2], "names": ["vx", "vy"]},
    "next.reward": {"dtype": "float32", "shape": [1], "names": None},
    "next.done": {"dtype": "bool", "shape": [1], "names": None},
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}


def write_lerobot(root: Path, eps: list[dict], version: str = "v2.1") -> Path:
    """A LeRobot folder exactly as LeRobot lays out ``version`` (lerobot_datasets.py's docstring): v2.1 one parquet
    table and one mp4 per episode, v3.0 one table and one mp4 holding all episodes, indexed by meta/episodes."""
    pa = pytest.importorskip("pyarrow", reason="LeRobot datasets need pyarrow (pip install -e .)")
    import pyarrow.parquet as pq

    lengths = [len(e["image"]) for e in eps]
    info = {
        "codebase_version": version,
        "robot_type": "squares",
        "total_episodes": len(eps),
        "total_frames": sum(lengths),
        "total_tasks": 1,
        "chunks_size": 1000,
        "fps": 10,
        "splits": {"train": f"0:{len(eps)}"},
        "features": FEATURES,
    }
    (root / "meta").mkdir(parents=True)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    if version.startswith("v2"):
        info.update(
            total_videos=len(eps),
            total_chunks=1,
            data_path="data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            video_path="videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        )
        lines = [{"episode_index": i, "tasks": ["move"], "length": n} for i, n in enumerate(lengths)]
        (root / "meta" / "episodes.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        (root / "meta" / "tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": "move"}) + "\n")
        stats = [{"episode_index": i, "stats": {}} for i in range(len(eps))]
        (root / "meta" / "episodes_stats.jsonl").write_text("".join(json.dumps(x) + "\n" for x in stats))
        for i, episode in enumerate(eps):
            table = pa.table(lerobot_table(episode, i, int(starts[i]), pa.list_(pa.float32(), 2)))
            (root / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
            pq.write_table(table, root / "data" / "chunk-000" / f"episode_{i:06d}.parquet")
            write_video(
                root / "videos" / "chunk-000" / "observation.images.top" / f"episode_{i:06d}.mp4",
                episode["image"],
            )
    else:
        info.update(
            data_files_size_in_mb=100,
            video_files_size_in_mb=200,
            data_path="data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            video_path="videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        )
        tables = [
            pa.table(lerobot_table(e, i, int(starts[i]), pa.list_(pa.float32()))) for i, e in enumerate(eps)
        ]
        (root / "data" / "chunk-000").mkdir(parents=True)
        pq.write_table(pa.concat_tables(tables), root / "data" / "chunk-000" / "file-000.parquet")
        video = "videos/observation.images.top"
        write_video(root / video / "chunk-000" / "file-000.mp4", np.concatenate([e["image"] for e in eps]))
        meta = {
            "episode_index": list(range(len(eps))),
            "tasks": [["move"]] * len(eps),
            "length": lengths,
            "data/chunk_index": [0] * len(eps),
            "data/file_index": [0] * len(eps),
            "dataset_from_index": [int(s) for s in starts],
            "dataset_to_index": [int(s + n) for s, n in zip(starts, lengths)],
            f"{video}/chunk_index": [0] * len(eps),
            f"{video}/file_index": [0] * len(eps),
            f"{video}/from_timestamp": [float(s) / 10 for s in starts],
            f"{video}/to_timestamp": [float(s + n) / 10 for s, n in zip(starts, lengths)],
            "meta/episodes/chunk_index": [0] * len(eps),
            "meta/episodes/file_index": [0] * len(eps),
        }
        (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
        pq.write_table(pa.table(meta), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
        pq.write_table(pa.table({"task_index": [0], "task": ["move"]}), root / "meta" / "tasks.parquet")
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    return root


def make(kind: str, tmp_path: Path, monkeypatch, eps: list[dict]) -> Path:
    """A dataset of ``kind`` holding ``eps``."""
    if kind == "robomimic":
        return write_robomimic(tmp_path / "demo.hdf5", eps)
    if kind == "stable-worldmodel":
        return write_stable_worldmodel(tmp_path / "pusht.h5", eps)
    if kind == "episode groups":
        return write_episode_groups(tmp_path / "episodes.h5", eps)
    if kind.startswith("minari"):
        return write_minari(tmp_path / "minari", monkeypatch, eps, storage=kind.split("-")[1])
    return write_lerobot(tmp_path / "lerobot", eps, version=kind.split("-")[1])


KINDS = [
    "robomimic",
    "stable-worldmodel",
    "episode groups",
    "minari-hdf5",
    "minari-arrow",
    "minari-parquet",
    "lerobot-v2.1",
    "lerobot-v3.0",
]
LOSSY = {"lerobot-v2.1": 6.0, "lerobot-v3.0": 6.0}  # mean abs pixel error of h264; the others are exact


def assert_same_episode(got: dict, want: dict, tolerance: float = 0.0) -> None:
    np.testing.assert_allclose(got["action"], want["action"], atol=1e-6)
    np.testing.assert_allclose(got["reward"], want["reward"], atol=1e-6)
    for key in ("is_first", "is_last", "is_terminal"):
        assert got[key].tolist() == want[key].tolist(), key
    error = np.abs(got["image"].astype(int) - want["image"].astype(int)).mean(axis=(1, 2, 3))
    assert error.max() <= tolerance, error


# --- reading ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_each_format_reads_back_the_frames_actions_rewards_and_episode_bounds_written(
    kind, tmp_path, monkeypatch
):
    eps = episodes(count=2)
    source = open_source(make(kind, tmp_path, monkeypatch, eps))
    assert source.lengths() == [STEPS + 1, STEPS + 1]
    assert (source.size, source.action_dim, source.discrete) == (SIZE, 2, False)
    for i, want in enumerate(eps):
        assert_same_episode(source.read(i, 0, STEPS + 1), want, LOSSY.get(kind, 0.0))
    window, whole = source.read(1, 3, 4), source.read(1, 0, STEPS + 1)
    for key in window:  # a window is the same steps as the whole episode's, not its first ones
        np.testing.assert_array_equal(window[key], whole[key][3:7])
    assert window["image"].dtype == np.uint8 and window["action"].dtype == np.float32
    with pytest.raises(ValueError, match="outside"):
        source.read(0, STEPS, 2)


def test_a_window_streams_from_an_episode_larger_than_the_cache_and_equals_the_cached_one(
    tmp_path, monkeypatch
):
    path = make("lerobot-v3.0", tmp_path, monkeypatch, episodes(count=2))
    cached, streamed = open_source(path), open_source(path, replay_budget_mb=0)
    for index, start in ((1, 0), (1, 5), (0, 2)):
        np.testing.assert_array_equal(
            cached.read(index, start, 4)["image"], streamed.read(index, start, 4)["image"]
        )
    assert streamed._frames_cache == {} and len(cached._frames_cache) == 2


def test_discrete_integer_actions_come_one_hot_with_no_action_at_the_first_frame(tmp_path, monkeypatch):
    eps = episodes(count=2)
    groups = open_source(write_episode_groups(tmp_path / "discrete.h5", eps, discrete=True))
    minari_dict = open_source(write_minari(tmp_path / "minari", monkeypatch, eps, dict_obs=True))
    for source in (groups, minari_dict):
        assert source.discrete and source.action_dim == 3
        action = source.read(0, 0, 5)["action"]
        np.testing.assert_array_equal(action, [[0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0]])
        assert source.episode(0)["action"][:3].tolist() == [-1, 1, 2]  # as a store holds them
    assert minari_dict.camera == "pixels"  # the frames of a Dict observation, beside its state
    np.testing.assert_array_equal(minari_dict.read(1, 0, STEPS + 1)["image"], eps[1]["image"])


def test_the_camera_option_picks_another_image_stream_and_an_unknown_one_names_the_choices(
    tmp_path, monkeypatch
):
    eps = episodes(count=1)
    robomimic = write_robomimic(tmp_path / "demo.hdf5", eps)
    assert open_source(robomimic).camera == "agentview_image"  # the first camera, in name order
    wrist = open_source(robomimic, camera="robot0_eye_in_hand_image")
    assert wrist.lengths() == [STEPS]  # no next_obs for this camera: the last action leads past the frames
    np.testing.assert_array_equal(wrist.read(0, 0, STEPS)["image"], 255 - eps[0]["image"][:-1])
    assert wrist.read(0, 0, STEPS)["is_terminal"][-1]  # the done after the last stored frame marks it
    lerobot = write_lerobot(tmp_path / "lerobot", eps)
    assert open_source(lerobot).camera == "observation.images.top"  # the first camera in info.json
    images = open_source(lerobot, camera="observation.images.wrist")  # PNG frames in the parquet table
    np.testing.assert_array_equal(images.read(0, 0, STEPS + 1)["image"], 255 - eps[0]["image"])
    with pytest.raises(FormatError, match=r"info.json: features: no camera 'front'.*observation.images.top"):
        open_source(lerobot, camera="front")
    with pytest.raises(FormatError, match=r"demo.hdf5: data/demo_0/obs: no image dataset 'front'.*agentview"):
        open_source(robomimic, camera="front")
    with pytest.raises(StoreError, match="drop the camera option"):
        open_source(tmp_path / "lerobot" / "videos", camera="top")  # a video folder has one stream


def test_frames_of_another_size_are_center_cropped_and_resized(tmp_path):
    eps = episodes(count=1)
    wide = np.zeros((STEPS + 1, SIZE, 2 * SIZE, 3), np.uint8)
    wide[:, :, SIZE // 2 : SIZE // 2 + SIZE] = eps[0]["image"]  # the square in the middle of a wide frame
    with h5py.File(tmp_path / "wide.h5", "w") as f:
        f["episode_0/image"] = wide.transpose(0, 3, 1, 2)  # (T, C, H, W), as some writers store images
    source = open_source(tmp_path / "wide.h5")
    assert source.native == (SIZE, 2 * SIZE) and source.size == 64  # not square: the default size
    assert source.action_dim == 0 and not source.rewards
    np.testing.assert_array_equal(
        open_source(tmp_path / "wide.h5", size=SIZE).read(0, 0, 3)["image"], eps[0]["image"][:3]
    )


# --- info -----------------------------------------------------------------------------------------------


def test_info_summarizes_each_format_and_says_when_rewards_are_absent(tmp_path, monkeypatch):
    import cli.main as cli

    eps = episodes(count=2)
    info = cli.summarize(write_robomimic(tmp_path / "demo.hdf5", eps))
    assert info["kind"] == "hdf5 dataset" and info["layout"] == "robomimic"
    assert (info["episodes"], info["steps"], info["image_shape"]) == (2, 2 * (STEPS + 1), [SIZE, SIZE, 3])
    assert info["action_space"] == {"discrete": False, "dim": 2} and info["rewards"] == "stored"
    assert info["camera"] == (
        "agentview_image (the default; others: robot0_eye_in_hand_image, pick one with --camera)"
    )
    assert info["returns"]["max"] == pytest.approx(float(eps[1]["reward"].sum()), rel=1e-5)
    with h5py.File(tmp_path / "frames.h5", "w") as f:
        for i, episode in enumerate(eps):
            f[f"episode_{i}/image"] = episode["image"]
    info = cli.summarize(tmp_path / "frames.h5")
    assert info["rewards"] == "none in the source: zeros" and "returns" not in info
    assert info["action_space"] == "none in the source (zero-width actions)"
    from worldmodels.importing import import_source

    import_source(tmp_path / "frames.h5", tmp_path / "store", progress=False)
    info = cli.summarize(
        tmp_path / "store"
    )  # the store says so too, rather than "collected with --no_rewards"
    assert info["returns"] == "none in the source (zeros)" and info["action_space"] == {
        "discrete": False,
        "dim": 0,
    }
    info = cli.summarize(write_lerobot(tmp_path / "lerobot", eps, "v3.0"))
    assert info["layout"] == "lerobot v3.0" and info["episodes"] == 2 and info["fps"] == 10
    info = cli.summarize(write_minari(tmp_path / "minari", monkeypatch, eps))
    assert info["layout"] == "minari hdf5 storage 0.5.4" and info["dataset_id"] == "test/squares-hdf5-v0"
    assert info["steps"] == 2 * (STEPS + 1)


def test_info_on_each_format_imports_neither_torch_nor_lightning(tmp_path, monkeypatch):
    eps = episodes(count=1)
    paths = [
        write_robomimic(tmp_path / "demo.hdf5", eps),
        write_lerobot(tmp_path / "lerobot", eps),
        write_minari(tmp_path / "minari", monkeypatch, eps),
    ]
    code = f"""
import contextlib, io, sys
import cli.main as cli
for path in {[str(p) for p in paths]!r}:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        cli.main(["info", path])
    assert "episodes" in out.getvalue(), out.getvalue()
loaded = [m for m in ("torch", "lightning") if m in sys.modules]
assert not loaded, loaded
"""
    env = {**os.environ, "MINARI_DATASETS_PATH": str(tmp_path / "minari")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-2000:]


# --- errors -------------------------------------------------------------------------------------------


def break_robomimic(tmp_path: Path, monkeypatch) -> tuple[Path, str]:
    path = write_robomimic(tmp_path / "demo.hdf5", episodes(count=2))
    with h5py.File(path, "a") as f:
        del f["data/demo_1/actions"]
    return path, r"demo.hdf5: data/demo_1/actions: missing"


def break_stable_worldmodel(tmp_path: Path, monkeypatch) -> tuple[Path, str]:
    path = write_stable_worldmodel(tmp_path / "pusht.h5", episodes(count=2))
    with h5py.File(path, "a") as f:
        f["action"].resize(5, axis=0)
    return path, r"pusht.h5: action: 5 rows, but ep_offset \+ ep_len reach 20"


def break_groups(tmp_path: Path, monkeypatch) -> tuple[Path, str]:
    path = tmp_path / "states.h5"
    with h5py.File(path, "w") as f:
        f["episode_0/observation"] = np.zeros((5, 4), np.float32)
    return path, r"states.h5: episode_0: no image dataset"


def break_lerobot_version(tmp_path: Path, monkeypatch) -> tuple[Path, str]:
    root = write_lerobot(tmp_path / "lerobot", episodes(count=1))
    info = json.loads((root / "meta" / "info.json").read_text())
    (root / "meta" / "info.json").write_text(json.dumps(dict(info, codebase_version="v1.6")))
    return root, r"meta/info.json: codebase_version: 'v1.6'"


def break_lerobot_table(tmp_path: Path, monkeypatch) -> tuple[Path, str]:
    root = write_lerobot(tmp_path / "lerobot", episodes(count=1))
    import pyarrow.parquet as pq

    table = root / "data" / "chunk-000" / "episode_000000.parquet"
    pq.write_table(pq.read_table(table).drop_columns(["action"]), table)
    return root, r"episode_000000.parquet: column 'action' missing"


def break_minari(tmp_path: Path, monkeypatch) -> tuple[Path, str]:
    minari = pytest.importorskip("minari", reason="Minari datasets need minari (pip install -e '.[minari]')")
    import gymnasium as gym
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    buffer = EpisodeBuffer(
        observations=[np.zeros(4, np.float32)] * 4,
        actions=[0, 1, 0],
        rewards=[1.0] * 3,
        terminations=[False, False, True],
        truncations=[False] * 3,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(
            "test/states-v0",
            [buffer],
            observation_space=gym.spaces.Box(-1, 1, (4,), np.float32),
            action_space=gym.spaces.Discrete(2),
        )
    return (
        tmp_path / "minari" / "test" / "states-v0",
        r"data/metadata.json: observation_space: Box.* holds no image",
    )


@pytest.mark.parametrize(
    "broken",
    [
        break_robomimic,
        break_stable_worldmodel,
        break_groups,
        break_lerobot_version,
        break_lerobot_table,
        break_minari,
    ],
)
def test_a_layout_not_understood_fails_in_one_line_naming_the_file_and_the_field(
    broken, tmp_path, monkeypatch
):
    path, message = broken(tmp_path, monkeypatch)
    with pytest.raises(FormatError, match=message):
        source = open_source(path)
        source.read(0, 0, 2)  # a table is read with its first window
    result = run_cli("info", str(path), timeout=120)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("worldmodels: error: ") and "Traceback" not in result.stderr


# --- import -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["robomimic", "stable-worldmodel", "minari-hdf5", "lerobot-v2.1"])
def test_import_writes_a_store_of_the_same_episodes_that_names_its_source_and_resumes(
    kind, tmp_path, monkeypatch
):
    from worldmodels.importing import import_source
    from worldmodels.store import EpisodeStore

    eps = episodes(count=3)
    path = make(kind, tmp_path, monkeypatch, eps)
    out = tmp_path / "store"
    counts = import_source(path, out, progress=False)
    assert counts == dict(episodes=3, added=3, skipped=0, steps=3 * (STEPS + 1))
    store, source = EpisodeStore(out), open_source(path)
    assert store.lengths() == source.lengths() and store.image_shape == (SIZE, SIZE, 3)
    assert (store.action_dim, store.discrete) == (2, False)
    for i in range(3):
        assert_same_episode(store.read(i, 0, STEPS + 1), source.read(i, 0, STEPS + 1))
    [entry] = store.metadata["provenance"]
    assert entry["source"] == str(path.resolve()) and entry["format"] == source.format
    assert entry["camera"] == source.camera and entry["adding"] == 3
    (out / sorted(p.name for p in out.glob("*.npz"))[1]).unlink()  # as if stopped before the second episode
    assert import_source(path, out, progress=False)["added"] == 1
    assert EpisodeStore(out).lengths() == source.lengths()
    other = write_episode_groups(tmp_path / "other.h5", eps)
    with pytest.raises(StoreError, match="holds episodes imported from .*give a new folder"):
        import_source(other, out, progress=False)


def test_import_on_the_command_line_shows_progress_and_info_prints_where_the_store_came_from(
    tmp_path, monkeypatch
):
    path = make("lerobot-v3.0", tmp_path, monkeypatch, episodes(count=2))
    out = tmp_path / "store"
    result = run_cli(
        "import", str(path), "--out", str(out), "--camera", "observation.images.wrist", timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert (
        "imported 2 of 2 episodes" in result.stdout and "import lerobot" in result.stderr
    )  # the progress bar
    info = run_cli("info", str(out), timeout=120)
    assert info.returncode == 0, info.stderr
    assert f"source {path.resolve()}, format lerobot" in info.stdout
    assert "camera observation.images.wrist" in info.stdout and "format_version v3.0" in info.stdout
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    refused = run_cli("import", str(path), "--out", str(tmp_path / "junk"), timeout=120)
    assert refused.returncode == 2 and "not empty and not an episode store" in refused.stderr


# --- training -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["episode groups", "minari-arrow", "lerobot-v2.1"])
def test_the_data_module_batches_windows_from_each_format(kind, tmp_path, monkeypatch):
    from worldmodels.data import SequenceDataModule

    path = make(kind, tmp_path, monkeypatch, episodes(count=3))
    data = SequenceDataModule(str(path), batch_size=4, length=6, val_fraction=0.3)
    assert (data.image_size, data.action_dim, data.discrete) == (SIZE, 2, False)
    batch = data.sample_batch(seed=0, contiguous=True)
    assert batch["image"].shape == (4, 6, SIZE, SIZE, 3) and batch["action"].shape == (4, 6, 2)
    assert len(data.val_names) == 1 and data.val_names[0].startswith(("episode", "data/demo"))


@pytest.mark.slow
def test_fit_and_dream_run_on_an_hdf5_file_a_minari_dataset_and_a_lerobot_folder(tmp_path, monkeypatch):
    eps = episodes(count=3, steps=15)
    for kind in ("robomimic", "minari-hdf5", "lerobot-v2.1"):
        (tmp_path / kind).mkdir()
        path = make(kind, tmp_path / kind, monkeypatch, eps)
        run = tmp_path / kind / "fit"
        fit = run_cli(
            "fit", "-c", "configs/tiny_rssm.yaml", "--data.path", str(path), "--data.length", "8",
            "--data.batch_size", "2", "--trainer.max_steps", "3", "--trainer.default_root_dir", str(run),
            "--trainer.enable_progress_bar", "false", "--checkpoint_every", "3",
        )  # fmt: skip
        assert fit.returncode == 0, (kind, fit.stderr[-3000:])
        dream = run_cli(
            "dream", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--data", str(path), "--context", "3",
            "--horizon", "5", "--sequences", "2", "--out", str(tmp_path / kind / "dream.mp4"),
        )  # fmt: skip
        assert dream.returncode == 0, (kind, dream.stderr[-3000:])
        assert (tmp_path / kind / "dream.mp4").stat().st_size > 0
