"""Agent head 3: Dreamer, an actor-critic learned inside the world model's imagination.

    worldmodels agent dreamer -c configs/dreamer_walker.yaml
    worldmodels agent dreamer -c configs/dreamer_walker.yaml --ckpt_path last      # resume the whole run
    worldmodels eval --ckpt runs/dreamer_walker/checkpoints/last.ckpt --env dmc:walker-walk --action-repeat 2
    worldmodels dream --ckpt runs/dreamer_walker/checkpoints/last.ckpt --data runs/dreamer_walker/episodes \
        --out dream.mp4                   # truth | dream with the recorded actions | dream with the actor

Each training step makes three updates, each with its own Adam optimizer:

1. the world model (an RSSM) on a replay window (B, T): ``world_model.loss(batch)``;
2. the actor: from every posterior state of the window (``flatten_time``, detached: B*T starts) the actor
   imagines ``horizon`` steps with ``world_model.imagine``; the world model's ``reward`` and ``cont`` and the
   critic score them with lambda-returns (``lambda_return``), each step weighted by the predicted chance that
   the episode is still running (``discount_weights``);
3. the critic: regresses the lambda-returns on the (detached) imagined states.

The agent reaches the world model only through ``loss``, ``observe``, ``imagine``, ``features``, ``reward``,
``cont`` and ``decode`` (worldmodels/interface.py).

Versions (``version``):

* ``"v3"``, DreamerV3 (Hafner et al. 2023, arXiv 2301.04104v1) with its Table W.1 settings: critic with symlog
  two-hot outputs over 255 bins, regularized towards a slow EMA copy of itself; returns divided by
  max(1, S) with S the EMA of their 5th-95th percentile range (``ReturnScale``); actor entropy bonus 3e-4;
  Adam lr 3e-5, epsilon 1e-5, gradient clipping 100 for actor and critic; discount 0.997, lambda 0.95. The actor
  is a Normal(tanh(mean), std in [0.1, 1]) for continuous actions and a 1%-unimix categorical for discrete ones.
  Its gradient estimator follows the paper's first version and its code (Jan 2023: ``actor_grad_cont:
  backprop``, ``actor_grad_disc: reinforce``): dynamics backpropagation for continuous actions (maximize
  R / max(1, S) through ``imagine``) and REINFORCE for discrete ones (``log pi(a) * sg((R - v) / max(1, S))``,
  no gradient through the dynamics). The 2024 revision of the paper uses REINFORCE for both; set
  ``actor_grad: reinforce`` for that.
* ``"v1"``, DreamerV1 (Hafner et al. 2020, arXiv 1912.01603, App. A): the ``dreamerv1`` RSSM preset (Gaussian
  latents), a tanh-Gaussian actor trained by dynamics backpropagation of the lambda-returns, a value model
  regressed with a squared error, discount 0.99, actor and value lr 8e-5, no return normalization, no entropy
  bonus, Gaussian exploration noise 0.3 while collecting.

Indexing (both versions, as the DreamerV3 code): an imagined trajectory holds states s_0..s_H (s_0 a posterior
state) and actions a_0..a_{H-1}, a_t = actor(s_t) leading to s_{t+1}; the reward and continuation of that step
are ``reward(s_{t+1})`` and ``cont(s_{t+1})`` (reward[t] is received on the step that led to image[t],
worldmodels/__init__.py).
"""

from __future__ import annotations

import argparse
import copy
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from lightning.pytorch.core.optimizer import LightningOptimizer
from matplotlib.figure import Figure
from torch import Tensor, nn
from torch.distributions import (
    Distribution,
    Independent,
    Normal,
    OneHotCategoricalStraightThrough,
    TanhTransform,
    TransformedDistribution,
)

from agents.online import agent_cli
from worldmodels.data import SequenceDataModule
from worldmodels.distributions import BINS, TwoHotSymlog, unimix
from worldmodels.dream_cli import load_actions
from worldmodels.dreaming import frame_metrics, random_actions, video_grid, write_metrics, write_video
from worldmodels.errors import ConfigError
from worldmodels.guards import NONFINITE_MODES, check_finite
from worldmodels.interface import State, detach, flatten_time, last_step, open_loop, stack_time
from worldmodels.rssm import PRESETS, build_rssm, mlp

