import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.synthetic import moving_squares
from worldmodels.errors import CorruptEpisodeError, StoreError
from worldmodels.store import (
    EpisodeStore,
    episode_name,
    load_episode,
    new_key,
    one_hot,
    validate_episode,
    write_episode,
)


def test_round_trip(tmp_path):
    episodes = moving_squares(episodes=3, length=10, size=16)
    store = EpisodeStore(tmp_path, create=True, metadata={"env": "synthetic"})
    for episode in episodes:
        store.add(episode)
    again = EpisodeStore(tmp_path)
    assert len(again) == 3 and again.lengths() == [10, 10, 10]
    assert again.image_shape == (16, 16, 3) and again.action_dim == 2 and not again.discrete
    stored = sorted((again.episode(i) for i in range(3)), key=lambda e: e["image"].tobytes())
    for original, loaded in zip(sorted(episodes, key=lambda e: e["image"].tobytes()), stored):
        for key, value in original.items():
            np.testing.assert_array_equal(loaded[key], value)
            assert loaded[key].dtype == value.dtype
    window = again.read(0, 2, 5)
    assert window["image"].shape == (5, 16, 16, 3) and window["action"].dtype == np.float32


def test_discrete_actions_become_one_hot(tmp_path):
    episode = moving_squares(episodes=1, length=6, size=8)[0]
    episode["action"] = np.array([-1, 0, 2, 1, 2, 0])
    store = EpisodeStore(tmp_path, create=True, metadata={"action_space": {"type": "Discrete", "n": 3}})
    store.add(episode)
    store.refresh()
    action = store.read(0, 0, 6)["action"]
    np.testing.assert_array_equal(action, one_hot(episode["action"], 3))
    assert action[0].sum() == 0 and action.shape == (6, 3)


def test_validation_names_the_problem():
    episode = moving_squares(episodes=1, length=5, size=8)[0]
    bad = dict(episode, reward=np.array([0, 1, np.nan, 0, 0], np.float32))
    with pytest.raises(CorruptEpisodeError, match="ep.npz: reward contains NaN"):
        validate_episode(bad, "ep.npz")
    with pytest.raises(CorruptEpisodeError, match="action contains NaN"):
        validate_episode(dict(episode, action=np.full((5, 2), np.inf, np.float32)))
    with pytest.raises(CorruptEpisodeError, match="missing arrays"):
        validate_episode({k: v for k, v in episode.items() if k != "is_last"})
    with pytest.raises(CorruptEpisodeError, match="image must be uint8"):
        validate_episode(dict(episode, image=episode["image"].astype(np.float32)))


def test_corrupt_file_is_reported_by_name_and_skipped_or_raised(tmp_path, caplog):
    good, broken = moving_squares(episodes=2, length=8, size=8)
    write_episode(tmp_path, good)
    path = write_episode(tmp_path, broken)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated file
    store = EpisodeStore(tmp_path)
    assert path.name in caplog.text and "skipping corrupt episode" in caplog.text  # on the worldmodels logger
    assert len(store) == 1
    with pytest.raises(CorruptEpisodeError, match=path.name):
        EpisodeStore(tmp_path, on_corrupt="raise")
    with pytest.raises(CorruptEpisodeError, match="cannot read episode"):
        load_episode(path)


def test_mismatched_image_shape_is_corrupt_for_this_store(tmp_path):
    write_episode(tmp_path, moving_squares(episodes=1, length=4, size=8)[0])
    write_episode(tmp_path, moving_squares(episodes=1, length=4, size=16)[0])
    with pytest.raises(CorruptEpisodeError, match="differs from the store"):
        EpisodeStore(tmp_path, on_corrupt="raise")


def test_new_episodes_become_visible_to_a_reader(tmp_path):
    episodes = moving_squares(episodes=2, length=6, size=8)
    writer = EpisodeStore(tmp_path, create=True)
    writer.add(episodes[0])
    reader = EpisodeStore(tmp_path)
    assert len(reader) == 1
    writer.add(episodes[1])
    assert reader.refresh() == 1 and len(reader) == 2


def test_missing_store_and_conflicting_metadata(tmp_path):
    with pytest.raises(StoreError, match="no such episode store"):
        EpisodeStore(tmp_path / "nope")
    EpisodeStore(tmp_path, create=True, metadata={"env": "dmc:cartpole-swingup"})
    with pytest.raises(StoreError, match="use another --out"):
        EpisodeStore(tmp_path, create=True, metadata={"env": "CarRacing-v3"})


WRITER = """
import sys, numpy as np
from worldmodels.store import write_episode
T = 400
rng = np.random.default_rng(0)
episode = dict(image=rng.integers(0, 255, (T, 128, 128, 3), dtype=np.uint8), action=np.zeros((T, 1), np.float32),
               reward=np.zeros(T, np.float32), is_first=np.eye(1, T, dtype=bool)[0], is_last=np.zeros(T, bool),
               is_terminal=np.zeros(T, bool))
print("ready", flush=True)
write_episode(sys.argv[1], episode)
"""


