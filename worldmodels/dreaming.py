"""Dreams you can watch: open-loop rollouts of any world model, per-step metrics, videos.

    out = dream(model, images, actions, is_first, context=5, horizon=45)
    metrics = frame_metrics(out["truth"], out["dream"], last_context=out["context"][:, -1])
    write_video("dream.mp4", video_grid(out["truth"], out["dream"], out["context_recon"], out["context"]))
    write_metrics("dream", metrics)  # dream.csv, dream.json, dream.png

The model sees the first ``context`` frames (posterior, ``model.observe``), then dreams ``horizon`` steps
open loop from its prior (``model.imagine``) with the recorded (or random) actions, never seeing the frames
it predicts. ``DreamVideoCallback`` logs such a dream to TensorBoard while a model trains.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import imageio.v2 as iio2
import imageio.v3 as iio
import lightning
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from matplotlib.figure import Figure
from torch import Tensor, nn
from torchmetrics.functional.image import structural_similarity_index_measure

from worldmodels.errors import CheckpointError, ConfigError, VideoError
from worldmodels.interface import WorldModel, last_step, open_loop, stack_time

ACTION_MODES = ("recorded", "random")
PSNR_CAP = 100.0  # dB; the PSNR reported for identical frames (MSE 0) so CSV/JSON stay finite
CONTEXT_COLOR = (0, 200, 0)  # border while the model still sees real frames
DREAM_COLOR = (220, 0, 0)  # border once the open-loop dream begins
LABEL_ROWS = 11  # the column names above a video grid: PIL's default font is 11 px tall
METRICS = ("mse", "psnr", "ssim")

ArrayLike = np.ndarray | Tensor


# --- rollouts -----------------------------------------------------------------------------------------


def random_actions(
    batch_size: int, horizon: int, action_dim: int, discrete: bool, generator: torch.Generator | None = None
) -> Tensor:
    """-> (B, horizon, A) float32 on the CPU: random one-hot rows if ``discrete``, else uniform in [-1, 1]."""
    if discrete:
        index = torch.randint(action_dim, (batch_size, horizon), generator=generator)
        return F.one_hot(index, action_dim).float()
    return torch.rand(batch_size, horizon, action_dim, generator=generator) * 2 - 1


def _model_device(model: Any, default: torch.device) -> torch.device:
    if isinstance(model, nn.Module):
        tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
        if tensor is not None:
            return tensor.device
    return default


def _numpy(x: Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


@torch.no_grad()
def dream(
    model: WorldModel,
    images: ArrayLike,
    actions: ArrayLike,
    is_first: ArrayLike,
    context: int = 5,
    horizon: int = 45,
    action_mode: str = "recorded",
    generator: torch.Generator | None = None,
    policy: Callable[[Tensor], Tensor] | None = None,
    value: Callable[[Tensor], Tensor] | None = None,
) -> dict[str, np.ndarray]:
    """Observe ``context`` real frames, then dream ``horizon`` frames open loop.

    images (B, T, H, W, 3) uint8, actions (B, T, A), is_first (B, T) bool, with T >= context + horizon.
    ``action_mode`` "recorded" feeds actions[:, context:context + horizon] (action[t] led to image[t]);
    "random" feeds random actions (``random_actions``, drawn with ``generator``).
    Returns numpy arrays:
        truth (B, horizon, H, W, 3) uint8          the real frames the dream should match
        dream (B, horizon, H, W, 3) uint8          decoded prior states
        context (B, context, H, W, 3) uint8        the real frames the model saw
        context_recon (B, context, H, W, 3) uint8  decoded posterior states
        actions (B, horizon, A) float32            the actions fed to the dream
        reward_pred (B, horizon) float32           model.reward of the dreamed states
    With a ``policy`` (features (B, F) -> actions (B, A), e.g. an agent's actor) the model also dreams from the
    same start with the policy choosing each action from the state it is in:
        dream_policy (B, horizon, H, W, 3) uint8, reward_policy (B, horizon) float32
    With a ``value`` function (features (..., F) -> (...), e.g. a critic): value_dream (and value_policy)
    (B, horizon) float32 of the dreamed states.
    Runs in eval mode and restores the model's previous mode.
    """
    images, actions, is_first = torch.as_tensor(images), torch.as_tensor(actions), torch.as_tensor(is_first)
    if images.dtype != torch.uint8 or images.ndim != 5 or images.shape[-1] != 3:
        raise ConfigError(
            f"dream: images must be uint8 (B, T, H, W, 3), got {images.dtype} {tuple(images.shape)}; "
            "pass the raw frames of a batch, not preprocessed floats"
        )
    batch, length = images.shape[:2]
    if action_mode not in ACTION_MODES:
        raise ConfigError(f"dream: unknown action_mode {action_mode!r}; use one of {ACTION_MODES}")
    if context < 1 or horizon < 1 or length < context + horizon:
        raise ConfigError(
            f"dream: context={context} + horizon={horizon} frames do not fit sequences of length {length}; "
            "use context >= 1, horizon >= 1 and longer sequences or a shorter horizon"
        )
    if actions.shape[:2] != (batch, length) or actions.shape[-1] != model.action_dim:
        raise CheckpointError(
            f"dream: actions {tuple(actions.shape)} do not match images {tuple(images.shape)} and the "
            f"model's action_dim={model.action_dim}; use a checkpoint trained on this data"
        )
    if images.shape[2] != model.image_size:
        raise CheckpointError(
            f"dream: images are {images.shape[2]}px but the model was trained on {model.image_size}px; "
            "use a checkpoint trained on this data or resize the frames"
        )
    device = _model_device(model, images.device)
    images, actions, is_first = images.to(device), actions.to(device).float(), is_first.to(device).bool()
    if action_mode == "recorded":
        dream_actions = actions[:, context : context + horizon]
    else:
        dream_actions = random_actions(batch, horizon, model.action_dim, model.discrete, generator).to(device)

    was_training = model.training if isinstance(model, nn.Module) else None
    if isinstance(model, nn.Module):
        model.eval()
    try:
        posterior = model.observe(images[:, :context], actions[:, :context], is_first[:, :context])
        start = last_step(posterior)
        prior = open_loop(model, start, dream_actions)  # (B, horizon, ...)
        out = {
            "truth": images[:, context : context + horizon],
            "dream": model.decode(prior),
            "context": images[:, :context],
            "context_recon": model.decode(posterior),
            "actions": dream_actions,
            "reward_pred": model.reward(prior).float(),
        }
        if value is not None:
            out["value_dream"] = value(model.features(prior)).float()
        if policy is not None:
            steps, state = [], start
            for _ in range(horizon):
                state = model.imagine(state, policy(model.features(state)))
                steps.append(state)
            acted = stack_time(steps)
            out |= {"dream_policy": model.decode(acted), "reward_policy": model.reward(acted).float()}
            if value is not None:
                out["value_policy"] = value(model.features(acted)).float()
    finally:
        if was_training is not None:
            model.train(was_training)
    return {k: _numpy(v) for k, v in out.items()}


# --- metrics ------------------------------------------------------------------------------------------


def _unit_float(images: ArrayLike) -> Tensor:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W) in [0, 1]."""
    images = torch.as_tensor(images)
    return rearrange(images.float() / 255.0, "... h w c -> ... c h w")


def ssim(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """SSIM per image of uint8 (..., H, W, 3) pairs -> (...): Gaussian window 11, sigma 1.5 on each channel,
    averaged over channels and pixels (Wang et al. 2004; torchmetrics' implementation)."""
    x, y = _unit_float(a), _unit_float(b)
    lead = x.shape[:-3]
    values = structural_similarity_index_measure(
        x.reshape(-1, *x.shape[-3:]),
        y.reshape(-1, *y.shape[-3:]),
        gaussian_kernel=True,
        sigma=1.5,
        kernel_size=11,
        data_range=1.0,
        reduction="none",
    )
    return _numpy(values.reshape(lead))


def _per_step(truth: ArrayLike, pred: ArrayLike) -> dict[str, np.ndarray]:
    """(B, T, H, W, 3) uint8 pairs -> mse, psnr, ssim (T,), each averaged over the batch."""
    x, y = _unit_float(truth), _unit_float(pred)
    mse = ((x - y) ** 2).mean(dim=(-3, -2, -1))  # (B, T)
    psnr = 10 * torch.log10(1 / mse.clamp(min=10 ** (-PSNR_CAP / 10)))
    return {
        "mse": _numpy(mse.mean(0)),
        "psnr": _numpy(psnr.mean(0)),
        "ssim": ssim(truth, pred).mean(0),
    }


def frame_metrics(
    truth: ArrayLike, dream: ArrayLike, last_context: ArrayLike | None = None
) -> dict[str, np.ndarray]:
    """Per-step metrics of a dream: truth, dream (B, T, H, W, 3) uint8 -> {"mse", "psnr", "ssim"} (T,).

    Images are scaled to [0, 1]; PSNR is per image (capped at ``PSNR_CAP`` dB), then averaged over the
    batch. With ``last_context`` (B, H, W, 3), the last frame the model saw, also the metrics of the
    copy-last-frame baseline ("baseline_mse", ...): a dream that does not beat it has learned no dynamics.
    """
    if tuple(truth.shape) != tuple(dream.shape) or len(truth.shape) != 5:
        raise ValueError(f"truth {tuple(truth.shape)} and dream {tuple(dream.shape)} must be (B, T, H, W, 3)")
    metrics = _per_step(truth, dream)
    if last_context is not None:
        baseline = repeat(torch.as_tensor(last_context), "b h w c -> b t h w c", t=truth.shape[1])
        metrics |= {f"baseline_{k}": v for k, v in _per_step(truth, baseline).items()}
    return metrics


def write_metrics(out: str | Path, metrics: Mapping[str, np.ndarray]) -> dict[str, Path]:
    """Write per-step metrics (T,) as CSV, JSON and a PNG plot -> {"csv", "json", "png"} paths.

    ``out`` is an existing directory (files ``dream_metrics.*`` inside) or a path prefix (``<out>.csv``...).
    CSV: one row per dream step (1 = first dreamed frame). JSON: per-step lists and their means.
    Plot: one panel per metric over the horizon, the copy-last-frame baseline dashed.
    """
    out = Path(out)
    prefix = out / "dream_metrics" if out.is_dir() else out
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = {ext: prefix.with_name(f"{prefix.name}.{ext}") for ext in ("csv", "json", "png")}
    columns = {k: np.asarray(v, dtype=np.float64) for k, v in metrics.items()}
    steps = np.arange(1, len(next(iter(columns.values()))) + 1)

    with open(paths["csv"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", *columns])
        for i, step in enumerate(steps):
            writer.writerow([int(step), *(f"{v[i]:.6g}" for v in columns.values())])

    summary = {
        "steps": len(steps),
        "mean": {k: float(v.mean()) for k, v in columns.items()},
        "per_step": {k: v.tolist() for k, v in columns.items()},
    }
    paths["json"].write_text(json.dumps(summary, indent=2))

    names = [m for m in METRICS if m in columns]
    fig = Figure(figsize=(4 * len(names), 3.2), layout="constrained")  # no pyplot: Agg, no global state
    for ax, name in zip(fig.subplots(1, len(names), squeeze=False)[0], names):
        ax.plot(steps, columns[name], label="dream")
        if f"baseline_{name}" in columns:
            ax.plot(steps, columns[f"baseline_{name}"], "--", label="copy last frame")
        ax.set(title=f"{name} ({'lower' if name == 'mse' else 'higher'} is better)", xlabel="dream step")
        ax.grid(alpha=0.3)
    fig.axes[0].legend()
    fig.savefig(paths["png"], dpi=100)
    return paths


# --- videos -------------------------------------------------------------------------------------------


def _grid_frames(cells: np.ndarray, color: tuple[int, int, int], pad: int) -> np.ndarray:
    """cells (T, rows, cols, H, W, 3) uint8 -> (T, H', W', 3): a grid on a background of ``color``."""
    steps, rows, cols, h, w, _ = cells.shape
    out = np.empty((steps, pad + rows * (h + pad), pad + cols * (w + pad), 3), np.uint8)
    out[:] = color
    for r in range(rows):
        for c in range(cols):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            out[:, y : y + h, x : x + w] = cells[:, r, c]
    return out


def _error(a: np.ndarray, b: np.ndarray, gain: float) -> np.ndarray:
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16)) * gain
    return np.clip(diff, 0, 255).astype(np.uint8)


def _label(frames: np.ndarray, names: tuple[str, ...], width: int, pad: int) -> np.ndarray:
    """frames (T, H', W', 3) -> (T, LABEL_ROWS + H', W', 3): a header of the frames' background colour naming
    each column (white text, PIL's default font), so that a video says which column is which."""
    from PIL import Image, ImageDraw

    header = Image.fromarray(np.broadcast_to(frames[0, :1, :1], (LABEL_ROWS, frames.shape[2], 3)).copy())
    draw = ImageDraw.Draw(header)
    for c, name in enumerate(names):
        draw.text((pad + c * (width + pad), 0), name[: max(1, width // 6)], fill=(255, 255, 255))
    top = np.broadcast_to(np.asarray(header), (len(frames), *np.asarray(header).shape))
    return np.concatenate([top, frames], axis=1)


def video_grid(
    truth: np.ndarray,
    dream: np.ndarray,
    context_recon: np.ndarray | None = None,
    context: np.ndarray | None = None,
    pad: int = 2,
    error_gain: float = 3.0,
    labels: tuple[str, str, str] | None = ("truth", "dream", "error"),
) -> np.ndarray:
    """Frames to watch a dream: truth, dream (B, T, H, W, 3) uint8 -> (C + T, H', W', 3) uint8.

    Each frame: one row per sequence, columns truth | dream | |error| * ``error_gain``. With ``context``
    and ``context_recon`` (B, C, H, W, 3) the C context frames come first (truth | reconstruction | error)
    on a green background (``CONTEXT_COLOR``); dream frames are on red (``DREAM_COLOR``), so the start of
    the open loop is visible. ``labels`` names the columns in a header of ``LABEL_ROWS`` rows (the context
    frames' middle column reads "recon"); None leaves it out.
    """
    if (context is None) != (context_recon is None):
        raise ValueError("video_grid: pass both context and context_recon, or neither")

    def cells(real: np.ndarray, pred: np.ndarray) -> np.ndarray:  # -> (T, B, 3, H, W, 3)
        return np.stack([real, pred, _error(real, pred, error_gain)], axis=2).swapaxes(0, 1)

    width = np.asarray(truth).shape[3]
    frames = _grid_frames(cells(np.asarray(truth), np.asarray(dream)), DREAM_COLOR, pad)
    if labels is not None:
        frames = _label(frames, labels, width, pad)
    if context is not None:
        seen = _grid_frames(cells(np.asarray(context), np.asarray(context_recon)), CONTEXT_COLOR, pad)
        if labels is not None:
            seen = _label(seen, (labels[0], "recon", labels[2]), width, pad)
        frames = np.concatenate([seen, frames])
    return frames


def write_video(path: str | Path, frames: np.ndarray, fps: int = 10, scale: int | None = None) -> Path:
    """Write frames (T, H, W, 3) uint8 as .mp4, .webm or .gif (by suffix).

    ``scale`` upsamples by an integer factor (nearest neighbour); None picks the smallest factor that makes
    the shorter side at least 256 px, so 64 px dreams are watchable. mp4/webm frames are padded to even
    sizes (yuv420p needs them).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".webm", ".gif"):
        raise VideoError(
            f"write_video: cannot write {path}: unknown suffix {suffix!r}; use .mp4, .webm or .gif"
        )
    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"write_video: frames must be (T, H, W, 3) uint8, got {frames.shape}")
    if scale is None:
        scale = max(1, math.ceil(256 / min(frames.shape[1:3])))
    frames = repeat(frames, "t h w c -> t (h sh) (w sw) c", sh=scale, sw=scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        iio.imwrite(path, frames, extension=".gif", duration=1000 / fps, loop=0)  # duration in ms per frame
        return path
    frames = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)))
    codec = "libx264" if suffix == ".mp4" else "libvpx-vp9"
    iio2.mimwrite(path, list(frames), format="FFMPEG", fps=fps, codec=codec, macro_block_size=1)
    return path


def add_gif(writer: Any, tag: str, frames: np.ndarray, step: int, fps: int) -> None:
    """Log frames (T, H, W, 3) uint8 to TensorBoard as an animated GIF (shown under Images).

    ``SummaryWriter.add_video`` would do the same but needs moviepy < 2 (``moviepy.editor``) and silently
    logs nothing without it, so we encode the GIF with imageio and write the same summary proto ourselves.
    """
    from tensorboard.compat.proto.summary_pb2 import Summary

    gif = iio.imwrite("<bytes>", frames, extension=".gif", duration=1000 / fps, loop=0)
    image = Summary.Image(
        height=frames.shape[1], width=frames.shape[2], colorspace=3, encoded_image_string=gif
    )
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
    writer.flush()


# --- training callback --------------------------------------------------------------------------------

BATCH_KEYS = ("image", "action", "is_first")  # the episode-store layout the data modules batch


class DreamVideoCallback(lightning.Callback):
    """Log a dream of a fixed batch every ``every_n_steps`` training steps and at the end of training.

    The batch is the first validation batch when there is validation, else the first training batch;
    only its first ``num_sequences`` sequences are kept (on the CPU). Batches are dicts with "image"
    (B, T, H, W, 3) uint8, "action" (B, T, A) and optionally "is_first" (B, T). The LightningModule must
    implement ``worldmodels.interface.WorldModel``. TensorBoard loggers get the video grid as an animated
    GIF under ``<tag>/video``; every logger gets ``<tag>/mse``, ``psnr``, ``ssim`` and ``baseline_mse``.
    """

    def __init__(
        self,
        every_n_steps: int = 1000,
        context: int = 5,
        horizon: int = 45,
        num_sequences: int = 4,
        fps: int = 10,
        action_mode: str = "recorded",
        tag: str = "dream",
        seed: int = 0,
    ) -> None:
        if every_n_steps < 1:
            raise ConfigError(f"DreamVideoCallback: every_n_steps={every_n_steps}; use a positive number")
        if action_mode not in ACTION_MODES:
            raise ConfigError(f"DreamVideoCallback: unknown action_mode {action_mode!r}; use {ACTION_MODES}")
        self.every_n_steps, self.context, self.horizon = every_n_steps, context, horizon
        self.num_sequences, self.fps, self.action_mode = num_sequences, fps, action_mode
        self.tag, self.seed = tag, seed
        self.batch: dict[str, Tensor] | None = None
        self.batch_source: str | None = None  # "val" or "train"
        self._last_step = -1

    def _keep(self, batch: Any, source: str) -> None:
        if not isinstance(batch, Mapping) or "image" not in batch or "action" not in batch:
            got = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise ConfigError(
                f"DreamVideoCallback needs dict batches with 'image' and 'action', got {got}; "
                "use the worldmodels data modules or drop the callback"
            )
        self.batch = {
            k: batch[k][: self.num_sequences].detach().cpu().clone() for k in BATCH_KEYS if k in batch
        }
        self.batch_source = source

    def on_fit_start(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        if not isinstance(pl_module, WorldModel):
            raise ConfigError(
                f"DreamVideoCallback: {type(pl_module).__name__} does not implement "
                "worldmodels.interface.WorldModel; use it with a world model or drop the callback"
            )

    def on_validation_batch_start(
        self,
        trainer: lightning.Trainer,
        pl_module: lightning.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.batch_source != "val" and batch_idx == 0 and dataloader_idx == 0:
            self._keep(batch, "val")

    def on_train_batch_start(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.batch is None:
            self._keep(batch, "train")

    def on_train_batch_end(
        self,
        trainer: lightning.Trainer,
        pl_module: lightning.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        if step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self.log_dream(trainer, pl_module)

    def on_train_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        if trainer.global_step != self._last_step:
            self.log_dream(trainer, pl_module)

    def log_dream(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        """Dream the kept batch now and log video and metrics at ``trainer.global_step``."""
        step = trainer.global_step
        self._last_step = step
        if self.batch is None or not trainer.is_global_zero:
            return
        images = self.batch["image"]
        length = images.shape[1]
        context = min(self.context, length - 1)
        horizon = min(self.horizon, length - context)
        if context < 1 or horizon < 1:
            rank_zero_warn(
                f"DreamVideoCallback: sequences of length {length} are too short to dream; skipped"
            )
            return
        is_first = self.batch.get("is_first")
        if is_first is None:
            is_first = torch.zeros(images.shape[:2], dtype=torch.bool)
            is_first[:, 0] = True
        device = pl_module.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)  # the same prior noise at every step; training RNG untouched
            out = dream(
                pl_module,
                images,
                self.batch["action"],
                is_first,
                context,
                horizon,
                self.action_mode,
                generator=torch.Generator().manual_seed(self.seed),
            )
        metrics = frame_metrics(out["truth"], out["dream"], last_context=out["context"][:, -1])
        scalars = {
            f"{self.tag}/{k}": float(metrics[k].mean()) for k in ("mse", "psnr", "ssim", "baseline_mse")
        }
        frames = video_grid(out["truth"], out["dream"], out["context_recon"], out["context"])
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)
            if isinstance(logger, TensorBoardLogger):
                add_gif(logger.experiment, f"{self.tag}/video", frames, step, self.fps)


def plot_values(path: str | Path, metrics: Mapping[str, np.ndarray]) -> Path:
    """A PNG of the per-step predicted reward (next to the recorded one) and value of a dream with the given
    actions and of one with a policy's actions: metrics reward_true, reward_pred, reward_policy, value_dream,
    value_policy (horizon,) each."""
    fig = Figure(figsize=(9, 3.2), layout="constrained")  # no pyplot: no global state
    reward_ax, value_ax = fig.subplots(1, 2)
    steps = np.arange(1, len(metrics["reward_true"]) + 1)
    reward_ax.plot(steps, metrics["reward_true"], "k--", label="recorded")
    curves = {"reward": ("reward_pred", "reward_policy"), "value": ("value_dream", "value_policy")}
    for ax, name in ((reward_ax, "reward"), (value_ax, "value")):
        given, acted = curves[name]
        ax.plot(steps, metrics[given], label="dream, given actions")
        ax.plot(steps, metrics[acted], label="dream, policy's actions")
        ax.set(title=f"predicted {name} (higher: the model expects more)", xlabel="dream step")
        ax.grid(alpha=0.3)
        ax.legend()
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path