VERSIONS: dict[str, dict[str, Any]] = {
    # DreamerV3 (arXiv 2301.04104v1), Table W.1 unless noted
    "v3": dict(
        preset="dreamerv3-S",  # DreamerV3 code (Jan 2023) dmc_vision: deter 512, cnn depth 32, 2 x 512 MLPs
        discount=0.997,  # Table W.1: discount horizon 333, gamma = 1 - 1/333
        actor_grad_continuous="backprop",  # DreamerV3 code (Jan 2023): actor_grad_cont: backprop
        actor_grad_discrete="reinforce",  # DreamerV3 code (Jan 2023): actor_grad_disc: reinforce
        actor_entropy=3e-4,  # Table W.1: actor entropy scale 3e-4
        lr=3e-5,  # Table W.1: actor and critic learning rate 3e-5
        eps=1e-5,  # Table W.1: actor and critic Adam epsilon 1e-5
        grad_clip=100.0,  # Table W.1: actor and critic gradient clipping 100
        continuous_actor="normal",  # DreamerV3 code: actor_dist_cont: normal (tanh mean, std in [0.1, 1])
        discrete_unimix=0.01,  # DreamerV3 code: actor unimix 0.01
        critic="twohot",  # Sec. 'Critic learning': symlog two-hot, 255 bins
        slow_critic_decay=0.98,  # Table W.1: critic EMA decay 0.98
        slow_critic_scale=1.0,  # Table W.1: critic EMA regularizer 1
        return_scale=True,  # Sec. 'Actor learning': returns / max(1, S)
        exploration_noise=0.0,  # the stochastic actor explores by itself
        actor_layers=None,  # None: the preset's mlp_layers and hidden units (Table B.1)
        critic_layers=None,
    ),
    # DreamerV1 (arXiv 1912.01603), App. A unless noted
    "v1": dict(
        preset="dreamerv1",
        discount=0.99,  # App. A: discount 0.99
        actor_grad_continuous="backprop",  # Sec. 4: analytic gradients through the learned dynamics
        actor_grad_discrete="backprop",  # DreamerV1 code: straight-through one-hot samples
        actor_entropy=0.0,  # DreamerV1 has no entropy bonus
        lr=8e-5,  # App. A: action and value model learning rate 8e-5
        eps=1e-7,  # DreamerV1 code: tf.optimizers.Adam default epsilon
        grad_clip=100.0,  # App. A: gradient norms clipped at 100
        continuous_actor="tanh_normal",  # Sec. 4: tanh-transformed Gaussian
        discrete_unimix=0.0,
        critic="mse",  # Sec. 4: value regression, 1/2 squared error
        slow_critic_decay=0.0,  # no slow critic
        slow_critic_scale=0.0,
        return_scale=False,
        exploration_noise=0.3,  # DreamerV1 code: expl_amount 0.3 (additive Gaussian)
        actor_layers=4,  # DreamerV1 code: action model with 4 dense layers
        critic_layers=3,  # DreamerV1 code: value model with 3 dense layers
    ),
}
ACTOR_GRADS = ("backprop", "reinforce")
MIN_STD, MAX_STD = 0.1, 1.0  # DreamerV3 code: actor minstd 0.1, maxstd 1.0
V1_MEAN_SCALE, V1_INIT_STD, V1_MIN_STD = 5.0, 5.0, 1e-4  # DreamerV1 code: ActionDecoder tanh_normal
RETURN_DECAY = 0.99  # DreamerV3 Table W.1: return normalization decay 0.99
RETURN_LIMIT = 1.0  # DreamerV3 Table W.1: return normalization limit 1, divide by max(1, S)
RETURN_PERCENTILES = (0.05, 0.95)  # DreamerV3 Sec. 'Actor learning': 5th to 95th percentile
GRID_PAD = 2  # pixels between the cells of `worldmodels dream` videos


# --- returns ----------------------------------------------------------------------------------------------


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