def test_writer_killed_mid_write_leaves_no_visible_episode(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, cwd=Path(__file__).parents[1]
    )
    assert proc.stdout.readline().strip() == b"ready"
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".*.tmp")):  # wait until the write is under way
        assert time.monotonic() < deadline and proc.poll() is None, (
            "writer finished before it could be killed"
        )
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list(tmp_path.glob("*.npz"))
    assert len(EpisodeStore(tmp_path)) == 0


# -- episodes still being collected: chunks under unfinished/<key>/ ---------------------------------------


def steps_of(episode, start, end):
    """Steps [start, end) of an episode as the collector writes them into a chunk (not yet ended)."""
    chunk = {k: v[start:end].copy() for k, v in episode.items()}
    chunk["is_last"][:], chunk["is_terminal"][:] = False, False
    return chunk


def marked(length, size=8, seed=0, base=0.0):
    """An episode whose reward at step t is base + t, so a window tells where it came from."""
    episode = moving_squares(episodes=1, length=length, size=size, seed=seed)[0]
    episode["reward"] = base + np.arange(length, dtype=np.float32)
    return episode


def test_finishing_the_episode_gives_the_same_steps_exactly_once(tmp_path):
    from worldmodels.data import SequenceSampler

    episode, key = marked(8, base=100.0), new_key()
    writer = EpisodeStore(tmp_path, create=True)
    writer.add(marked(3, seed=1))
    for start in (0, 3):
        writer.write_chunk(key, start, steps_of(episode, start, start + 3))
    reader = EpisodeStore(tmp_path, cache_bytes=0)  # keeps no chunk in memory: reads them from disk
    sampler = SequenceSampler([reader], length=4, seed=0, contiguous=True)
    assert reader.unfinished() == {key: 6} and len(reader) == 1
    path = writer.add(episode, key=key)  # the finished file under the same key; the chunks go
    assert path.name == f"{key}-8.npz" and not (tmp_path / "unfinished" / key).exists()
    # a window indexed before the finish: its chunks are gone, the finished file has the same steps
    window = reader.read_unfinished(key, 2, 4)
    np.testing.assert_array_equal(window["reward"], [102, 103, 104, 105])
    np.testing.assert_array_equal(window["image"], episode["image"][2:6])
    assert reader.unfinished() == {} and reader.lengths() == [3, 8]  # once, as a finished episode
    sampler.sample()
    assert sampler.open_items == [] and sampler.starts.tolist() == [0, 5]  # the sampler re-indexed
    for key_, values in episode.items():
        np.testing.assert_array_equal(reader.episode(1)[key_], values)


def test_a_finished_file_beside_leftover_chunks_is_seen_once(tmp_path):
    """A kill between the finished file's rename and the chunks' deletion leaves both: readers take the file."""
    episode, key = marked(6, base=100.0), new_key()
    store = EpisodeStore(tmp_path, create=True)
    store.write_chunk(key, 0, steps_of(episode, 0, 4))
    write_episode(tmp_path, episode, episode_name(6, key))  # renamed, chunks not yet deleted
    reader = EpisodeStore(tmp_path)
    assert reader.lengths() == [6] and reader.unfinished() == {}
    assert store.close_unfinished() == [] and not list((tmp_path / "unfinished").iterdir())


def test_close_unfinished_keeps_the_written_steps_as_a_truncated_episode(tmp_path):
    episode, key = marked(12, base=100.0), new_key()
    store = EpisodeStore(tmp_path, create=True)
    for start in (0, 4):
        store.write_chunk(key, start, steps_of(episode, start, start + 4))
    (tmp_path / "unfinished" / key / ".tmpabc.npz.tmp").write_bytes(b"half a chunk")  # killed mid-write
    (tmp_path / "unfinished" / "20260101T000000-deadbeef").mkdir()  # killed before its first chunk
    [path] = store.close_unfinished()
    assert path.name == f"{key}-8.npz" and not list((tmp_path / "unfinished").iterdir())
    closed = EpisodeStore(tmp_path).episode(0)
    np.testing.assert_array_equal(closed["reward"], 100 + np.arange(8))
    np.testing.assert_array_equal(closed["image"], episode["image"][:8])
    assert closed["is_last"].tolist() == [False] * 7 + [True] and not closed["is_terminal"].any()
    assert closed["is_first"].tolist() == [True] + [False] * 7


def test_old_store_of_finished_episodes_only_loads_as_before(tmp_path):
    for episode in moving_squares(episodes=2, length=5, size=8):
        write_episode(tmp_path, episode)  # no unfinished/ folder, names of the old kind
    store = EpisodeStore(tmp_path)
    assert len(store) == 2 and store.lengths() == [5, 5] and store.unfinished() == {}
    assert store.close_unfinished() == [] and len(EpisodeStore(tmp_path)) == 2


