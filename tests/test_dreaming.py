"""Dreams, their metrics and videos, checked with a model whose dynamics are known exactly."""

from __future__ import annotations

import csv
import json

import imageio.v2 as iio2
import imageio.v3 as iio
import lightning
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader

from worldmodels.dreaming import (
    CONTEXT_COLOR,
    DREAM_COLOR,
    LABEL_ROWS,
    PSNR_CAP,
    DreamVideoCallback,
    dream,
    frame_metrics,
    ssim,
    video_grid,
    write_metrics,
    write_video,
)
from worldmodels.errors import CheckpointError, ConfigError, VideoError

SIZE = 16


class ShiftDynamics:
    """The state is the image; each step rolls it sideways by the action's shift (-1 to +2 px).

    Continuous actions (A = 1) shift by round(a); discrete ones (A = 4, one-hot) by index - 1.
    """

    image_size = SIZE
    grad_clip, grad_clip_algorithm = None, "norm"

    def setup_dynamics(self, discrete: bool) -> None:
        self.discrete = discrete
        self.action_dim = 4 if discrete else 1
        self.feature_dim = SIZE * SIZE * 3

    def shifts(self, action: torch.Tensor) -> list[int]:
        shift = action.argmax(-1) - 1 if self.discrete else action[:, 0].round()
        return [int(s) for s in shift]

    def initial(self, batch_size: int) -> dict[str, torch.Tensor]:
        return {"image": torch.zeros(batch_size, SIZE, SIZE, 3)}

    def observe(self, images, actions, is_first, state=None):
        return {"image": images.float()}

    def imagine(self, state, action):
        rolled = [torch.roll(img, s, dims=1) for img, s in zip(state["image"], self.shifts(action))]
        return {"image": torch.stack(rolled)}

    def features(self, state):
        return state["image"].flatten(-3) / 255

    def reward(self, state):
        return state["image"].mean(dim=(-3, -2, -1)) / 255

    def cont(self, state):
        return torch.ones(state["image"].shape[:-3])

    def reward_from_features(self, features):
        return features.mean(-1)  # = reward: features are the image / 255

    def cont_from_features(self, features):
        return torch.ones(features.shape[:-1])

    def loss(self, batch):
        states = self.observe(batch["image"], batch["action"], batch["is_first"])
        total = (states["image"] / 255 - 0.5).pow(2).mean()
        return total, {"loss": total.detach()}, states

    def decode(self, state):
        return state["image"].round().clamp(0, 255).to(torch.uint8)


class ShiftModel(ShiftDynamics, nn.Module):
    def __init__(self, discrete: bool = False) -> None:
        super().__init__()
        self.setup_dynamics(discrete)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def shifting_batch(batch: int = 3, length: int = 12, discrete: bool = False, seed: int = 0) -> dict:
    """Noise rolled right by 1 or 2 px per step (never back to a past frame within 8 steps).

    -> image (B, T, H, W, 3) uint8, action (B, T, A), is_first (B, T)."""
    rng = np.random.default_rng(seed)
    images = np.zeros((batch, length, SIZE, SIZE, 3), np.uint8)
    images[:, 0] = rng.integers(0, 256, (batch, SIZE, SIZE, 3))
    shifts = rng.choice([1, 2], (batch, length))
    shifts[:, 0] = 0  # action[0] is zeros: nothing led to the first frame
    for t in range(1, length):
        for b in range(batch):
            images[b, t] = np.roll(images[b, t - 1], shifts[b, t], axis=1)
    shifts_t = torch.as_tensor(shifts)
    action = F.one_hot(shifts_t + 1, 4).float() if discrete else shifts_t[..., None].float()
    if discrete:
        action[:, 0] = 0
    is_first = torch.zeros(batch, length, dtype=torch.bool)
    is_first[:, 0] = True
    return {"image": torch.as_tensor(images), "action": action, "is_first": is_first}


@pytest.mark.parametrize("discrete", [False, True])
def test_dream_of_known_dynamics_matches_truth_and_beats_copying(discrete):
    data = shifting_batch(discrete=discrete)
    out = dream(ShiftModel(discrete), data["image"], data["action"], data["is_first"], context=4, horizon=7)

    assert out["truth"].shape == out["dream"].shape == (3, 7, SIZE, SIZE, 3)
    assert out["dream"].dtype == np.uint8 and out["context_recon"].shape == (3, 4, SIZE, SIZE, 3)
    np.testing.assert_array_equal(out["truth"], data["image"][:, 4:11].numpy())
    np.testing.assert_array_equal(out["dream"], out["truth"])  # recorded actions, aligned: exact
    np.testing.assert_array_equal(out["context_recon"], out["context"])
    np.testing.assert_allclose(out["reward_pred"], out["truth"].mean(axis=(2, 3, 4)) / 255, rtol=1e-5)

    metrics = frame_metrics(out["truth"], out["dream"], last_context=out["context"][:, -1])
    assert all(metrics[k].shape == (7,) for k in ("mse", "psnr", "ssim", "baseline_mse", "baseline_ssim"))
    np.testing.assert_array_equal(metrics["mse"], 0)
    np.testing.assert_array_equal(metrics["psnr"], PSNR_CAP)
    np.testing.assert_allclose(metrics["ssim"], 1, atol=1e-5)
    assert (metrics["baseline_mse"] > 0.01).all()
    assert (metrics["baseline_psnr"] < 30).all() and (metrics["baseline_ssim"] < 0.5).all()