def discount_weights(first_cont: Tensor, cont: Tensor, discount: float) -> Tensor:
    """first_cont (N,), cont (N, H) -> weights (N, H+1): gamma^t * cont(s_0) * ... * cont(s_t), the chance that
    the imagined episode still runs at step t, discounted (DreamerV3 code ``traj['weight']``). ``first_cont`` is
    1 - is_terminal of the real start state."""
    conts = torch.cat([first_cont[:, None], cont], 1)
    return torch.cumprod(discount * conts, 1) / discount


class ReturnScale(nn.Module):
    """The scale S of DreamerV3's return normalization: EMAs (decay 0.99) of the 5th and 95th percentile of the
    lambda-returns; returns are divided by ``scale() = max(1, high - low)``, so large returns are scaled down
    and small ones are left alone (DreamerV3 Sec. 'Actor learning'). The EMAs start at zero, as in the
    DreamerV3 code, and are buffers: they travel with checkpoints."""

    def __init__(self, decay: float = RETURN_DECAY, limit: float = RETURN_LIMIT) -> None:
        super().__init__()
        self.decay, self.limit = decay, limit
        self.register_buffer("low", torch.zeros(()))
        self.register_buffer("high", torch.zeros(()))
        self.register_buffer("quantiles", torch.tensor(RETURN_PERCENTILES), persistent=False)  # on the device

    @torch.no_grad()
    def update(self, returns: Tensor) -> None:
        """returns (...) of one batch of imagined trajectories."""
        low, high = torch.quantile(returns.detach().float().flatten(), self.quantiles)
        self.low.lerp_(low, 1 - self.decay)
        self.high.lerp_(high, 1 - self.decay)

    def scale(self) -> Tensor:
        """-> () max(limit, high - low)."""
        return (self.high - self.low).clamp(min=self.limit)


# --- actor ------------------------------------------------------------------------------------------------


class Actor(nn.Module):
    """features (..., F) -> a distribution over actions (..., A).

    ``kind``: "normal" (DreamerV3: Normal(tanh(mean), std) with std in [0.1, 1]; samples can leave [-1, 1],
    the env sees them clipped), "tanh_normal" (DreamerV1: tanh of Normal(5 tanh(mean / 5), softplus(std + c) +
    1e-4), initial std 5) or "onehot" (categorical over one-hot actions, mixed with ``unimix`` uniform;
    straight-through ``rsample``).
    """

    def __init__(
        self,
        feature_dim: int,
        action_dim: int,
        kind: str,
        hidden: int,
        layers: int,
        style: str,
        mix: float = 0.0,
    ) -> None:
        super().__init__()
        self.kind, self.mix, self.action_dim = kind, mix, action_dim
        self.net = mlp(style, feature_dim, hidden, layers, action_dim if kind == "onehot" else 2 * action_dim)

    def forward(self, features: Tensor) -> Distribution:
        out = self.net(features).float()  # distributions in float32, also under bf16 autocast
        if self.kind == "onehot":
            return OneHotCategoricalStraightThrough(logits=unimix(out, self.mix), validate_args=False)
        mean, std = out.chunk(2, -1)
        if self.kind == "normal":
            std = (MAX_STD - MIN_STD) * torch.sigmoid(std + 2.0) + MIN_STD  # DreamerV3 code
            return Independent(Normal(torch.tanh(mean), std, validate_args=False), 1)
        mean = V1_MEAN_SCALE * torch.tanh(mean / V1_MEAN_SCALE)
        std = F.softplus(std + math.log(math.expm1(V1_INIT_STD))) + V1_MIN_STD
        tanh_normal = TransformedDistribution(
            Normal(mean, std), TanhTransform(cache_size=1), validate_args=False
        )
        return Independent(tanh_normal, 1)

    def mode(self, dist: Distribution) -> Tensor:
        """The action the policy picks without exploring: the most likely one-hot, or tanh of the Gaussian's mean."""
        if self.kind == "onehot":
            return F.one_hot(dist.probs.argmax(-1), self.action_dim).to(dist.probs.dtype)
        if self.kind == "tanh_normal":
            return torch.tanh(dist.base_dist.base_dist.loc)
        return dist.mean

    def log_prob(self, dist: Distribution, action: Tensor) -> Tensor:
        """log pi(action) (...); tanh-Gaussian actions are kept inside (-1, 1) so their log-density stays finite."""
        if self.kind == "tanh_normal":
            action = action.clamp(-1 + 1e-6, 1 - 1e-6)
        return dist.log_prob(action)


