"""M of World Models (Ha & Schmidhuber 2018): an LSTM whose mixture density head predicts the next z.

It holds a frozen V (worldmodels/vae.py) and encodes frames on the fly, so it trains on the same image batches
as every other model and its checkpoint restores the whole V + M pair. It implements the shared interface
(worldmodels/interface.py) with state ``{"z": (B, Z), "h": (B, H), "c": (B, H)}`` and features ``[z, h]``
(the paper's controller input). With the toolkit's convention (action[t] led to image[t]):

    h_t, c_t = LSTM([z_{t-1}, a_t], (h_{t-1}, c_{t-1}))      reset to zeros where is_first[t]
    p(z_t | h_t) = per-dimension mixture of ``mixtures`` Gaussians; reward_t and done_t are read from h_t.

``observe`` encodes each frame to a sampled z_t = mu + exp(logvar / 2) * N(0, I), as the official controller
does (carracing/model.py, ``Model.encode_obs``); ``observe_z="mean"`` keeps the VAE mean instead.

Values follow the official code (hardmaru/WorldModelsExperiments, carracing/rnn/rnn.py, "rnn.py" below).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.distributions import Categorical, MixtureSameFamily, Normal

from worldmodels.checkpoints import load_model
from worldmodels.distributions import onehot_sample
from worldmodels.errors import CheckpointError, ConfigError
from worldmodels.guards import check_finite
from worldmodels.interface import State
from worldmodels.vae import VAE

OBSERVE_Z = ("sample", "mean")


class MDNRNN(L.LightningModule):
    """World Models M on top of a frozen V; a ``WorldModel`` (worldmodels/interface.py)."""

    def __init__(
        self,
        vae_ckpt: str | None = None,  # checkpoint of a trained worldmodels.vae.VAE
        action_dim: int = 0,
        discrete: bool = False,
        hidden: int = 256,  # rnn.py rnn_size
        mixtures: int = 5,  # rnn.py num_mixture
        temperature: float = 1.0,  # tau for imagine(); World Models Doom: tau = 1.15 gave the best controller
        lr: float = 1e-3,  # rnn.py learning_rate (Adam)
        grad_clip: float = 1.0,  # rnn.py grad_clip, clipping each gradient element by value
        on_nonfinite: str = "stop",  # a NaN/inf loss: "stop" with an error naming the term, "skip" the batch
        image_size: int = 64,  # only used to build a fresh VAE when neither vae_ckpt nor vae is given
        z_dim: int = 32,  # idem
        vae_width: float = 1.0,  # idem
        vae: VAE | None = None,  # a VAE object from Python instead of vae_ckpt
        observe_z: str = "sample",  # observe's z: "sample" (official model.py encode_obs) or "mean"
    ) -> None:
        super().__init__()
        if observe_z not in OBSERVE_Z:
            raise ConfigError(
                f"MDNRNN observe_z={observe_z!r} (worldmodels/mdnrnn.py): use 'sample' (official) or 'mean'"
            )
        if vae is None and vae_ckpt:
            vae = load_model(vae_ckpt, expect=("worldmodels.vae.VAE",))
        elif vae is None:
            vae = VAE(image_size, z_dim, vae_width)
        self.save_hyperparameters(ignore=["vae"])
        # Record the VAE's shape so the checkpoint (and an agent's world-model spec) rebuilds it alone: its
        # weights travel in the state_dict, and the hyperparameters name no file.
        self.hparams.update(image_size=vae.image_size, z_dim=vae.z_dim, vae_width=vae.width, vae_ckpt=None)
        # V is frozen; without dropout or batch norm its train/eval mode (which follows M's) changes nothing.
        self.vae = vae.requires_grad_(False).train(self.training)
        self.z_dim, self.hidden, self.mixtures = vae.z_dim, hidden, mixtures
        self.feature_dim, self.action_dim, self.discrete = self.z_dim + hidden, action_dim, discrete
        self.image_size = vae.image_size
        self.temperature, self.lr, self.grad_clip = temperature, lr, grad_clip  # attributes: see vae.py
        self.grad_clip_algorithm = "value"  # rnn.py clips each gradient element
        self.on_nonfinite, self.observe_z = on_nonfinite, observe_z
        self.lstm = nn.LSTMCell(self.z_dim + action_dim, hidden)
        # per z dimension: K mixture logits, K means, K log standard deviations (rnn.py)
        self.mdn = nn.Linear(hidden, 3 * self.z_dim * mixtures)
        self.reward_head = nn.Linear(hidden, 1)
        self.done_head = nn.Linear(hidden, 1)

    # ---- the shared interface ----

    def initial(self, batch_size: int) -> State:
        zeros = lambda n: torch.zeros(batch_size, n, device=self.device)
        return {"z": zeros(self.z_dim), "h": zeros(self.hidden), "c": zeros(self.hidden)}

    def observe(self, images: Tensor, actions: Tensor, is_first: Tensor, state: State | None = None) -> State:
        """images (B, T, H, W, 3) uint8, actions (B, T, A), is_first (B, T) -> states (B, T, ...).

        z_t is drawn from the VAE posterior of image_t (its mean with ``observe_z="mean"``); the noise is
        drawn one step at a time, so observing in two calls draws what one call draws. ``state`` (B, ...)
        continues a previous call."""
        mu, logvar = self.vae.encode(images)  # (B, T, Z)
        z = mu
        if self.observe_z == "sample":
            # official carracing/model.py, Model.encode_obs: z = mu + exp(logvar / 2) * N(0, 1)
            noise = torch.empty_like(mu)
            for t in range(mu.shape[1]):
                noise[:, t] = torch.randn_like(mu[:, t])
            z = mu + (0.5 * logvar).exp() * noise
        state = self.initial(images.shape[0]) if state is None else state
        h, c = self._recur(z, self._actions(actions), is_first, state)
        return {"z": z, "h": h, "c": c}

    def imagine(self, state: State, action: Tensor) -> State:
        """state (B, ...), action (B, A) -> next state (B, ...), z sampled at ``self.temperature``."""
        h, c = self.lstm(torch.cat([state["z"], self._actions(action)], -1), (state["h"], state["c"]))
        mixture = self.mixture(h, self.temperature)
        pick = onehot_sample(mixture.mixture_distribution.logits)  # (B, Z, K): one component per z dimension
        normal = mixture.component_distribution
        # (B, Z): the picked component's Gaussian; MixtureSameFamily.sample would draw with torch.multinomial
        z = ((normal.loc + normal.scale * torch.randn_like(normal.loc)) * pick).sum(-1)
        return {"z": z, "h": h, "c": c}

    def features(self, state: State) -> Tensor:
        """state (...) -> [z, h] (..., Z + H)."""
        return torch.cat([state["z"], state["h"]], -1)

    def reward(self, state: State) -> Tensor:
        """state (...) -> predicted reward of the transition into that state (...)."""
        return self.reward_head(state["h"]).squeeze(-1)

    def cont(self, state: State) -> Tensor:
        """state (...) -> 1 - P(done) (...)."""
        return torch.sigmoid(-self.done_head(state["h"]).squeeze(-1))

    def reward_from_features(self, features: Tensor) -> Tensor:
        """features [z, h] (..., Z + H) -> predicted reward (...), read from h as ``reward``."""
        return self.reward(self._split(features))

    def cont_from_features(self, features: Tensor) -> Tensor:
        """features [z, h] (..., Z + H) -> 1 - P(done) (...), as ``cont``."""
        return self.cont(self._split(features))

    def _split(self, features: Tensor) -> State:
        z, h = features.split([self.z_dim, self.hidden], -1)
        return {"z": z, "h": h}

    def decode(self, state: State) -> Tensor:
        """state (...) -> images uint8 (..., H, W, 3)."""
        return self.vae.decode(state["z"])

    # ---- the model ----

    def mixture(self, h: Tensor, temperature: float = 1.0) -> MixtureSameFamily:
        """h (..., H) -> p(z | h) with batch shape (..., Z): one K-component mixture per z dimension.

        Temperature as in rnn.py sample_sequence: mixture logits / tau, standard deviations * sqrt(tau)."""
        logits, mean, log_std = rearrange(self.mdn(h), "... (p z k) -> p ... z k", p=3, k=self.mixtures)
        return MixtureSameFamily(
            Categorical(logits=logits / temperature, validate_args=False),
            Normal(mean, log_std.exp() * temperature**0.5, validate_args=False),
            validate_args=False,
        )

    def _actions(self, actions: Tensor) -> Tensor:
        if actions.shape[-1] != self.action_dim:
            raise CheckpointError(
                f"MDNRNN(action_dim={self.action_dim}) got actions of width {actions.shape[-1]}; use data "
                f"with the action space it was built for, or train one with action_dim={actions.shape[-1]}"
            )
        return actions.float()

    def _recur(self, z: Tensor, actions: Tensor, is_first: Tensor, state: State) -> tuple[Tensor, Tensor]:
        """z (B, T, Z), actions (B, T, A), is_first (B, T), state (B, ...) -> h, c (B, T, H).

        h_t = LSTM([z_{t-1}, a_t]); where is_first[t], z_{t-1}, a_t, h_{t-1}, c_{t-1} are zeroed."""
        z_prev, h, c = state["z"], state["h"], state["c"]
        keep = rearrange(~is_first.bool(), "b t -> b t 1").float()
        hs, cs = [], []
        for t in range(z.shape[1]):
            x = torch.cat([z_prev, actions[:, t]], -1) * keep[:, t]
            h, c = self.lstm(x, (h * keep[:, t], c * keep[:, t]))
            hs.append(h)
            cs.append(c)
            z_prev = z[:, t]
        return torch.stack(hs, 1), torch.stack(cs, 1)

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor], State]:
        """A batch (B, T, ...) -> (total loss, detached scalar terms, states (B, T, ...)), as every world
        model's ``loss`` (worldmodels/interface.py). Terms: loss, z_nll (per z dimension, as in rnn.py),
        reward_mse, done_bce; the states hold the sampled codes z the loss was computed on."""
        images, is_first = batch["image"], batch["is_first"].bool()
        with torch.no_grad():
            mu, logvar = self.vae.encode(images)
            # official rnn_train.py trains on sampled codes: z = mu + exp(logvar / 2) * eps
            z = Normal(mu, (0.5 * logvar).exp()).sample()
        h, c = self._recur(z, self._actions(batch["action"]), is_first, self.initial(images.shape[0]))
        # A window that starts mid-episode has no history at its first step: score that step only where it
        # opens an episode (then the model learns the distribution of first frames).
        valid = torch.ones_like(is_first)
        valid[:, 0] = is_first[:, 0]
        valid = valid.float() / valid.sum().clamp(min=1)  # (B, T) weights of a masked mean
        z_nll = -self.mixture(h).log_prob(z).mean(-1)  # (B, T)
        reward_mse = (self.reward_head(h).squeeze(-1) - batch["reward"].float()).square()
        done = self.done_head(h).squeeze(-1)
        done_bce = F.binary_cross_entropy_with_logits(done, batch["is_terminal"].float(), reduction="none")
        terms = {"z_nll": z_nll, "reward_mse": reward_mse, "done_bce": done_bce}
        terms = {k: (v * valid).sum() for k, v in terms.items()}
        total = sum(terms.values())
        metrics = {"loss": total.detach(), **{k: v.detach() for k, v in terms.items()}}
        return total, metrics, {"z": z, "h": h, "c": c}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        total, metrics, _ = self.loss(batch)
        if not check_finite(metrics, self.global_step, self.on_nonfinite):
            return None  # skip this batch
        self.log_dict({f"train/{k}": v for k, v in metrics.items()}, prog_bar=True)
        return total

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]  # the VAE stays frozen
        return torch.optim.Adam(params, lr=self.lr)  # rnn.py: Adam

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any
    ) -> None:
        if self.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="value")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["model_class"] = "worldmodels.mdnrnn.MDNRNN"
