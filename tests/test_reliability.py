"""Crash safety and clear errors: atomic checkpoints, full disks, bad inputs, NaN losses, determinism."""

import errno
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.cli import run_cli, start_cli
from tests.synthetic import moving_squares
from worldmodels.errors import NonFiniteLossError, StoreError
from worldmodels.guards import AtomicCheckpointIO, check_finite
from worldmodels.store import EpisodeStore, episode_key, write_episode


def test_checkpoint_save_that_dies_leaves_the_previous_one(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)

    def dies_midway(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # stands in for the process being killed mid-write

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_disk_full_while_writing_an_episode(tmp_path, monkeypatch):
    first, second = moving_squares(episodes=2, length=6, size=8)
    kept = write_episode(tmp_path, first)
    before = kept.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", disk_full)
    with pytest.raises(StoreError, match=r"No space left on device\); free disk space"):
        write_episode(tmp_path, second)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept.name]
    assert kept.read_bytes() == before and len(EpisodeStore(tmp_path)) == 1


def test_check_finite_names_the_term_and_step():
    good = {"image": torch.tensor(1.0), "kl": torch.tensor(0.5)}
    assert check_finite(good, step=3)
    bad = {"image": torch.tensor(1.0), "reward": torch.tensor(float("nan"))}
    with pytest.raises(NonFiniteLossError, match="at step 7: reward=nan"):
        check_finite(bad, step=7)
    assert check_finite(bad, step=7, mode="skip") is False
    assert check_finite(bad, step=7, mode="off") is True


def losses(csv_path):
    import csv

    with open(csv_path) as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    return {int(r["step"]): float(r["train/loss"]) for r in rows}


