"""What the PlaNet and Dreamer heads share: a world model handed to them, acting, exploration, returns.

A head is built *with* a world model (``world_model``): any object that implements
``worldmodels.interface.WorldModel`` (an RSSM, the VAE + MDN-RNN pair), or a spec that names one,
``{"ckpt": PATH}`` (a trained model, from ``worldmodels fit`` or another agent run) or
``{"class_path": ..., "init_args": {...}}`` (a fresh one); see worldmodels/checkpoints.py. The head reaches the
model through the interface only. ``train_world_model=False`` keeps the model frozen: the head then learns
its own parts (actor, critic, ensemble) on the frozen model's states.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from worldmodels.checkpoints import load_world_model, world_model_spec
from worldmodels.errors import CheckpointError
from worldmodels.interface import Carry, State, observe_step


def describe(action_dim: int, discrete: bool, image_size: int) -> str:
    return f"{action_dim}-dim {'discrete' if discrete else 'continuous'} actions and {image_size}px images"


class WorldModelHead(L.LightningModule):
    """A LightningModule whose ``world_model`` is given; PlaNetAgent and DreamerAgent derive from it.

    ``attach`` loads the model (``load_world_model``), checks it against the data's action space and image
    size (None: take the model's), freezes it unless ``train_world_model``, and records its spec in the
    hyperparameters, so the agent's checkpoint rebuilds it without the file it came from."""

    def attach(
        self,
        world_model: Any,
        default: dict[str, Any],
        train_world_model: bool,
        action_dim: int | None,
        discrete: bool | None,
        image_size: int | None,
    ) -> None:
        model = load_world_model(world_model or default, action_dim, discrete, image_size)
        have = (model.action_dim, model.discrete, model.image_size)
        want = tuple(h if w is None else w for h, w in zip(have, (action_dim, discrete, image_size)))
        if have != want:
            source = world_model.get("ckpt") if isinstance(world_model, dict) else None
            raise CheckpointError(
                f"world model {source or type(model).__name__} expects {describe(*have)}, but the data or env has "
                f"{describe(*want)}: use a model trained on this data (or collect at --size {model.image_size})"
            )
        self.world_model = model.train(self.training)  # a loaded model comes in eval mode
        self.action_dim, self.discrete, self.image_size = have
        self.train_world_model = train_world_model
        if not train_world_model:
            model.requires_grad_(False)
        self.hparams.update(
            world_model=world_model_spec(model), action_dim=have[0], discrete=have[1], image_size=have[2]
        )

    def observe(self, obs: Tensor, is_first: Tensor, carry: Carry | None) -> State:
        """The newest frames (N, H, W, 3) uint8 filtered into the posterior (N, ...) (``observe_step``)."""
        return observe_step(self.world_model, obs.to(self.device), is_first.to(self.device), carry)

    def clip_world_model_gradients(self, optimizer: Any) -> None:
        """Clip as the world model trains alone (its ``grad_clip`` and ``grad_clip_algorithm``)."""
        model = self.world_model
        if model.grad_clip:
            self.clip_gradients(
                optimizer,
                gradient_clip_val=model.grad_clip,
                gradient_clip_algorithm=model.grad_clip_algorithm,
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        cls = type(self)
        checkpoint["model_class"] = f"{cls.__module__}.{cls.__qualname__}"


def exploration_noise(action: Tensor, noise: float, discrete: bool) -> Tensor:
    """action (N, A) -> the action explored: epsilon-greedy with epsilon = ``noise`` for one-hot actions,
    Gaussian noise of std ``noise`` clipped to [-1, 1] for continuous ones (PlaNet App. A, DreamerV1 code)."""
    if noise <= 0:
        return action
    if discrete:
        batch, dim = action.shape
        random = F.one_hot(torch.randint(dim, (batch,), device=action.device), dim).to(action.dtype)
        pick = torch.rand(batch, 1, device=action.device) < noise
        return torch.where(pick, random, action)
    return (action + noise * torch.randn_like(action)).clamp(-1, 1)


def lambda_return(reward: Tensor, value: Tensor, discount: Tensor, lambda_: float) -> Tensor:
    """reward (N, H), value (N, H+1), discount (N, H) -> lambda-returns R (N, H).

    Step t goes from s_t to s_{t+1}: reward[:, t] and discount[:, t] (= gamma * cont(s_{t+1})) belong to it,
    value[:, t] = v(s_t) (DreamerV3 Sec. 'Critic learning', DreamerV1 Sec. 4 V_lambda):

        R_t = reward_t + discount_t * ((1 - lambda) * v(s_{t+1}) + lambda * R_{t+1}),    R_H = v(s_H)
    """
    returns, last = [], value[:, -1]
    for t in reversed(range(reward.shape[1])):
        last = reward[:, t] + discount[:, t] * ((1 - lambda_) * value[:, t + 1] + lambda_ * last)
        returns.append(last)
    return torch.stack(returns[::-1], 1)
