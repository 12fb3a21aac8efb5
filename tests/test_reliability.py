"""Crash safety and clear errors: atomic checkpoints, full disks, bad inputs, NaN losses, determinism."""

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.synthetic import moving_squares
from worldmodels.errors import NonFiniteLossError, StoreError
from worldmodels.guards import AtomicCheckpointIO, check_finite
from worldmodels.store import EpisodeStore, write_episode

ROOT = Path(__file__).parents[1]


def run_cli(*args, timeout=600, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MUJOCO_GL="egl")
    return subprocess.run(
        [sys.executable, "-m", "worldmodels.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


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
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "worldmodels.cli", *args, "--trainer.max_steps", "1000"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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