def test_fit_killed_with_sigkill_resumes_from_its_last_checkpoint(tmp_path):
    store = EpisodeStore(tmp_path / "data", create=True)
    for episode in moving_squares(episodes=6, length=20, size=16):
        store.add(episode)
    run = tmp_path / "run"
    args = [
        "fit",
        "-c",
        "configs/tiny_rssm.yaml",
        "--data.path",
        str(store.root),
        "--trainer.default_root_dir",
        str(run),
        "--checkpoint_every",
        "10",
        "--trainer.log_every_n_steps",
        "1",
        "--model.init_args.lr",
        "3e-3",
    ]
    proc = start_cli(*args, "--trainer.max_steps", "1000")
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "step40.ckpt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before it could be killed"
        time.sleep(0.2)
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait()
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    step = saved["global_step"]
    assert step >= 30 and "RNGState" in str(saved["callbacks"].keys())
    before = losses(run / "csv" / "version_0" / "metrics.csv")

    resumed = run_cli(*args, "--trainer.max_steps", str(step + 10), "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = losses(run / "csv" / "version_1" / "metrics.csv")
    # Lightning logs the n-th batch at step n - 1: the first run logged from 0, the resumed one goes on at `step`
    assert min(before) == 0 and min(after) == step and max(after) == step + 9
    final = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert final["global_step"] == step + 10
    assert len(final["optimizer_states"][0]["state"]) > 0  # Adam moments came back and went on
    start = np.mean([before[s] for s in range(5)])
    end = np.mean([before[s] for s in range(step - 5, step)])
    resumed_start = np.mean([after[s] for s in range(step, step + 5)])
    assert end < 0.8 * start  # it was learning
    assert abs(resumed_start - end) < 0.25 * (start - end), (start, end, resumed_start)  # no jump back


def test_a_fresh_run_into_an_old_folder_replaces_last_ckpt(tmp_path):
    store = EpisodeStore(tmp_path / "data", create=True)
    for episode in moving_squares(episodes=3, length=20, size=16):
        store.add(episode)
    run = tmp_path / "run"
    args = ["fit", "-c", "configs/tiny_rssm.yaml", "--data.path", str(store.root)]
    args += [
        "--trainer.default_root_dir",
        str(run),
        "--checkpoint_every",
        "4",
        "--trainer.enable_progress_bar",
        "false",
    ]
    for steps in ("8", "4"):  # the second run is shorter and starts over (no --ckpt_path)
        result = run_cli(*args, "--trainer.max_steps", steps)
        assert result.returncode == 0, result.stderr[-2000:]
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == ["last.ckpt", "step4.ckpt", "step8.ckpt"]  # no last-v1.ckpt, no step4-v1.ckpt
    assert (
        torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
    )  # the new run


def test_same_seed_gives_the_same_losses(tmp_path):
    store = EpisodeStore(tmp_path / "data", create=True)
    for episode in moving_squares(episodes=4, length=20, size=16):
        store.add(episode)
    curves = []
    for name in ("a", "b"):
        result = run_cli(
            "fit",
            "-c",
            "configs/tiny_rssm.yaml",
            "--data.path",
            str(store.root),
            "--trainer.default_root_dir",
            str(tmp_path / name),
            "--trainer.max_steps",
            "8",
            "--trainer.log_every_n_steps",
            "1",
            "--seed_everything",
            "3",
        )
        assert result.returncode == 0, result.stderr[-2000:]
        curves.append(losses(tmp_path / name / "csv" / "version_0" / "metrics.csv"))
    assert len(curves[0]) == 8 and curves[0] == curves[1]


def one_line_error(result, *fragments):
    """The CLI's promise for user errors: exit status 2 and one line on stderr naming what, where and what to do."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.startswith("worldmodels: error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny VAE and a tiny RSSM checkpoint (16x16 images, 2-d actions) and the store they were trained on."""
    import lightning as L

    from worldmodels.data import SequenceDataModule
    from worldmodels.rssm import RSSM
    from worldmodels.vae import VAE

    root = tmp_path_factory.mktemp("ckpts")
    store = EpisodeStore(root / "store", create=True)
    for episode in moving_squares(episodes=3, length=20, size=16):
        store.add(episode)
    data = SequenceDataModule(str(store.root), batch_size=2, length=8)
    paths = {"store": store.root}
    for name, model in {
        "vae": VAE(image_size=16, z_dim=4),
        "rssm": RSSM(
            "dreamerv3-XS", image_size=16, action_dim=2, deter=16, hidden=16, cnn_depth=4, stoch=4, classes=4
        ),
    }.items():
        trainer = L.Trainer(
            max_steps=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(model, data)
        paths[name] = root / f"{name}.ckpt"
        trainer.save_checkpoint(paths[name])
    return paths


def test_cli_user_errors_are_one_line_with_status_2(tmp_path, checkpoints):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a checkpoint")
    one_line_error(
        run_cli("collect", "--env", "dmc:cartpol-swingup", "--episodes", "1", "--out", str(tmp_path)),
        "dmc:cartpole-swingup",
        "worldmodels envs",
    )
    one_line_error(run_cli("info", str(tmp_path / "missing")), "missing", "no such file")
    one_line_error(
        run_cli("dream", "--ckpt", str(checkpoints["vae"]), "--data", str(checkpoints["store"])),
        "vae.ckpt",
        "holds a VAE",
        "RSSM",
    )
    one_line_error(
        run_cli("dream", "--ckpt", str(notes), "--data", "x"),
        "notes.txt",
        "cannot read checkpoint",
    )
    big = EpisodeStore(tmp_path / "big", create=True)
    big.add(moving_squares(episodes=1, length=60, size=32)[0])
    one_line_error(
        run_cli("dream", "--ckpt", str(checkpoints["rssm"]), "--data", str(big.root)),
        "32px",
        "16",
        "re-collect",
    )
    one_line_error(
        run_cli("eval", "--ckpt", str(checkpoints["rssm"]), "--env", "Pendulum-v1"),
        "rssm.ckpt",
        "2-dim continuous actions",
        "1-dim continuous actions",
    )


def test_unknown_or_mistyped_config_key_exits_2(tmp_path, checkpoints):
    result = run_cli(
        "fit",
        "-c",
        "configs/tiny_rssm.yaml",
        "--data.path",
        str(checkpoints["store"]),
        "--model.init_args.detr",
        "8",
    )
    assert result.returncode == 2 and "detr" in result.stderr
    result = run_cli(
        "fit",
        "-c",
        "configs/tiny_rssm.yaml",
        "--data.path",
        str(checkpoints["store"]),
        "--trainer.max_steps",
        "many",
    )
    assert result.returncode == 2 and "max_steps" in result.stderr


def test_nan_rewards_in_a_dataset_are_never_used(tmp_path):
    good, bad = moving_squares(episodes=2, length=10, size=8)
    bad["reward"][3] = np.nan
    write_episode(tmp_path, good)
    (tmp_path / "bad.npz").write_bytes(b"")
    np.savez(tmp_path / "nan.npz", **bad)  # written around the store's validation, as a foreign tool might
    result = run_cli("info", str(tmp_path))
    assert result.returncode == 0 and "episodes: 1" in result.stdout
    assert "nan.npz: reward contains NaN" in result.stderr and "bad.npz" in result.stderr


def test_skipped_files_are_told_even_when_python_warnings_are_ignored(tmp_path, monkeypatch):
    """``PYTHONWARNINGS=ignore`` (common in scripts) silences ``warnings``; what the readers skipped is told on
    the worldmodels logger instead: on stderr in every command, and in the run's worldmodels.log for fit."""
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    good, other, bad = moving_squares(episodes=3, length=10, size=16)
    store = tmp_path / "store"
    store.mkdir()
    write_episode(store, good)
    write_episode(store, other)
    bad["reward"][3] = np.nan
    np.savez(store / "nan.npz", **bad)
    (store / "empty.npz").write_bytes(b"")
    result = run_cli("info", str(store))
    assert result.returncode == 0 and "episodes: 2" in result.stdout
    assert "nan.npz: reward contains NaN" in result.stderr and "empty.npz" in result.stderr
    run = tmp_path / "run"
    args = ["--data.path", str(store), "--data.length", "8", "--data.batch_size", "2"]
    result = run_cli(
        "fit", "-c", "configs/tiny_rssm.yaml", *args, "--trainer.max_steps", "2",
        "--trainer.default_root_dir", str(run),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "worldmodels: warning: skipping corrupt episode" in result.stderr and "nan.npz" in result.stderr
    log = (run / "worldmodels.log").read_text()
    assert "nan.npz: reward contains NaN" in log and "empty.npz" in log
    import imageio.v3 as iio

    videos = tmp_path / "videos"
    videos.mkdir()
    frames = np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
    iio.imwrite(videos / "good.mp4", frames, fps=10, macro_block_size=1)
    data = (videos / "good.mp4").read_bytes()
    (videos / "cut.mp4").write_bytes(data[: len(data) // 2])  # a truncated video
    result = run_cli("info", str(videos))
    assert result.returncode == 0 and "videos: 1" in result.stdout and "cut.mp4" in result.stderr


def test_broken_videos_are_named_or_skipped(tmp_path):
    import imageio.v3 as iio

    frames = np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "good.mp4", frames, fps=10, macro_block_size=1)
    (tmp_path / "empty.mp4").write_bytes(b"")
    data = (tmp_path / "good.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    result = run_cli("info", str(tmp_path))  # default: skip broken files with a warning naming each
    assert result.returncode == 0 and "videos: 1" in result.stdout
    assert "empty.mp4" in result.stderr and "cut.mp4" in result.stderr
    (tmp_path / "good.mp4").unlink()
    one_line_error(run_cli("info", str(tmp_path)), str(tmp_path))
    np.savez(tmp_path / "clip.npz", action=np.zeros((5, 2), np.float32))
    iio.imwrite(tmp_path / "clip.mp4", frames, fps=10, macro_block_size=1)
    (tmp_path / "empty.mp4").unlink()
    (tmp_path / "cut.mp4").unlink()
    result = run_cli("info", str(tmp_path))
    one_line_error(result, str(tmp_path), "none of its 1 videos is readable")
    assert "clip.npz" in result.stderr and "5" in result.stderr and "8" in result.stderr


def nan_at_step_2_batches():
    episodes = moving_squares(episodes=2, length=8, size=16)
    batch = {k: torch.from_numpy(np.stack([e[k] for e in episodes])) for k in episodes[0]}
    batches = [{k: v.clone() for k, v in batch.items()} for _ in range(4)]
    batches[2]["reward"][0, 3] = float("inf")
    return torch.utils.data.DataLoader(batches, batch_size=None)


@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_nonfinite_loss_stops_at_its_step_or_skips_the_batch(mode):
    import lightning as L

    from worldmodels.rssm import RSSM

    torch.manual_seed(0)
    model = RSSM(
        "dreamerv1", image_size=16, action_dim=2, deter=8, stoch=4, hidden=8, cnn_depth=4, on_nonfinite=mode
    )
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    if mode == "stop":
        with pytest.raises(NonFiniteLossError, match="at step 2: .*reward=inf"):
            trainer.fit(model, nan_at_step_2_batches())
    else:
        trainer.fit(model, nan_at_step_2_batches())
        adam = trainer.optimizers[0].state[next(model.parameters())]
        assert int(adam["step"]) == 3  # 4 batches, the bad one left the weights alone
        assert all(torch.isfinite(p).all() for p in model.parameters())


AGENT_LOOPS = {
    "planet": [
        "agent", "planet", "-c", "configs/planet_tiny.yaml", "--data.seed_episodes", "2", "--data.train_every", "5",
        "--data.batch_size", "4", "--data.length", "8",
        "--model.planner_options", '{"horizon": 3, "candidates": 20, "iterations": 2, "top_k": 4}',
    ],
    "dreamer": ["agent", "dreamer", "-c", "configs/dreamer_tiny.yaml", "--data.length", "8"],
}  # fmt: skip


def written_steps(episodes_dir):
    """Key -> steps in the chunk files of each unfinished episode in a store (read from the names only)."""
    return {
        folder.name: max(int(c.name[9:17]) for c in folder.glob("*.npz"))
        for folder in (episodes_dir / "unfinished").glob("[!.]*")
        if list(folder.glob("*.npz"))
    }


def transitions(lengths):
    return sum(n - 1 for n in lengths)  # an episode's first step is a reset, not a policy step


@pytest.mark.parametrize("head", sorted(AGENT_LOOPS))
def test_agent_loop_killed_with_sigkill_loses_and_duplicates_no_episode(tmp_path, head):
    episodes_dir, run = tmp_path / "episodes", tmp_path / "run"
    args = [
        *AGENT_LOOPS[head], "--data.path", str(episodes_dir), "--trainer.default_root_dir", str(run),
        "--checkpoint_every", "5", "--trainer.log_every_n_steps", "1", "--data.chunk_steps", "4",
    ]  # fmt: skip
    proc = start_cli(*args, "--trainer.max_steps", "1000")
    deadline = time.monotonic() + 300
    # Dreamer collects a step or two per training step: kill it early in an episode (4 to 16 of its 30 steps
    # in chunks), so the kill leaves an unfinished episode. PlaNet collects whole episodes at once: anywhere.
    while not (run / "checkpoints" / "step20.ckpt").exists() or (
        head == "dreamer" and not any(4 <= n <= 16 for n in written_steps(episodes_dir).values())
    ):
        assert proc.poll() is None and time.monotonic() < deadline, "the loop ended before it could be killed"
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    before = {p.name: p.read_bytes() for p in episodes_dir.glob("*.npz")}
    killed = EpisodeStore(episodes_dir, on_corrupt="raise")
    assert len(killed) == len(before)  # every visible episode and chunk is whole
    left = {key: killed.unfinished_episode(key) for key in killed.unfinished()}
    assert head == "planet" or len(left) == 1
    steps_on_disk = transitions(killed.lengths()) + transitions(len(e["image"]) for e in left.values())
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    step = saved["global_step"]
    assert step >= 15 and "RNGState" in str(saved["callbacks"].keys())

    resumed = run_cli(*args, "--trainer.max_steps", str(step + 10), "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = {p.name: p.read_bytes() for p in episodes_dir.glob("*.npz")}
    assert all(after.get(name) == data for name, data in before.items())  # nothing lost or rewritten
    closed = {episode_key(name): name for name in after if episode_key(name) in left}
    assert sorted(closed) == sorted(left)  # each unfinished episode became one finished, truncated episode
    store = EpisodeStore(episodes_dir)
    for key, steps in left.items():
        episode = store.episode(store.paths.index(episodes_dir / closed[key]))
        assert closed[key] == f"{key}-{len(steps['image'])}.npz" and not episode["is_terminal"].any()
        for name in ("image", "action", "reward", "is_first"):
            np.testing.assert_array_equal(episode[name], steps[name])  # its written steps, each once
        assert not (episodes_dir / "unfinished" / key).exists()
    lengths = dict(zip((p.name for p in store.paths), store.lengths()))
    assert transitions(lengths[name] for name in [*before, *closed.values()]) == steps_on_disk  # none lost
    if head == "planet":  # seed episodes are not collected again; one per 5 steps after that
        assert len(after) == len(before) + len(left) + 2
    else:  # 1 policy step per training step (batch 4 x 8, ratio 32): 10 of a 30-step episode, which the
        # run's end stores as a truncated episode (it has chunks)
        assert len(after) == len(before) + len(left) + 1
    contents = [store.episode(i)["image"].tobytes() for i in range(len(after))]
    assert len(set(contents)) == len(contents)  # no episode stored twice
    assert len({episode_key(name) for name in after}) == len(after) and written_steps(episodes_dir) == {}
    final = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert final["global_step"] == step + 10
    adam_steps = [float(o["state"][0]["step"]) for o in final["optimizer_states"]]
    assert adam_steps == [step + 10] * len(adam_steps)  # every optimizer went on from its saved moments
    logged = [losses(p) for p in sorted(run.glob("csv/version_*/metrics.csv"))]
    assert len(logged) == 2 and min(logged[1]) == step  # the resumed run logs on from the saved step


COLLECTOR = """
import sys, time, torch
from agents.online import OnlineDataModule

class SlowRandom:  # 20 ms per step: a 30-step PixelPoint episode takes 0.6 s
    def act(self, obs, is_first, state, explore):
        time.sleep(0.02)
        return torch.rand(obs.shape[0], 1) * 2 - 1, None

dm = OnlineDataModule(sys.argv[1], env="worldmodels.pixel_point:PixelPoint-v0", size=16, action_repeat=1,
                      seed_episodes=1, collect_steps=1, batch_size=2, length=4, chunk_steps=4)
while True:
    dm.collect(SlowRandom(), steps=1)
    print(dm.agent_steps(), flush=True)  # what it reports as written
"""


def collector(path):
    from agents.online import OnlineDataModule

    return OnlineDataModule(
        str(path), env="worldmodels.pixel_point:PixelPoint-v0", size=16, action_repeat=1, seed_episodes=1,
        collect_steps=1, batch_size=2, length=4, chunk_steps=4,
    )  # fmt: skip


def test_collector_killed_with_sigkill_mid_episode_loses_and_doubles_no_written_step(tmp_path):
    import subprocess
    import sys

    from tests.cli import ROOT, cli_env

    store_dir, report = tmp_path / "store", tmp_path / "report.txt"
    with open(report, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", COLLECTOR, str(store_dir)], cwd=ROOT, env=cli_env(), stdout=out
        )
    try:
        deadline = time.monotonic() + 300
        # kill once a policy episode has finished and the next has 8 to 16 of its 30 steps in chunks
        while not (
            len(list(store_dir.glob("*.npz"))) >= 2
            and 8 <= max(written_steps(store_dir).values(), default=0) <= 16
        ):
            assert proc.poll() is None and time.monotonic() < deadline, (
                "the collector ended before it could be killed"
            )
            time.sleep(0.005)
    finally:
        proc.kill()  # also when the wait fails
    proc.wait()
    reported = int(report.read_text().split()[-1])
    finished = {p.name: p.read_bytes() for p in store_dir.glob("*.npz")}
    killed = EpisodeStore(store_dir, on_corrupt="raise")
    [key] = killed.unfinished()
    steps = killed.unfinished_episode(key)
    on_disk = transitions(killed.lengths()) + len(steps["image"]) - 1
    assert reported <= on_disk  # every step reported written is on disk (the report lags the disk by a step)

    resumed = collector(store_dir)  # the writer's next start closes the unfinished episode
    # the counter reads what is on disk: nothing lost, nothing doubled
    assert resumed.agent_steps() == on_disk
    store = EpisodeStore(store_dir, on_corrupt="raise")
    names = [p.name for p in store.paths]
    assert set(names) == {*finished, f"{key}-{len(steps['image'])}.npz"} and store.unfinished() == {}
    assert all((store_dir / name).read_bytes() == data for name, data in finished.items())
    closed = store.episode(names.index(f"{key}-{len(steps['image'])}.npz"))
    for name in ("image", "action", "reward", "is_first"):
        np.testing.assert_array_equal(closed[name], steps[name])
    assert closed["is_last"][-1] and not closed["is_terminal"].any()
    assert len(store) == len(finished) + 1  # the seed episode was not collected again
    resumed.teardown("fit")


def test_controller_evolution_killed_with_sigkill_resumes_the_same_search(tmp_path):
    from agents.controller import read_evolution
    from tests.test_controller import SIZE, _mdnrnn, _save
    from worldmodels.collect import collect

    model = _save(_mdnrnn(), tmp_path / "mdnrnn.ckpt")
    store = tmp_path / "store"
    collect("Pendulum-v1", 2, store, size=SIZE, seed=0, max_steps=12, progress=False)
    args = [
        "agent", "controller", "-c", "configs/controller_carracing_dream.yaml", "--model", model,
        "--data", str(store), "--population", "6", "--rollouts", "2", "--horizon", "5", "--context", "3",
        "--eval_every", "1000", "--eval_rollouts", "2", "--device", "cpu", "--progress", "false",
    ]  # fmt: skip

    def generation(out):
        try:
            return read_evolution(out / "checkpoints" / "last.ckpt")["generation"]
        except FileNotFoundError:
            return 0

    killed = tmp_path / "killed"
    proc = start_cli(*args, "--out", str(killed), "--generations", "100000")
    deadline = time.monotonic() + 300
    while generation(killed) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, (
            "evolution ended before it could be killed"
        )
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    saved = read_evolution(killed / "checkpoints" / "last.ckpt")  # written atomically: always a whole state
    done = saved["generation"]

    target = str(done + 2)
    resumed = run_cli(*args, "--out", str(killed), "--generations", target, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = run_cli(*args, "--out", str(tmp_path / "straight"), "--generations", target)
    assert straight.returncode == 0, straight.stderr[-2000:]
    states = []
    for out in (killed, tmp_path / "straight"):
        states.append(read_evolution(out / "checkpoints" / "last.ckpt"))
    strip = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]
    assert [h["generation"] for h in states[0]["history"]] == list(range(done + 2))
    assert strip(states[0]["history"][:done]) == strip(saved["history"])  # the killed run's past is kept
    assert strip(states[0]["history"]) == strip(states[1]["history"])  # and it goes on as if never killed
    np.testing.assert_array_equal(states[0]["es"].mean, states[1]["es"].mean)


def test_fit_runs_with_ddp_on_two_cpu_processes(tmp_path):
    store = EpisodeStore(tmp_path / "data", create=True)
    for episode in moving_squares(episodes=4, length=20, size=16):
        store.add(episode)
    result = run_cli(
        "fit", "-c", "configs/tiny_rssm.yaml", "--data.path", str(store.root), "--trainer.default_root_dir",
        str(tmp_path / "run"), "--trainer.max_steps", "4", "--trainer.strategy", "ddp", "--trainer.devices", "2",
        "--trainer.accelerator", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stderr + result.stdout
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4


def tiny_fit(tmp_path: Path, steps: int) -> list[str]:
    """`fit` arguments for configs/tiny_rssm.yaml on a small moving-squares store, into tmp_path/run."""
    store = EpisodeStore(tmp_path / "data", create=True)
    for episode in moving_squares(episodes=3, length=20, size=16):
        store.add(episode)
    args = ["fit", "-c", "configs/tiny_rssm.yaml", "--data.path", str(store.root)]
    return [*args, "--trainer.max_steps", str(steps), "--trainer.default_root_dir", str(tmp_path / "run")]


def test_a_run_states_its_cost_per_step_and_its_time_to_max_steps_and_notes_bf16_on_a_cpu(tmp_path):
    args = [*tiny_fit(tmp_path, steps=30), "--trainer.enable_progress_bar", "false"]
    result = run_cli(*args, "--trainer.precision", "bf16-mixed")
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("cost: "))
    per_step, minutes = re.fullmatch(
        r"cost: ([0-9.]+) s per training step over the first 20; 10 steps to max_steps 30: about (\d+) min more",
        line,
    ).groups()
    assert float(per_step) > 0 and int(minutes) == round(10 * float(per_step) / 60)
    assert "note: precision bf16-mixed on a CPU" in result.stdout


def test_a_run_into_a_log_prints_plain_progress_lines_and_none_of_lightnings_start_up_chatter(tmp_path):
    args = tiny_fit(tmp_path, steps=100)
    result = run_cli(*args, "--ckpt_path", "last")
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert f"--ckpt_path last: no {tmp_path / 'run' / 'checkpoints' / 'last.ckpt'} yet, a fresh run" in output
    assert re.search(r"^step 100/100: train/loss [0-9.]+", result.stdout, re.MULTILINE)  # not a progress bar
    for chatter in (
        "GPU available",
        "TPU available",
        "Tip:",
        "Seed set",
        "val_dataloader",
        "LeafSpec",
        "HINT",
        "Total length of `list`",
    ):
        assert chatter not in output, chatter
    assert "\r" not in output