def test_chunks_share_the_cache_budget(tmp_path):
    episode, key = marked(40, size=16), new_key()
    writer = EpisodeStore(tmp_path, create=True)
    for start in range(0, 40, 8):
        writer.write_chunk(key, start, steps_of(episode, start, start + 8))
    chunk_bytes = sum(v.nbytes for v in steps_of(episode, 0, 8).values())
    reader = EpisodeStore(tmp_path, cache_bytes=2 * chunk_bytes)
    assert reader.unfinished() == {key: 40} and len(reader._cache) == 2  # 5 chunks read, 2 kept
    np.testing.assert_array_equal(reader.read_unfinished(key, 6, 20)["image"], episode["image"][6:26])
    assert reader._cached_bytes <= 2 * chunk_bytes


def test_a_corrupt_chunk_is_named_and_the_episode_stops_before_it(tmp_path, caplog):
    episode, key = marked(12, base=100.0), new_key()
    store = EpisodeStore(tmp_path, create=True)
    for start in (0, 4, 8):
        path = store.write_chunk(key, start, steps_of(episode, start, start + 4))
        if start == 4:
            path.write_bytes(path.read_bytes()[:100])  # the disk mangled it
    reader = EpisodeStore(tmp_path)
    assert "00000004-00000008.npz" in caplog.text
    assert reader.unfinished() == {key: 4}  # steps 4.. are not served: chunk 8 would follow a gap
    with pytest.raises(CorruptEpisodeError, match="00000004-00000008.npz"):
        EpisodeStore(tmp_path, on_corrupt="raise")
    caplog.clear()
    [path] = EpisodeStore(tmp_path).close_unfinished()
    assert "00000004-00000008.npz" in caplog.text
    assert path.name == f"{key}-4.npz" and EpisodeStore(tmp_path).lengths() == [4]


def test_info_envs_and_help_import_neither_torch_nor_lightning(tmp_path: Path):
    """`worldmodels info` on a store, `envs` and `--help` start in about a second: Lightning's import alone costs
    ~7 s and ~0.9 GB (issue #20), so these commands must not pull it in (nor torch)."""
    store = EpisodeStore(tmp_path / "store", create=True, metadata={"env": "synthetic"})
    for episode in moving_squares(episodes=2, length=5, size=8):
        store.add(episode)
    code = f"""
import contextlib, io, sys
import cli.main as cli
for argv in (["info", {str(tmp_path / "store")!r}], ["envs", "--filter", "cartpole"], ["--help"]):
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
        cli.main(argv)
    assert out.getvalue(), argv
loaded = [m for m in ("torch", "lightning") if m in sys.modules]
assert not loaded, loaded
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1]
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_info_counts_the_written_steps_of_episodes_still_being_collected(tmp_path):
    import cli.main as cli

    store = EpisodeStore(tmp_path, create=True, metadata={"env": "synthetic"})
    store.add(marked(3, seed=1))
    episode, key = marked(8, base=100.0), new_key()
    for start in (0, 3):  # 6 of its 8 steps written
        store.write_chunk(key, start, steps_of(episode, start, start + 3))
    info = cli.summarize(tmp_path)
    assert info["episodes"] == 1 and info["unfinished"] == {"episodes": 1, "steps": 6}


def test_a_store_records_each_command_that_wrote_to_it_and_info_prints_them(tmp_path, monkeypatch, capsys):
    import cli.main as cli

    out = str(tmp_path / "store")
    point = "worldmodels.pixel_point:PixelPoint-v0"
    for episodes in ("2", "1"):  # collected twice: two entries, the second one's seeds after the first's
        argv = [
            "collect",
            "--env",
            point,
            "--episodes",
            episodes,
            "--size",
            "16",
            "--out",
            out,
            "--seed",
            "3",
        ]
        monkeypatch.setattr(sys, "argv", ["worldmodels", *argv])
        cli.main(argv)
    first, second = EpisodeStore(out).metadata["provenance"]
    assert (
        first["command"] == f"worldmodels collect --env {point} --episodes 2 --size 16 --out {out} --seed 3"
    )
    assert (first["policy"], first["env"], first["size"], first["seeds"]) == ("uniform", point, 16, [3, 4])
    assert second["seeds"] == [5, 5] and second["episodes"] == 1
    capsys.readouterr()
    cli.main(["info", out])
    made = [line for line in capsys.readouterr().out.splitlines() if "`worldmodels collect" in line]
    assert len(made) == 2 and made[0].strip().startswith("made by:") and "seeds [3, 4]" in made[0]


def test_an_agents_replay_records_its_random_seed_episodes_and_its_own_collection(tmp_path):
    from agents.online import OnlineDataModule

    dm = OnlineDataModule(
        str(tmp_path), env="worldmodels.pixel_point:PixelPoint-v0", size=16, action_repeat=1, seed_episodes=1,
        collect_steps=1, batch_size=2, length=4, seed=7,
    )  # fmt: skip
    seeds, agent = EpisodeStore(tmp_path).metadata["provenance"]
    assert (seeds["policy"], seeds["seeds"], seeds["episodes"]) == ("uniform", [7, 7], 1)
    assert agent["policy"].startswith("the agent") and (agent["seed"], agent["num_envs"]) == (7, dm.num_envs)
    dm.teardown("fit")