def test_dream_random_actions_are_valid_and_seeded():
    data = shifting_batch(discrete=True)
    model = ShiftModel(discrete=True)
    out = dream(model, data["image"], data["action"], data["is_first"], 2, 9, "random", torch.manual_seed(1))
    actions = out["actions"]
    assert actions.shape == (3, 9, 4)
    assert set(np.unique(actions)) == {0.0, 1.0} and (actions.sum(-1) == 1).all()
    assert len(np.unique(actions.argmax(-1))) > 1

    data = shifting_batch(discrete=False)
    model = ShiftModel(discrete=False)
    args = (model, data["image"], data["action"], data["is_first"], 2, 9, "random")
    first = dream(*args, generator=torch.Generator().manual_seed(1))["actions"]
    again = dream(*args, generator=torch.Generator().manual_seed(1))["actions"]
    assert first.shape == (3, 9, 1) and (np.abs(first) <= 1).all() and first.std() > 0.3
    np.testing.assert_array_equal(first, again)


def test_dream_rejects_bad_lengths_and_action_widths():
    data = shifting_batch(length=12)
    model = ShiftModel()
    with pytest.raises(ConfigError, match="horizon=10"):
        dream(model, data["image"], data["action"], data["is_first"], context=5, horizon=10)
    with pytest.raises(CheckpointError, match="action_dim=4"):
        dream(ShiftModel(discrete=True), data["image"], data["action"], data["is_first"], 2, 5)


def test_dream_restores_training_mode():
    data = shifting_batch()
    model = ShiftModel().train()
    dream(model, data["image"], data["action"], data["is_first"], 2, 5)
    assert model.training


