import numpy as np
import pytest
import torch

from tests.synthetic import moving_squares
from tests.test_store import marked, steps_of
from worldmodels.data import SequenceDataModule, SequenceDataset, SequenceSampler, open_source
from worldmodels.errors import StoreError
from worldmodels.store import EpisodeStore, new_key


def make_store(path, lengths, size=8):
    store = EpisodeStore(path, create=True, metadata={"env": "synthetic"})
    for i, length in enumerate(lengths):
        episode = moving_squares(episodes=1, length=length, size=size, seed=i)[0]
        episode["reward"] = np.full(length, float(i), np.float32)  # reward tells which episode a step is from
        store.add(episode)
    return EpisodeStore(path)


def test_windows_have_length_and_mark_episode_starts(tmp_path):
    store = make_store(tmp_path, [5, 7, 3])
    sampler = SequenceSampler([store], length=12, seed=0)
    for _ in range(50):
        window = sampler.sample()
        assert window["image"].shape == (12, 8, 8, 3) and window["action"].shape == (12, 2)
        source_episode = window["reward"]
        changes = np.nonzero(np.diff(source_episode))[0] + 1
        assert window["is_first"][changes].all(), "every episode change inside a window is marked is_first"
        assert window["is_first"].sum() == len(changes) + window["is_first"][0]


def test_sampling_is_uniform_over_time_steps(tmp_path):
    store = make_store(tmp_path, [10, 30])
    sampler = SequenceSampler([store], length=1, seed=0)
    first = np.array([sampler.sample()["reward"][0] for _ in range(4000)])
    by_length = {store.lengths()[i]: (first == store.episode(i)["reward"][0]).mean() for i in range(2)}
    assert by_length[30] == pytest.approx(0.75, abs=0.03)


def test_sampler_sees_episodes_written_later(tmp_path):
    store = make_store(tmp_path, [4])
    sampler = SequenceSampler([store], length=2, seed=0, refresh_every=0.0)
    EpisodeStore(tmp_path).add(moving_squares(episodes=1, length=4, size=8, seed=9)[0])
    sampler.sample()
    assert len(sampler.items) == 2


def test_datamodule_batches_and_workers_see_different_samples(tmp_path):
    make_store(tmp_path, [20, 20, 20])
    dm = SequenceDataModule(str(tmp_path), batch_size=4, length=6, workers=2, seed=1)
    assert (dm.image_size, dm.action_dim, dm.discrete) == (8, 2, False)
    loader = dm.train_dataloader()
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == 4:
            break
    batch = batches[0]
    assert batch["image"].shape == (4, 6, 8, 8, 3) and batch["image"].dtype == torch.uint8
    assert batch["action"].dtype == torch.float32 and batch["is_first"].dtype == torch.bool
    # batches 0 and 1 come from different workers (round robin): their samples must differ
    assert not torch.equal(batches[0]["image"], batches[1]["image"])


def test_ranks_draw_different_samples(tmp_path, monkeypatch):
    make_store(tmp_path, [50, 50])
    samples = []
    for rank in (0, 1):
        monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.distributed, "get_rank", lambda rank=rank: rank)
        stream = iter(SequenceDataset([str(tmp_path)], length=5, size=None, seed=0, on_corrupt="warn"))
        samples.append(np.stack([next(stream)["image"] for _ in range(4)]))
    assert not np.array_equal(samples[0], samples[1])


def test_open_source_errors(tmp_path):
    with pytest.raises(StoreError, match="no such file"):
        open_source(tmp_path / "missing")
    with pytest.raises(StoreError, match="neither an episode store"):
        open_source(tmp_path)
    make_store(tmp_path / "s", [4], size=8)
    with pytest.raises(StoreError, match="--size 16"):
        open_source(tmp_path / "s", size=16)


def test_a_window_of_an_episode_still_being_collected_is_sampleable_after_one_chunk(tmp_path):
    growing = marked(10, base=100.0)
    writer = EpisodeStore(tmp_path, create=True)
    key = new_key()
    reader = EpisodeStore(tmp_path)
    with pytest.raises(StoreError, match="no steps to sample"):
        SequenceSampler([reader], length=4, seed=0)
    writer.write_chunk(key, 0, steps_of(growing, 0, 4))
    assert reader.refresh() == 1 and len(reader) == 0 and reader.unfinished() == {key: 4}
    sampler = SequenceSampler([reader], length=4, seed=0)
    window = sampler.sample()  # the only window: the chunk's 4 steps
    np.testing.assert_array_equal(window["image"], growing["image"][:4])
    np.testing.assert_array_equal(window["reward"], [100, 101, 102, 103])
    assert window["is_first"].tolist() == [True, False, False, False] and not window["is_last"].any()
    np.testing.assert_array_equal(reader.read_unfinished(key, 1, 3)["action"], growing["action"][1:4])


def test_no_window_crosses_into_unwritten_steps_or_into_another_episode(tmp_path):
    store = EpisodeStore(tmp_path, create=True)
    store.add(marked(5, seed=1))  # rewards 0..4, finished
    growing, key = marked(20, seed=2, base=100.0), new_key()
    for start in (0, 3):  # 6 of its 20 steps written, in chunks of 3
        store.write_chunk(key, start, steps_of(growing, start, start + 3))
    sampler = SequenceSampler([EpisodeStore(tmp_path)], length=4, seed=0)
    # 5 finished steps + 3 windows inside the 6 written steps (starting at 0, 1, 2): weight 3/8 for them
    assert sampler.open_starts.tolist() == [3] and sampler.ends.tolist() == [5]
    starts = []
    for _ in range(800):
        reward = sampler.sample()["reward"]
        if reward.max() >= 100:  # from the unfinished episode: all of it, consecutive, inside steps 0..5
            assert reward.min() >= 100 and reward.max() <= 105
            np.testing.assert_array_equal(np.diff(reward), [1, 1, 1])
            starts.append(int(reward[0]) - 100)
    assert sorted(set(starts)) == [0, 1, 2]
    assert len(starts) / 800 == pytest.approx(3 / 8, abs=0.05)
    contiguous = SequenceSampler([EpisodeStore(tmp_path)], length=4, seed=0, contiguous=True)
    for _ in range(100):  # 2 windows in the finished episode, 3 in the unfinished one
        reward = contiguous.sample()["reward"]
        assert reward[0] in (0, 1, 100, 101, 102) and np.diff(reward).tolist() == [1, 1, 1]
    with pytest.raises(StoreError, match="steps 4..8"):
        store.read_unfinished(key, 4, 4)  # past the written steps
