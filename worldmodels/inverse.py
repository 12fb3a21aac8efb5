"""Inverse dynamics: which action led from one frame to another, learned from frames with recorded actions.

The store convention (worldmodels/__init__.py) is that ``action[t]`` led to frame ``t`` and ``action[0]`` is a
placeholder (zeros, or -1 for discrete actions). The model predicts ``action[t]`` for ``t >= 1`` from

* one-step (``n = 1``): frames ``t - 1`` and ``t``: p(a_t | x_{t-1}, x_t), the inverse dynamics model of VPT
  (Baker et al. 2022, arXiv 2206.11795), which labels unlabelled video with actions for behaviour cloning;
* multi-step (``n > 1``): frames ``t - 1`` and ``t - 1 + n``, the first action of the n-step gap:
  p(a_t | x_{t-1}, x_{t-1+n}), the multi-step inverse model of AC-State (Lamb et al. 2022, arXiv 2207.08229).
  The later actions of the gap are unseen noise to it, so it is less certain than a one-step model.

``history`` (h) adds the h frames before ``t - 1`` to what the model reads (frames ``t-1-h .. t-1`` and the
target frame). Where an action changes a velocity rather than a position (tests/synthetic.py's moving squares:
the action adds to the velocity), two frames show the velocity after the action but not the one before, so the
action is not determined by them; one more frame determines it. Missing history frames before an episode's
first frame repeat that first frame, in training and in labelling alike, so every action from ``t = 1`` on can
be inferred. Genie (Bruce et al. 2024, arXiv 2402.15391) infers latent actions from the whole past; this model
infers actions in the data's own action space.

The ``h + 2`` frames are stacked on the channels (3 (h + 2) channels) and go through the conv encoder of
PlaNet / Dreamer (encoders/conv.py) together, so that its first layer sees the frames' differences where they
happen ("early fusion"; VPT's model likewise starts with a temporal convolution over the frames). On moving
squares, encoding each frame alone and concatenating the embeddings overfit 400 episodes (held-out MSE above
the mean-action baseline's) where the stacked frames reached 0.73 of it (our probe, 1500 steps). An MLP maps
the embedding to the action: a mean (``loss="mse"``,
mean squared error over the action's dimensions), a mean and a log-std (``loss="gaussian"``, the negative
log-likelihood of a diagonal Gaussian; predictions are its mean), or logits over ``action_dim`` discrete actions
(cross-entropy; rows without an action, all-zero one-hots, are not targets).

Validation runs on held-out episodes (``data.val_fraction``, worldmodels/data.py) and logs, over all targets of
the validation windows: ``val/loss``; continuous ``val/action_mse``, ``val/baseline_mse`` (predicting the
mean action of those same held-out targets, the best constant prediction in hindsight, so the comparison
favours the baseline) and ``val/skill`` = 1 - action_mse / baseline_mse (0: no better than the mean action,
1: exact); discrete ``val/accuracy`` and ``val/baseline_accuracy`` (always the majority action of those
targets). ``label_actions`` infers the actions of one video; ``worldmodels label`` writes them to sidecars.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from encoders.conv import ConvEncoder, num_stages
from encoders.mlp import init_weights, mlp
from encoders.pixels import to_float
from worldmodels.checkpoints import read_model_class
from worldmodels.errors import CheckpointError, ConfigError, VideoError
from worldmodels.guards import check_finite

MODEL_CLASS = "worldmodels.inverse.InverseDynamics"
LOSSES = ("mse", "gaussian")
LOG_STD_RANGE = (-5.0, 2.0)  # our choice: keeps the Gaussian NLL finite while the std is learned
EMPTY_BATCHES = 100  # training batches in a row without a single target before the run stops with an error


def frames_needed(n: int) -> int:
    """The fewest frames a video needs for an inverse model of step gap ``n`` to infer one action: n + 1."""
    return n + 1


class InverseDynamics(L.LightningModule):
    """p(action[t] | frames t-1-h .. t-1, frame t-1+n): frame stacks uint8 (..., h + 2, H, W, 3) -> (..., A).

    Sizes are our choice for CPU-sized runs (none of the cited papers' inverse models is this small): a conv
    encoder of depth ``cnn_depth`` in the DreamerV3 style (LayerNorm + SiLU, as the RSSM's default) and an MLP of
    ``layers`` x ``hidden`` units; Adam at ``lr`` 1e-3 and gradient norms clipped at ``grad_clip`` 100 are our
    choice too (the settings of configs/inverse_1step.yaml, measured in docs/inverse.md). ``action_dim``, ``discrete`` and ``image_size`` come from the data (`worldmodels fit` links them).
    """

    def __init__(
        self,
        image_size: int = 64,
        action_dim: int = 0,
        discrete: bool = False,
        n: int = 1,
        history: int = 0,
        cnn_depth: int = 16,
        style: str = "dreamerv3",
        hidden: int = 128,
        layers: int = 2,
        loss: str = "mse",
        lr: float = 1e-3,
        grad_clip: float | None = 100.0,
        on_nonfinite: str = "stop",
    ) -> None:
        super().__init__()
        if action_dim < 1:
            raise ConfigError(
                f"InverseDynamics(action_dim={action_dim}): the data has no actions; train an inverse model on an "
                "episode store or on videos whose sidecars hold recorded actions"
            )
        if n < 1 or history < 0:
            raise ConfigError(f"InverseDynamics(n={n}, history={history}): use n >= 1 and history >= 0")
        if loss not in LOSSES:
            raise ConfigError(f"InverseDynamics(loss={loss!r}): use one of {LOSSES}")
        try:
            num_stages(image_size)
        except ValueError as e:
            raise ConfigError(f"InverseDynamics: {e}") from e
        self.save_hyperparameters()
        self.image_size, self.action_dim, self.discrete = image_size, action_dim, discrete
        self.n, self.history, self.loss_kind, self.lr = n, history, loss, lr
        self.grad_clip, self.grad_clip_algorithm, self.on_nonfinite = grad_clip, "norm", on_nonfinite
        self.encoder = ConvEncoder(image_size, cnn_depth, style, in_channels=3 * (history + 2))
        outputs = action_dim * (2 if loss == "gaussian" and not discrete else 1)
        self.head = mlp(style, self.encoder.out_dim, hidden, layers, outputs)
        init_weights(self, style)  # encoder and head as the style's paper code initializes them
        self._val: dict[str, Tensor] = {}
        self._empty = 0  # training batches in a row without a target (skipped)

    # -- the model ---------------------------------------------------------------------------------------

    def _check(self, images: Tensor) -> None:
        size = self.image_size
        if images.dtype != torch.uint8 or tuple(images.shape[-3:]) != (size, size, 3):
            raise CheckpointError(
                f"InverseDynamics(image_size={size}) got images {images.dtype} {tuple(images.shape)}; it needs "
                f"uint8 (..., {size}, {size}, 3): resize the data (--data.size {size}) or train a model of that size"
            )

    def frame_index(self, is_first: Tensor) -> tuple[Tensor, Tensor]:
        """Which frames each target of a window reads: is_first (B, T) bool -> index (B, S, h + 2) into the
        window's frames and valid (B, S) bool, S = T - n. Target s predicts action[s + 1] from frames s-h .. s
        and s + n; it is valid when frames s .. s + n lie in one episode and its history does too (history frames
        before the episode's first frame repeat that frame; history before the window: not valid)."""
        batch, length = is_first.shape
        steps = length - self.n
        if steps < 1:
            raise ConfigError(
                f"InverseDynamics(n={self.n}) got windows of {length} frames; it needs {frames_needed(self.n)} or "
                f"more: set data.length to at least {frames_needed(self.n)}"
            )
        index = torch.arange(length, device=is_first.device)
        starts = torch.where(is_first, index, torch.full_like(index, -1)).cummax(dim=1).values  # (B, T)
        firsts = is_first.long().cumsum(dim=1)  # (B, T)
        source = index[:steps].expand(batch, steps)  # s (B, S)
        valid = firsts[:, self.n :] == firsts[:, :steps]  # no episode start in (s, s + n]
        columns = []
        for k in range(self.history, 0, -1):  # frames s - h .. s - 1, clamped to the episode's first frame
            earlier = torch.maximum(source - k, starts[:, :steps])
            valid = valid & (earlier >= 0)
            columns.append(earlier.clamp(min=0))
        columns += [source, source + self.n]
        return torch.stack(columns, dim=-1), valid

    def forward(self, stacks: Tensor) -> Tensor:
        """stacks uint8 (..., h + 2, H, W, 3) -> raw head outputs (..., A) (logits for discrete actions; mean
        and log-std (..., 2A) for the "gaussian" loss)."""
        self._check(stacks)
        if stacks.ndim < 4 or stacks.shape[-4] != self.history + 2:
            raise ConfigError(
                f"InverseDynamics(history={self.history}) reads stacks of {self.history + 2} frames "
                f"(..., {self.history + 2}, H, W, 3), got {tuple(stacks.shape)}"
            )
        lead = stacks.shape[:-4]
        x = to_float(stacks.reshape(-1, *stacks.shape[-4:]))  # (N, h + 2, 3, H, W)
        out = self.head(self.encoder(x.flatten(1, 2)))
        return out.reshape(*lead, out.shape[-1])

    def predict(self, stacks: Tensor) -> Tensor:
        """stacks uint8 (..., h + 2, H, W, 3) -> actions (..., A): the mean (continuous) or the argmax one-hot
        (discrete)."""
        out = self(stacks)
        if self.discrete:
            return F.one_hot(out.argmax(-1), self.action_dim).float()
        return out[..., : self.action_dim]

    def targets(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """batch: image (B, T, H, W, 3) uint8, action (B, T, A), is_first (B, T) -> the valid targets' frame
        stacks (N, h + 2, H, W, 3) uint8 and actions (N, A)."""
        is_first = batch["is_first"].bool()
        actions = batch["action"].float()
        if actions.shape[-1] != self.action_dim:
            raise CheckpointError(
                f"InverseDynamics(action_dim={self.action_dim}) got actions {tuple(actions.shape)}; "
                "use data with the action space this model was made for"
            )
        images = batch["image"]
        self._check(images)
        index, valid = self.frame_index(is_first)  # (B, S, h + 2), (B, S)
        target = actions[:, 1 : 1 + index.shape[1]]  # action[s + 1] (B, S, A)
        if self.discrete:
            valid = valid & (target.sum(-1) > 0)  # all-zero one-hot: no action was taken
        rows = torch.arange(len(images), device=images.device)[:, None].expand_as(valid)[valid]  # (N,)
        return images[rows[:, None], index[valid]], target[valid]  # (N, h + 2, H, W, 3), (N, A)

    def losses(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor] | None:
        """batch -> (loss, detached metrics, predictions (N, A), targets (N, A)) over the batch's valid targets;
        None when it has none (every window crosses an episode start within n steps, or has no action)."""
        stacks, target = self.targets(batch)
        if len(target) == 0:
            return None
        out = self(stacks)
        if self.discrete:
            index = target.argmax(-1)  # (N,)
            loss = F.cross_entropy(out, index)
            pred = F.one_hot(out.argmax(-1), self.action_dim).float()
            metrics = {"accuracy": (out.argmax(-1) == index).float().mean()}
        else:
            mean = out[..., : self.action_dim]
            if self.loss_kind == "gaussian":
                log_std = out[..., self.action_dim :].clamp(*LOG_STD_RANGE)
                nll = 0.5 * ((target - mean) / log_std.exp()).square() + log_std + 0.5 * math.log(2 * math.pi)
                loss = nll.sum(-1).mean()
            else:
                loss = (mean - target).square().mean()
            pred = mean
            metrics = {"action_mse": (mean - target).square().mean()}
        metrics = {"loss": loss, **metrics}
        return loss, {k: v.detach() for k, v in metrics.items()}, pred.detach(), target

    # -- Lightning ---------------------------------------------------------------------------------------

    def training_step(self, batch: dict[str, Tensor], batch_idx: int = 0) -> Tensor | None:
        computed = self.losses(batch)
        self._empty = 0 if computed is not None else self._empty + 1
        if self._empty >= EMPTY_BATCHES:
            raise ConfigError(
                f"InverseDynamics: {EMPTY_BATCHES} batches in a row without a single target (every window crosses "
                f"an episode start within n={self.n} steps, or holds no action): use longer episodes or a smaller n"
            )
        if computed is None:
            return None  # skip this batch
        loss, metrics, _, target = computed
        if not check_finite(metrics, self.global_step, self.on_nonfinite):
            return None  # skip this batch
        self.log_dict({f"train/{k}": v for k, v in metrics.items()}, prog_bar=True, batch_size=len(target))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val = {}

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int = 0) -> None:
        computed = self.losses(batch)
        if computed is None:
            return
        loss, _, pred, target = computed
        count = torch.tensor(float(len(target)), device=target.device)
        sums = {"count": count, "loss": loss.detach() * count}
        if self.discrete:
            sums |= {"correct": (pred * target).sum(), "classes": target.sum(0)}
        else:
            sums |= {
                "sq_error": (pred - target).square().sum(),
                "y": target.sum(0),
                "yy": target.square().sum(0),
            }
        for key, value in sums.items():
            self._val[key] = self._val.get(key, 0) + value

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        self.log_dict(validation_metrics(self._val, self.action_dim, self.discrete))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any
    ) -> None:
        if self.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["model_class"] = MODEL_CLASS


def validation_metrics(sums: dict[str, Tensor], action_dim: int, discrete: bool) -> dict[str, Tensor]:
    """Sums over held-out targets -> ``val/`` metrics (module docstring). ``sums``: count, loss (summed), and
    discrete: correct, classes (A,) counts; continuous: sq_error, y (A,) and yy (A,), sums of targets and
    their squares."""
    count = sums["count"].clamp(min=1)
    out = {"val/loss": sums["loss"] / count}
    if discrete:
        out |= {
            "val/accuracy": sums["correct"] / count,
            "val/baseline_accuracy": sums["classes"].max() / count,
        }
    else:
        mse = sums["sq_error"] / (count * action_dim)
        variance = (sums["yy"] / count - (sums["y"] / count).square()).clamp(min=0)  # (A,)
        baseline = variance.mean()  # the MSE of predicting the targets' mean action
        out |= {
            "val/action_mse": mse,
            "val/baseline_mse": baseline,
            "val/skill": 1 - mse / baseline.clamp(min=1e-12),
        }
    return out


@torch.no_grad()
def label_actions(
    model: InverseDynamics, frames: np.ndarray | Tensor, name: str = "frames", batch: int = 256
) -> np.ndarray:
    """Infer the actions of one video: frames (T, H, W, 3) uint8 at the model's image size -> actions (T, A)
    float32 in the store convention: row t the action that led to frame t; row 0 and the last n - 1 rows (whose
    frame t - 1 + n is past the end) the placeholder, zeros. Discrete actions are one-hot rows.

    ``name`` names the video in errors; VideoError for fewer than n + 1 frames. Targets are predicted ``batch``
    at a time. Runs in eval mode."""
    frames = torch.as_tensor(np.asarray(frames))
    length = frames.shape[0] if frames.ndim == 4 else 0
    if length < frames_needed(model.n):
        raise VideoError(
            f"{name}: {length} frames, but an inverse model of step gap n={model.n} needs at least "
            f"{frames_needed(model.n)} (frames t - 1 and t - 1 + n) to infer an action; remove the video or label "
            "it with a model of smaller n"
        )
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        frames = frames.to(device)
        model._check(frames)
        is_first = torch.zeros(1, length, dtype=torch.bool, device=device)
        is_first[0, 0] = True
        index, _ = model.frame_index(is_first)  # (1, S, h + 2): one episode, every target valid
        index = index[0]
        pred = torch.cat([model.predict(frames[index[i : i + batch]]) for i in range(0, len(index), batch)])
    finally:
        model.train(was_training)
    actions = np.zeros((length, model.action_dim), np.float32)
    actions[1 : 1 + len(pred)] = pred.float().cpu().numpy()
    return actions


def sidecar_actions(actions: np.ndarray, discrete: bool) -> np.ndarray:
    """``label_actions``' (T, A) -> the sidecar's ``action`` (worldmodels/videos.py): continuous float32 (T, A)
    as it is, discrete int64 (T,) indices with -1 where a row is all zero (no action)."""
    if not discrete:
        return actions.astype(np.float32)
    return np.where(actions.sum(-1) > 0, actions.argmax(-1), -1).astype(np.int64)


def load_inverse(path: str | Path, device: str = "cpu") -> InverseDynamics:
    """An inverse-dynamics checkpoint of `worldmodels fit` in eval mode; CheckpointError for any other file."""
    name = read_model_class(path)
    if name != MODEL_CLASS:
        raise CheckpointError(
            f"{path}: holds a {name or 'file of no known model class'}, not an inverse-dynamics model; train one "
            "with `worldmodels fit -c configs/inverse_1step.yaml --data.path STORE`"
        )
    return InverseDynamics.load_from_checkpoint(path, map_location=device).eval()