def test_ssim_is_one_for_identical_images_and_low_for_noise():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (2, 4, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(ssim(a, a), 1, atol=1e-5)
    assert ssim(a, a).shape == (4,)
    assert (np.abs(ssim(a, b)) < 0.1).all()


def test_video_grid_marks_context_and_dream():
    data = shifting_batch(batch=2)
    out = dream(ShiftModel(), data["image"], data["action"], data["is_first"], context=3, horizon=5)
    frames = video_grid(out["truth"], out["dream"], out["context_recon"], out["context"], pad=2, labels=None)
    height, width = 2 + 2 * (SIZE + 2), 2 + 3 * (SIZE + 2)
    assert frames.shape == (8, height, width, 3) and frames.dtype == np.uint8
    assert tuple(frames[0, 0, 0]) == CONTEXT_COLOR and tuple(frames[2, 0, 0]) == CONTEXT_COLOR
    assert tuple(frames[3, 0, 0]) == DREAM_COLOR and tuple(frames[-1, 0, 0]) == DREAM_COLOR
    # second sequence, first dream step: truth | dream | error (zero for a perfect dream)
    y = 2 + SIZE + 2
    np.testing.assert_array_equal(frames[3, y : y + SIZE, 2 : 2 + SIZE], out["truth"][1, 0])
    np.testing.assert_array_equal(frames[3, y : y + SIZE, 20 : 20 + SIZE], out["dream"][1, 0])
    np.testing.assert_array_equal(frames[3, y : y + SIZE, 38 : 38 + SIZE], 0)
    assert video_grid(out["truth"], out["dream"], labels=None).shape == (5, height, width, 3)


def test_video_grid_names_its_columns_in_a_header():
    data = shifting_batch(batch=2)
    out = dream(ShiftModel(), data["image"], data["action"], data["is_first"], context=3, horizon=5)
    plain = video_grid(out["truth"], out["dream"], out["context_recon"], out["context"], labels=None)
    frames = video_grid(out["truth"], out["dream"], out["context_recon"], out["context"])
    assert frames.shape == (8, LABEL_ROWS + plain.shape[1], plain.shape[2], 3)
    np.testing.assert_array_equal(frames[:, LABEL_ROWS:], plain)  # the grid below is unchanged
    header = frames[3, :LABEL_ROWS]  # a dream frame: "truth", "dream", "error" in white on red
    for column in range(3):
        x = 2 + column * (SIZE + 2)  # SIZE // 6 letters of each name fit a column
        assert (header[:, x : x + SIZE, 2] > 128).sum() > 5  # white (antialiased) text on red in every column
    assert not np.array_equal(frames[0, :LABEL_ROWS], header)  # context frames: "recon", on green


@pytest.mark.parametrize(("suffix", "size"), [(".mp4", (21, 31)), (".gif", (20, 30)), (".webm", (20, 30))])
def test_write_video_round_trip(tmp_path, suffix, size):
    frames = np.random.default_rng(0).integers(0, 256, (6, *size, 3), dtype=np.uint8)
    path = write_video(tmp_path / f"dream{suffix}", frames, fps=10, scale=2)
    back = iio2.mimread(path, format="FFMPEG") if suffix != ".gif" else list(iio.imread(path, index=None))
    expected = (size[0] * 2, size[1] * 2)
    assert len(back) == 6 and back[0].shape[:2] == expected


def test_write_video_pads_odd_sizes_and_rejects_unknown_suffix(tmp_path):
    frames = np.zeros((3, 21, 31, 3), np.uint8)
    back = iio2.mimread(write_video(tmp_path / "odd.mp4", frames, scale=1), format="FFMPEG")
    assert back[0].shape[:2] == (22, 32)
    assert iio.imread(write_video(tmp_path / "small.gif", frames[:, :16, :16]), index=0).shape[:2] == (
        256,
        256,
    )
    with pytest.raises(VideoError, match="dream.avi"):
        write_video(tmp_path / "dream.avi", frames)


def test_write_metrics_writes_csv_json_png(tmp_path):
    rng = np.random.default_rng(0)
    keys = ("mse", "psnr", "ssim", "baseline_mse", "baseline_psnr", "baseline_ssim")
    metrics = {k: rng.random(7) for k in keys}
    paths = write_metrics(tmp_path, metrics)
    assert paths["csv"] == tmp_path / "dream_metrics.csv"

    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == 7 and list(rows[0]) == ["step", *keys]
    assert rows[0]["step"] == "1" and float(rows[6]["ssim"]) == pytest.approx(metrics["ssim"][6], rel=1e-5)
    summary = json.loads(paths["json"].read_text())
    assert summary["mean"]["mse"] == pytest.approx(metrics["mse"].mean())
    assert len(summary["per_step"]["baseline_ssim"]) == 7
    assert iio.imread(paths["png"]).ndim == 3

    prefixed = write_metrics(tmp_path / "runs" / "walker", {"mse": np.zeros(3)})
    assert prefixed["csv"] == tmp_path / "runs" / "walker.csv" and prefixed["png"].exists()


class ShiftLit(ShiftDynamics, lightning.LightningModule):
    """The known dynamics as a trainable LightningModule: observed images are scaled by a learnt gain."""

    def __init__(self) -> None:
        super().__init__()
        self.setup_dynamics(discrete=False)
        self.gain = nn.Parameter(torch.tensor(0.9))

    def observe(self, images, actions, is_first, state=None):
        return {"image": images.float() * self.gain}

    def training_step(self, batch, batch_idx):
        return self.loss(batch)[0]

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def sequences(seed: int) -> list[dict]:
    batch = shifting_batch(batch=4, length=8, seed=seed)
    return [{k: v[i] for k, v in batch.items()} for i in range(4)]


def fit(tmp_path, callback, logger, val: bool = False) -> None:
    trainer = lightning.Trainer(
        max_steps=3, logger=logger, callbacks=[callback], accelerator="cpu", devices=1,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=1, log_every_n_steps=1, default_root_dir=tmp_path,
    )  # fmt: skip
    val_loader = DataLoader(sequences(seed=1), batch_size=2) if val else None
    trainer.fit(ShiftLit(), DataLoader(sequences(seed=0), batch_size=2), val_loader)


def test_callback_logs_dream_video_to_tensorboard(tmp_path):
    callback = DreamVideoCallback(every_n_steps=2, context=3, horizon=45, num_sequences=2)
    logger = TensorBoardLogger(tmp_path, name="tb")
    fit(tmp_path, callback, logger)

    assert callback.batch_source == "train" and callback.batch["image"].shape == (2, 8, SIZE, SIZE, 3)
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    videos = events.Images("dream/video")
    assert [v.step for v in videos] == [2, 3]  # every 2 steps and at the end of training
    gif = iio.imread(videos[-1].encoded_image_string, extension=".gif", index=None)
    assert gif.shape[0] == 8  # 3 context + horizon clipped to the 5 frames left
    assert [s.step for s in events.Scalars("dream/mse")] == [2, 3]
    assert events.Scalars("dream/baseline_mse")[0].value > 0


def test_callback_prefers_validation_batch_and_tolerates_other_loggers(tmp_path):
    callback = DreamVideoCallback(every_n_steps=1, context=2, horizon=4, num_sequences=1)
    fit(tmp_path, callback, CSVLogger(tmp_path, name="csv"), val=True)
    val_first = sequences(seed=1)[0]["image"]
    assert callback.batch_source == "val"
    torch.testing.assert_close(callback.batch["image"][0], val_first)
    rows = list(csv.DictReader(next(tmp_path.glob("csv/*/metrics.csv")).open()))
    assert sum(bool(r.get("dream/mse")) for r in rows) == 3

    fit(tmp_path, DreamVideoCallback(every_n_steps=1), logger=False)  # no logger at all: dreams, logs nothing