def entropy(dist: Distribution) -> Tensor:
    """Entropy (...): exact, or for the tanh-Gaussian (no closed form) the one-sample estimate -log pi(a)."""
    try:
        return dist.entropy()
    except NotImplementedError:
        return -dist.log_prob(dist.rsample())


# --- training helpers -------------------------------------------------------------------------------------


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Parameters of ``modules`` get no gradients inside (gradients still flow through them to their inputs)."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


# --- the agent --------------------------------------------------------------------------------------------


class DreamerAgent(L.LightningModule):
    """World model + actor + critic, trained online (``agents/online.py``) or on any episode store.

    ``version`` "v3" | "v1" picks the paper's settings (``VERSIONS``); every argument left at None takes the
    version's value. ``preset`` names an RSSM preset (``worldmodels.rssm.PRESETS``) and ``model_overrides``
    its sizes (e.g. ``{deter: 32, hidden: 32}``); the actor and critic MLPs take the preset's hidden units and
    layers. ``actor_grad`` "backprop" | "reinforce" overrides the version's estimator. ``action_dim``,
    ``discrete`` and ``image_size`` come from the data.
    """

    def __init__(
        self,
        version: str = "v3",
        preset: str | None = None,
        image_size: int = 64,
        action_dim: int = 1,
        discrete: bool = False,
        model_overrides: dict[str, Any] | None = None,
        horizon: int = 15,  # DreamerV3 Table W.1, DreamerV1 App. A: imagination horizon 15
        discount: float | None = None,
        lambda_: float = 0.95,  # DreamerV3 Table W.1, DreamerV1 App. A: lambda 0.95
        actor_grad: str | None = None,
        actor_entropy: float | None = None,
        actor_lr: float | None = None,
        critic_lr: float | None = None,
        exploration_noise: float | None = None,
        on_nonfinite: str = "stop",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # first: Lightning reads the arguments from this frame's locals
        if version not in VERSIONS:
            raise ConfigError(f"DreamerAgent version {version!r} is unknown; use one of {list(VERSIONS)}")
        cfg = VERSIONS[version]
        preset = cfg["preset"] if preset is None else preset
        actor_grad = actor_grad or cfg["actor_grad_discrete" if discrete else "actor_grad_continuous"]
        self.discount = cfg["discount"] if discount is None else discount
        if preset not in PRESETS or actor_grad not in ACTOR_GRADS or on_nonfinite not in NONFINITE_MODES:
            raise ConfigError(
                f"DreamerAgent preset={preset!r}, actor_grad={actor_grad!r}, on_nonfinite={on_nonfinite!r}: use a "
                f"preset of {list(PRESETS)}, an actor_grad of {ACTOR_GRADS} and on_nonfinite of {NONFINITE_MODES}"
            )
        if action_dim < 1 or horizon < 1 or not 0 < self.discount <= 1 or not 0 <= lambda_ <= 1:
            raise ConfigError(
                f"DreamerAgent action_dim={action_dim}, horizon={horizon}, discount={self.discount}, "
                f"lambda_={lambda_}: an agent needs actions (action_dim >= 1), horizon >= 1, 0 < discount <= 1 "
                "and 0 <= lambda_ <= 1"
            )
        self.automatic_optimization = False  # three optimizers, stepped in training_step
        self.version, self.actor_grad, self.horizon, self.lambda_ = version, actor_grad, horizon, lambda_
        self.image_size, self.action_dim, self.discrete = image_size, action_dim, discrete
        self.actor_entropy = cfg["actor_entropy"] if actor_entropy is None else actor_entropy
        self.actor_lr = cfg["lr"] if actor_lr is None else actor_lr
        self.critic_lr = cfg["lr"] if critic_lr is None else critic_lr
        self.ac_eps, self.ac_grad_clip = cfg["eps"], cfg["grad_clip"]
        self.exploration_noise = cfg["exploration_noise"] if exploration_noise is None else exploration_noise
        self.on_nonfinite = on_nonfinite  # a NaN/inf loss: "stop" naming the term, "skip" the update, "off"

        self.world_model = build_rssm(preset, image_size, action_dim, discrete, model_overrides)
        wm = self.world_model.config
        style, features, hidden = wm["style"], self.world_model.feature_dim, wm["hidden"]
        kind = "onehot" if discrete else cfg["continuous_actor"]
        actor_layers = cfg["actor_layers"] or wm["mlp_layers"]
        self.actor = Actor(features, action_dim, kind, hidden, actor_layers, style, cfg["discrete_unimix"])
        self.twohot = cfg["critic"] == "twohot"
        self.critic = mlp(
            style, features, hidden, cfg["critic_layers"] or wm["mlp_layers"], BINS if self.twohot else 1
        )
        if self.twohot:  # DreamerV3 code: critic output layer initialized to zeros (outscale 0)
            nn.init.zeros_(self.critic[-1].weight)
            nn.init.zeros_(self.critic[-1].bias)
        self.slow_critic_decay, self.slow_critic_scale = cfg["slow_critic_decay"], cfg["slow_critic_scale"]
        self.slow_critic = (
            copy.deepcopy(self.critic).requires_grad_(False) if self.slow_critic_scale else None
        )
        self.return_scale = ReturnScale() if cfg["return_scale"] else None

    # --- critic ------------------------------------------------------------------------------------------

    def value(self, features: Tensor, critic: nn.Module | None = None) -> Tensor:
        """features (..., F) -> v (...) from ``critic`` (default: the critic being trained)."""
        out = (self.critic if critic is None else critic)(features).float()
        return TwoHotSymlog(out).mean() if self.twohot else out.squeeze(-1)

    def critic_loss(
        self, features: Tensor, returns: Tensor, weight: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """features (N, H, F) of s_0..s_{H-1}, returns (N, H), weight (N, H) -> weighted critic loss.

        v3: two-hot cross-entropy to the returns plus the same to the slow critic's values (DreamerV3 Sec.
        'Critic learning'); v1: squared error 0.5 (v - R)^2 (DreamerV1's unit-variance Gaussian log-likelihood)."""
        features = features.detach()
        out = self.critic(features).float()
        if self.twohot:
            dist = TwoHotSymlog(out)
            loss = -dist.log_prob(returns.detach())
            if self.slow_critic is not None:
                slow = self.value(features, self.slow_critic).detach()
                loss = loss - self.slow_critic_scale * dist.log_prob(slow)
            predicted = dist.mean()
        else:
            predicted = out.squeeze(-1)
            loss = 0.5 * (predicted - returns.detach()).square()
        total = (weight.detach() * loss).mean()
        return total, {"critic_loss": total.detach(), "value": predicted.detach().mean()}

    @torch.no_grad()
    def update_slow_critic(self) -> None:
        """slow <- decay * slow + (1 - decay) * critic (DreamerV3 code: every update, fraction 0.02)."""
        if self.slow_critic is not None:
            for slow, fast in zip(self.slow_critic.parameters(), self.critic.parameters()):
                slow.lerp_(fast, 1 - self.slow_critic_decay)

    # --- actor -------------------------------------------------------------------------------------------

    def imagine(self, start: State, reparameterize: bool) -> tuple[Tensor, Tensor]:
        """start (N, ...) -> features (N, H+1, F) of s_0..s_H (start first), actions (N, H, A), a_t ~ actor(s_t).

        The actor reads detached features (DreamerV1/V3 code); ``reparameterize`` draws ``rsample`` so that
        gradients flow from later states back into the actor through ``world_model.imagine``. Only the features
        are kept: the rest of each state (its latent's statistics) is dropped as soon as the next step is made."""
        features, actions, state = [self.world_model.features(start)], [], start
        for _ in range(self.horizon):
            policy = self.actor(features[-1].detach())
            action = policy.rsample() if reparameterize else policy.sample()
            state = self.world_model.imagine(state, action.to(state["deter"].dtype))
            features.append(self.world_model.features(state))
            actions.append(action)
        return torch.stack(features, 1), torch.stack(actions, 1)

    def actor_loss(
        self, start: State, first_cont: Tensor
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """start (N, ...) detached posterior states, first_cont (N,) -> (loss, trajectory, metrics).

        "backprop": loss = -mean(w * (R / max(1, S) + eta * H[pi])), gradients through the imagined dynamics.
        "reinforce": loss = -mean(w * (log pi(a) * sg((R - v) / max(1, S)) + eta * H[pi])); imagination runs
        without gradients, so none flow through the dynamics. The trajectory (detached features (N, H, F) of
        s_0..s_{H-1}, returns (N, H), weight (N, H)) feeds ``critic_loss``. The features of the imagined states
        are computed once and shared by the reward, continue and critic heads, the policy and the trajectory."""
        backprop = self.actor_grad == "backprop"
        with torch.set_grad_enabled(backprop and torch.is_grad_enabled()):
            features, actions = self.imagine(start, reparameterize=backprop)  # (N, H+1, F), (N, H, A)
            after = features[:, 1:]  # s_1..s_H
            reward = self.world_model.reward_from_features(after).float()
            cont = self.world_model.cont_from_features(after).float()
            value = self.value(features)  # (N, H+1)
            returns = lambda_return(reward, value, self.discount * cont, self.lambda_)  # (N, H)
        weight = discount_weights(first_cont.float(), cont, self.discount)[:, :-1].detach()  # (N, H)
        scale = torch.ones((), device=returns.device)
        if self.return_scale is not None:
            self.return_scale.update(returns)
            scale = self.return_scale.scale()
        features = features[:, :-1].detach()  # s_0..s_{H-1}
        policy = self.actor(features)  # pi(. | s_t), t < H
        if backprop:
            objective = returns / scale
        else:
            advantage = ((returns - value[:, :-1]) / scale).detach()
            objective = self.actor.log_prob(policy, actions.detach()) * advantage
        policy_entropy = entropy(policy)  # (N, H)
        loss = -(weight * (objective + self.actor_entropy * policy_entropy)).mean()
        trajectory = {"features": features, "returns": returns.detach(), "weight": weight}
        metrics = {
            "actor_loss": loss.detach(),
            "return": returns.detach().mean(),
            "return_scale": scale.detach(),
            "imagined_reward": reward.detach().mean(),
            "policy_entropy": policy_entropy.detach().mean(),
            "weight": weight.mean(),
        }
        return loss, trajectory, metrics

    # --- training ----------------------------------------------------------------------------------------

    def _update(self, optimizer: LightningOptimizer, loss: Tensor, clip: float, counts_as_step: bool) -> None:
        """Backward, clip the gradient norm, step. Only the world-model step goes through Lightning's optimizer
        wrapper: each wrapped step would add one to ``trainer.global_step`` (Lightning issue #17958), and one
        training step should count as one step for max_steps, checkpoints and the env loop."""
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        optimizer.step() if counts_as_step else optimizer.optimizer.step()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int = 0) -> None:
        """batch: image (B, T, H, W, 3) uint8, action (B, T, A), reward, is_first, is_terminal (B, T)."""
        model_opt, actor_opt, critic_opt = self.optimizers()
        model_loss, metrics, posterior = self.world_model.loss(batch)
        if not check_finite(metrics, self.global_step, self.on_nonfinite):
            return  # skip the batch
        self._update(model_opt, model_loss, self.world_model.config["grad_clip"], counts_as_step=True)

        start = detach(flatten_time(posterior))  # (B*T, ...): imagine from every posterior state
        first_cont = 1.0 - rearrange(batch["is_terminal"], "b t -> (b t)").float()
        with frozen(self.world_model, self.critic):  # the actor's loss trains the actor only
            actor_loss, trajectory, actor_metrics = self.actor_loss(start, first_cont)
        critic_metrics: dict[str, Tensor] = {}
        if check_finite({"actor": actor_loss}, self.global_step, self.on_nonfinite):
            self._update(actor_opt, actor_loss, self.ac_grad_clip, counts_as_step=False)
            del actor_loss  # the imagination graph is freed before the critic's is built (lower peak memory)
            critic_loss, critic_metrics = self.critic_loss(**trajectory)
            if check_finite({"critic": critic_loss}, self.global_step, self.on_nonfinite):
                self._update(critic_opt, critic_loss, self.ac_grad_clip, counts_as_step=False)
                self.update_slow_critic()

        logged = {f"train/{k}": v for k, v in {**metrics, **actor_metrics, **critic_metrics}.items()}
        self.log_dict(logged, batch_size=batch["image"].shape[0])

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """Adam for the world model (its preset's lr and epsilon), the actor and the critic."""
        fused = True if self.device.type == "cuda" else None
        wm = self.world_model.config
        return [
            torch.optim.Adam(self.world_model.parameters(), lr=wm["lr"], eps=wm["eps"], fused=fused),
            torch.optim.Adam(self.actor.parameters(), lr=self.actor_lr, eps=self.ac_eps, fused=fused),
            torch.optim.Adam(self.critic.parameters(), lr=self.critic_lr, eps=self.ac_eps, fused=fused),
        ]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["model_class"] = "agents.dreamer.DreamerAgent"

    # --- acting ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def act(
        self, obs: Tensor, is_first: Tensor, state: tuple[State, Tensor] | None = None, explore: bool = False
    ) -> tuple[Tensor, tuple[State, Tensor]]:
        """obs (N, H, W, 3) uint8, is_first (N,) bool -> action (N, A) in [-1, 1] or one-hot, and the state to pass
        back: (posterior (N, ...), that action). ``explore`` samples the policy (plus v1's exploration noise);
        otherwise the policy's mode is taken."""
        obs, is_first = obs.to(self.device), is_first.to(self.device).bool()
        if state is None:
            state = (
                self.world_model.initial(obs.shape[0]),
                torch.zeros(obs.shape[0], self.action_dim, device=self.device),
            )
        model_state, prev_action = state
        posterior = last_step(
            self.world_model.observe(obs[:, None], prev_action[:, None], is_first[:, None], model_state)
        )
        policy = self.actor(self.world_model.features(posterior))
        action = policy.sample() if explore else self.actor.mode(policy)
        if explore and self.exploration_noise > 0:
            if self.discrete:  # epsilon-greedy, with the noise as epsilon
                random = F.one_hot(
                    torch.randint(self.action_dim, action.shape[:1], device=self.device), self.action_dim
                )
                pick = torch.rand(action.shape[0], 1, device=self.device) < self.exploration_noise
                action = torch.where(pick, random.to(action.dtype), action)
            else:
                action = action + self.exploration_noise * torch.randn_like(action)
        if not self.discrete:
            action = action.clamp(-1, 1)
        return action, (posterior, action)


def main(argv: list[str]) -> None:
    """`worldmodels agent dreamer -c RECIPE.yaml [--key value ...]`."""
    # Lightning warns that manual optimization checkpoints hold the state after the step: that is what we want.
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    agent_cli(DreamerAgent, argv)


# --- looking inside: `worldmodels dream` on a Dreamer checkpoint --------------------------------------------


@torch.no_grad()
def dream_with_actor(
    agent: DreamerAgent, batch: dict[str, Tensor], context: int, horizon: int, dream_actions: Tensor
) -> dict[str, np.ndarray]:
    """Observe ``context`` real frames of ``batch``, then dream ``horizon`` steps twice from the same posterior
    state: with ``dream_actions`` (B, horizon, A) (e.g. the recorded ones), and with the actor choosing its own
    actions (its mode, as when evaluated).

    batch: image (B, T, H, W, 3) uint8, action (B, T, A), reward (B, T), is_first (B, T), T >= context + horizon.
    Returns numpy arrays:
        truth, dream, dream_actor (B, horizon, H, W, 3) uint8   real frames, dream with dream_actions, with the actor
        context, context_recon (B, context, H, W, 3) uint8      the frames the model saw and its reconstructions
        reward_true (B, horizon)                                 the recorded rewards
        reward_dream, reward_actor, value_dream, value_actor     predicted reward and critic value of the dreams
    """
    model, device = agent.world_model, agent.device
    images, actions = batch["image"].to(device), batch["action"].to(device).float()
    posterior = model.observe(
        images[:, :context], actions[:, :context], batch["is_first"][:, :context].to(device)
    )
    start = last_step(posterior)
    dreamed = open_loop(model, start, dream_actions.to(device).float())
    steps, state = [], start
    for _ in range(horizon):
        state = model.imagine(state, agent.actor.mode(agent.actor(model.features(state))))
        steps.append(state)
    acted = stack_time(steps)
    out = {
        "truth": images[:, context : context + horizon],
        "dream": model.decode(dreamed),
        "dream_actor": model.decode(acted),
        "context": images[:, :context],
        "context_recon": model.decode(posterior),
        "reward_true": batch["reward"][:, context : context + horizon].float(),
        "reward_dream": model.reward(dreamed).float(),
        "reward_actor": model.reward(acted).float(),
        "value_dream": agent.value(model.features(dreamed)),
        "value_actor": agent.value(model.features(acted)),
    }
    return {k: v.cpu().numpy() for k, v in out.items()}


def plot_values(path: Path, metrics: dict[str, np.ndarray]) -> Path:
    """A PNG of the per-step predicted reward (next to the recorded one) and critic value of both dreams."""
    fig = Figure(figsize=(9, 3.2), layout="constrained")  # no pyplot: no global state
    reward_ax, value_ax = fig.subplots(1, 2)
    steps = np.arange(1, len(metrics["reward_true"]) + 1)
    reward_ax.plot(steps, metrics["reward_true"], "k--", label="recorded")
    for ax, name in ((reward_ax, "reward"), (value_ax, "value")):
        ax.plot(steps, metrics[f"{name}_dream"], label="dream, given actions")
        ax.plot(steps, metrics[f"{name}_actor"], label="dream, actor's actions")
        ax.set(title=f"predicted {name}", xlabel="dream step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=100)
    return path


def run_dream(args: argparse.Namespace) -> dict[str, Path]:
    """`worldmodels dream --ckpt DREAMER.ckpt --data STORE --out dream.mp4`: a video of truth | dream with the
    given actions | its error | dream with the actor's actions | its difference to the truth, and per-step
    metrics (frame errors of the first dream, predicted rewards and values of both) as CSV, JSON and PNGs.
    Returns the paths written."""
    from agents.evaluate import load_agent

    agent = load_agent(args.ckpt)
    length = args.context + args.horizon
    data = SequenceDataModule(args.data, batch_size=args.sequences, length=length, size=agent.image_size)
    batch = data.sample_batch(seed=args.seed, contiguous=True)
    shape = (args.sequences, args.horizon, agent.action_dim)
    if args.actions == "recorded":
        dream_actions = batch["action"][:, args.context : length]
    elif args.actions == "random":
        dream_actions = random_actions(*shape, agent.discrete, torch.Generator().manual_seed(args.seed))
    else:
        dream_actions = load_actions(args.actions, shape)
    with torch.random.fork_rng():
        torch.manual_seed(args.seed)  # the prior's samples
        out = dream_with_actor(agent, batch, args.context, args.horizon, dream_actions)

    given = video_grid(out["truth"], out["dream"], out["context_recon"], out["context"], pad=GRID_PAD)
    actor = video_grid(out["truth"], out["dream_actor"], out["context_recon"], out["context"], pad=GRID_PAD)
    width = out["truth"].shape[3]
    frames = np.concatenate(
        [given, actor[:, :, GRID_PAD + width :]], axis=2
    )  # the actor's grid without its truth
    video = write_video(args.out, frames)
    metrics = frame_metrics(out["truth"], out["dream"], last_context=out["context"][:, -1])
    metrics |= {k: v.mean(0) for k, v in out.items() if k.startswith(("reward", "value"))}
    prefix = video.with_name(video.stem + "_metrics")
    paths = {"video": video, **write_metrics(prefix, metrics)}
    paths["values_png"] = plot_values(video.with_name(video.stem + "_values.png"), metrics)
    print(
        f"dream: {args.sequences} sequences, {args.context} context + {args.horizon} dreamed steps ({args.actions} actions)"
    )
    for name in ("reward_true", "reward_dream", "reward_actor", "value_dream", "value_actor"):
        print(f"  {name:>12}: sum over the dream {metrics[name].sum():.3f}")
    for name, path in paths.items():
        print(f"  {name}: {path}")
    return paths
