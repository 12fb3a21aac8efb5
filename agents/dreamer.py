"""Agent head 3: Dreamer, an actor-critic learned inside the world model's imagination.

    worldmodels agent dreamer -c configs/dreamer_walker.yaml
    worldmodels agent dreamer -c configs/dreamer_walker.yaml --ckpt_path last      # resume the whole run
    worldmodels agent dreamer -c configs/dreamer_walker.yaml --world_model.ckpt runs/rssm/checkpoints/last.ckpt
    worldmodels agent dreamer -c configs/dreamer_walker.yaml --world_model.ckpt M.ckpt --offline true
    worldmodels eval --ckpt runs/dreamer_walker/checkpoints/last.ckpt --env dmc:walker-walk --action_repeat 2
    worldmodels dream --ckpt runs/dreamer_walker/checkpoints/last.ckpt --data runs/dreamer_walker/episodes \
        --out dream.mp4                   # truth | dream with the recorded actions | dream with the actor

Each training step makes three updates, each with its own Adam optimizer:

1. the world model (any ``WorldModel``: an RSSM, the VAE + MDN-RNN pair) on a replay window (B, T):
   ``world_model.loss(batch)`` with the model's own optimizer and clipping; with ``train_world_model: false``
   the model stays frozen and only filters the window (``observe``);
2. the actor: from every posterior state of the window (``flatten_time``, detached: B*T starts) the actor
   imagines ``horizon`` steps with ``world_model.imagine``; the world model's ``reward`` and ``cont`` and the
   critic score them with lambda-returns (``lambda_return``), each step weighted by the predicted chance that
   the episode is still running (``discount_weights``);
3. the critic: regresses the lambda-returns on the (detached) imagined states.

The agent reaches the world model only through worldmodels/interface.py (``loss``, ``observe``, ``imagine``,
``features``, ``reward_from_features``, ``cont_from_features``, ``configure_optimizers``, ``grad_clip``).
Offline (``--offline true``), the replay is a store or a video folder with sidecar actions and rewards, and
no environment is stepped; ``worldmodels eval`` then measures the policy in the real environment.

Versions (``version``):

* ``"v3"``, DreamerV3 (Hafner et al. 2023, arXiv 2301.04104v1) with its Table W.1 settings: critic with symlog
  two-hot outputs over 255 bins, regularized towards a slow EMA copy of itself; returns divided by
  max(1, S) with S the EMA of their 5th-95th percentile range (``ReturnScale``); actor entropy bonus 3e-4;
  Adam lr 3e-5, epsilon 1e-5, gradient clipping 100 for actor and critic; discount 1 - 1/333, lambda 0.95. The actor
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

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor, nn
from torch.distributions import (
    Distribution,
    Independent,
    Normal,
    OneHotCategoricalStraightThrough,
    TanhTransform,
    TransformedDistribution,
)

from agents.head import WorldModelHead, exploration_noise, lambda_return
from encoders.mlp import init_weights, mlp
from encoders.precision import float32_between_networks
from worldmodels.distributions import BINS, TwoHotSymlog, unimix
from worldmodels.errors import ConfigError
from worldmodels.guards import NONFINITE_MODES, check_finite
from worldmodels.interface import Carry, State, detach, flatten_time

VERSIONS: dict[str, dict[str, Any]] = {
    # DreamerV3 (arXiv 2301.04104v1), Table W.1 unless noted
    "v3": dict(
        preset="dreamerv3-S",  # the default world model; DreamerV3 code (Jan 2023) dmc_vision: size S
        style="dreamerv3",  # actor and critic MLPs: LayerNorm + SiLU
        hidden=512,  # Table B.1 size S: MLPs of 512 units
        actor_layers=2,  # Table B.1 size S: 2 MLP layers
        critic_layers=2,
        discount=1 - 1 / 333,  # Table W.1: discount horizon 333 (DreamerV3 code: discount = 1 - 1 / horizon)
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
        imagined_cont="mode",  # DreamerV3 code (behaviors.py, Jan 2023): cont = heads['cont'](traj).mode()
    ),
    # DreamerV1 (arXiv 1912.01603), App. A unless noted
    "v1": dict(
        preset="dreamerv1",  # the default world model
        style="dreamerv1",  # actor and value MLPs: ELU
        hidden=400,  # DreamerV1 code (dreamer.py): num_units 400 for the action and value models
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
        imagined_cont="mean",  # DreamerV1 code (dreamer.py _imagine): pcont = self._pcont(imag_feat).mean()
    ),
}
ACTOR_GRADS = ("backprop", "reinforce")
MIN_STD, MAX_STD = 0.1, 1.0  # DreamerV3 code: actor minstd 0.1, maxstd 1.0
V1_MEAN_SCALE, V1_INIT_STD, V1_MIN_STD = 5.0, 5.0, 1e-4  # DreamerV1 code: ActionDecoder tanh_normal
RETURN_DECAY = 0.99  # DreamerV3 Table W.1: return normalization decay 0.99
RETURN_LIMIT = 1.0  # DreamerV3 Table W.1: return normalization limit 1, divide by max(1, S)
RETURN_PERCENTILES = (0.05, 0.95)  # DreamerV3 Sec. 'Actor learning': 5th to 95th percentile


# --- returns ----------------------------------------------------------------------------------------------


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


class DreamerAgent(WorldModelHead):
    """World model + actor + critic, trained online (``agents/online.py``), or offline on a store.

    ``world_model``: any ``WorldModel`` object or spec (agents/head.py); default a fresh RSSM of the version's
    preset. ``version`` "v3" | "v1" picks the paper's settings (``VERSIONS``); every argument left at None
    takes the version's value, and the saved hyperparameters hold the values in force. ``actor_grad``
    "backprop" | "reinforce" overrides the version's estimator. ``action_dim``, ``discrete`` and
    ``image_size`` come from the data (None: the world model's).
    """

    def __init__(
        self,
        world_model: dict[str, Any] | None = None,  # or a WorldModel object (agents/head.py)
        train_world_model: bool = True,
        version: str = "v3",
        image_size: int | None = None,
        action_dim: int | None = None,
        discrete: bool | None = None,
        horizon: int = 15,  # DreamerV3 Table W.1, DreamerV1 App. A: imagination horizon 15
        discount: float | None = None,
        lambda_: float = 0.95,  # DreamerV3 Table W.1, DreamerV1 App. A: lambda 0.95
        actor_grad: str | None = None,
        actor_entropy: float | None = None,
        actor_lr: float | None = None,
        critic_lr: float | None = None,
        exploration_noise: float | None = None,
        hidden: int | None = None,
        actor_layers: int | None = None,
        critic_layers: int | None = None,
        imagined_cont: str | None = None,
        on_nonfinite: str = "stop",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["world_model"])  # first: Lightning reads this frame's arguments
        if version not in VERSIONS:
            raise ConfigError(f"DreamerAgent version {version!r} is unknown; use one of {list(VERSIONS)}")
        cfg = VERSIONS[version]
        default = {"class_path": "worldmodels.rssm.RSSM", "init_args": {"preset": cfg["preset"]}}
        self.attach(world_model, default, train_world_model, action_dim, discrete, image_size)
        given = dict(
            discount=discount,
            actor_entropy=actor_entropy,
            actor_lr=actor_lr,
            critic_lr=critic_lr,
            exploration_noise=exploration_noise,
            hidden=hidden,
            actor_layers=actor_layers,
            critic_layers=critic_layers,
            imagined_cont=imagined_cont,
        )
        resolved = dict(cfg, **{k: v for k, v in given.items() if v is not None})
        resolved["actor_lr"] = resolved.pop("actor_lr", cfg["lr"])
        resolved["critic_lr"] = resolved.pop("critic_lr", cfg["lr"])
        actor_grad = actor_grad or cfg["actor_grad_discrete" if self.discrete else "actor_grad_continuous"]
        self.hparams.update({k: resolved[k] for k in given}, actor_grad=actor_grad)  # the values in force
        self.discount = resolved["discount"]
        if resolved["imagined_cont"] not in ("mode", "mean"):
            raise ConfigError(
                f"DreamerAgent imagined_cont={resolved['imagined_cont']!r}: use 'mode' or 'mean'"
            )
        if actor_grad not in ACTOR_GRADS or on_nonfinite not in NONFINITE_MODES:
            raise ConfigError(
                f"DreamerAgent actor_grad={actor_grad!r}, on_nonfinite={on_nonfinite!r}: use an actor_grad of "
                f"{ACTOR_GRADS} and on_nonfinite of {NONFINITE_MODES}"
            )
        if self.action_dim < 1 or horizon < 1 or not 0 < self.discount <= 1 or not 0 <= lambda_ <= 1:
            raise ConfigError(
                f"DreamerAgent action_dim={self.action_dim}, horizon={horizon}, discount={self.discount}, "
                f"lambda_={lambda_}: an agent needs actions (action_dim >= 1), horizon >= 1, 0 < discount <= 1 "
                "and 0 <= lambda_ <= 1"
            )
        self.automatic_optimization = False  # up to three optimizers, stepped in training_step
        self.version, self.actor_grad, self.horizon, self.lambda_ = version, actor_grad, horizon, lambda_
        self.actor_entropy = resolved["actor_entropy"]
        self.actor_lr, self.critic_lr = resolved["actor_lr"], resolved["critic_lr"]
        self.ac_eps, self.ac_grad_clip = cfg["eps"], cfg["grad_clip"]
        self.exploration_noise = resolved["exploration_noise"]
        self.on_nonfinite = on_nonfinite  # a NaN/inf loss: "stop" naming the term, "skip" the update, "off"

        style, features, width = cfg["style"], self.world_model.feature_dim, resolved["hidden"]
        kind = "onehot" if self.discrete else cfg["continuous_actor"]
        self.actor = Actor(
            features, self.action_dim, kind, width, resolved["actor_layers"], style, cfg["discrete_unimix"]
        )
        self.twohot = cfg["critic"] == "twohot"
        self.critic = mlp(style, features, width, resolved["critic_layers"], BINS if self.twohot else 1)
        init_weights(self.actor, style)
        init_weights(self.critic, style)
        self.imagined_cont = resolved["imagined_cont"]  # "mode" (V3) or "mean" (V1) of the continue head
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
            state = self.world_model.imagine(state, action.to(features[-1].dtype))
            features.append(self.world_model.features(state))
            actions.append(action)
        return torch.stack(features, 1), torch.stack(actions, 1)

    def actor_loss(
        self, start: State, first_cont: Tensor
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """start (N, ...) detached posterior states, first_cont (N,) -> (loss, trajectory, metrics).

        "backprop": loss = -mean(w * ((R - v) / max(1, S) + eta * H[pi])), gradients through the imagined dynamics
        (and through the baseline v(s_t), whose states the earlier actions made: DreamerV3 code ``-adv``).
        "reinforce": loss = -mean(w * (log pi(a) * sg((R - v) / max(1, S)) + eta * H[pi])); imagination runs
        without gradients, so none flow through the dynamics. The trajectory (detached features (N, H, F) of
        s_0..s_{H-1}, returns (N, H), weight (N, H)) feeds ``critic_loss``. The features of the imagined states
        are computed once and shared by the reward, continue and critic heads, the policy and the trajectory."""
        backprop = self.actor_grad == "backprop"
        with torch.set_grad_enabled(backprop and torch.is_grad_enabled()):
            features, actions = self.imagine(start, reparameterize=backprop)  # (N, H+1, F), (N, H, A)
            after = features[:, 1:].contiguous()  # s_1..s_H (contiguous: see the note on s_0..s_{H-1} below)
            reward = self.world_model.reward_from_features(after).float()
            cont = self.world_model.cont_from_features(after).float()  # P(continue) (N, H)
            if self.imagined_cont == "mode":  # DreamerV3: the Bernoulli's mode, 1 or 0
                cont = (cont > 0.5).float()
            value = self.value(features)  # (N, H+1)
            returns = lambda_return(reward, value, self.discount * cont, self.lambda_)  # (N, H)
        weight = discount_weights(first_cont.float(), cont, self.discount)[:, :-1].detach()  # (N, H)
        scale = torch.ones((), device=returns.device)
        if self.return_scale is not None:
            self.return_scale.update(returns)
            scale = self.return_scale.scale()
        # s_0..s_{H-1}, copied once into contiguous memory: a Linear on the strided slice runs as a batched
        # matmul against N expanded copies of its weight (docs/benchmarks.md: 2.2 s of the M update)
        features = features[:, :-1].detach().contiguous()
        policy = self.actor(features)  # pi(. | s_t), t < H
        advantage = (
            returns - value[:, :-1]
        ) / scale  # DreamerV3 code (behaviors.py): normed_ret - normed_base
        if backprop:  # the baseline keeps its gradient through the imagined states, as in the DreamerV3 code
            objective = advantage
        else:
            objective = self.actor.log_prob(policy, actions.detach()) * advantage.detach()
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

    def _update(
        self, optimizer: LightningOptimizer, loss: Tensor, counts_as_step: bool, clip: Any = None
    ) -> None:
        """Backward, clip (``clip(optimizer)``; default the actor-critic's gradient norm), step. Only the first
        step of a training step goes through Lightning's optimizer wrapper: each wrapped step would add one to
        ``trainer.global_step`` (Lightning issue #17958), and one training step should count as one step for
        max_steps, checkpoints and the env loop."""
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if clip is None:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.ac_grad_clip, gradient_clip_algorithm="norm"
            )
        else:
            clip(optimizer)
        optimizer.step() if counts_as_step else optimizer.optimizer.step()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int = 0) -> None:
        """batch: image (B, T, H, W, 3) uint8, action (B, T, A), reward, is_first, is_terminal (B, T). Under a
        mixed-precision autocast only the networks compute in low precision (encoders/precision.py)."""
        with float32_between_networks():
            self._training_step(batch)

    def _training_step(self, batch: dict[str, Tensor]) -> None:
        optimizers = list(self.optimizers())
        metrics: dict[str, Tensor] = {}
        if self.train_world_model:
            model_opt = optimizers.pop(0)
            model_loss, metrics, posterior = self.world_model.loss(batch)
            if not check_finite(metrics, self.global_step, self.on_nonfinite):
                return  # skip the batch
            self._update(model_opt, model_loss, counts_as_step=True, clip=self.clip_world_model_gradients)
        else:  # a frozen model only filters the window
            with torch.no_grad():
                posterior = self.world_model.observe(batch["image"], batch["action"], batch["is_first"])
        actor_opt, critic_opt = optimizers

        start = detach(flatten_time(posterior))  # (B*T, ...): imagine from every posterior state
        first_cont = 1.0 - rearrange(batch["is_terminal"], "b t -> (b t)").float()
        with frozen(self.world_model, self.critic):  # the actor's loss trains the actor only
            actor_loss, trajectory, actor_metrics = self.actor_loss(start, first_cont)
        critic_metrics: dict[str, Tensor] = {}
        if check_finite({"actor": actor_loss}, self.global_step, self.on_nonfinite):
            self._update(actor_opt, actor_loss, counts_as_step=not self.train_world_model)
            del actor_loss  # the imagination graph is freed before the critic's is built (lower peak memory)
            critic_loss, critic_metrics = self.critic_loss(**trajectory)
            if check_finite({"critic": critic_loss}, self.global_step, self.on_nonfinite):
                self._update(critic_opt, critic_loss, counts_as_step=False)
                self.update_slow_critic()

        logged = {f"train/{k}": v for k, v in {**metrics, **actor_metrics, **critic_metrics}.items()}
        self.log_dict(logged, batch_size=batch["image"].shape[0])

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """The world model's own optimizer (while it trains), then Adam for the actor and the critic."""
        fused = True if self.device.type == "cuda" else None
        model = [self.world_model.configure_optimizers()] if self.train_world_model else []
        return model + [
            torch.optim.Adam(self.actor.parameters(), lr=self.actor_lr, eps=self.ac_eps, fused=fused),
            torch.optim.Adam(self.critic.parameters(), lr=self.critic_lr, eps=self.ac_eps, fused=fused),
        ]

    # --- acting ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def act(
        self, obs: Tensor, is_first: Tensor, state: Carry | None = None, explore: bool = False
    ) -> tuple[Tensor, Carry]:
        """obs (N, H, W, 3) uint8, is_first (N,) bool -> action (N, A) in [-1, 1] or one-hot, and the state to pass
        back: (posterior (N, ...), that action). ``explore`` samples the policy (plus v1's exploration noise);
        otherwise the policy's mode is taken."""
        posterior = self.observe(obs, is_first, state)
        action = self.policy(self.world_model.features(posterior), explore)
        return action, (posterior, action)

    def policy(self, features: Tensor, explore: bool = False) -> Tensor:
        """features (N, F) -> action (N, A) in [-1, 1] or one-hot: the actor's mode, or with ``explore`` a
        sample plus the version's exploration noise."""
        policy = self.actor(features)
        if not explore:
            action = self.actor.mode(policy)
        else:
            action = exploration_noise(policy.sample(), self.exploration_noise, self.discrete)
        return action if self.discrete else action.clamp(-1, 1)
