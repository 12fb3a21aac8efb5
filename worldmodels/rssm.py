"""The recurrent state-space model (RSSM) of PlaNet, DreamerV1 and DreamerV3, as one LightningModule.

A state is ``{"deter": h (B, D), "stoch": z, ...stats}`` where ``z`` is a Gaussian sample (B, S) with stats
``mean``/``std`` (PlaNet, DreamerV1), or one-hot samples (B, S, K) with stats ``logits`` (DreamerV2/V3,
stored after the 1% unimix). One step of the model:

    prior:     h_t = GRU(h_{t-1}, dense([z_{t-1}, a_t]));   z_t ~ p(z_t | h_t)        (``imagine``)
    posterior: z_t ~ q(z_t | h_t, embed(image_t))                                   (``observe``)

``action[t]`` led to ``image[t]`` (worldmodels/__init__.py), so the prior for step t reads action[t].
Features are ``[h, flatten(z)]``; the heads (image decoder, reward, continue) read them.

Losses, averaged over (B, T): image squared error summed over pixels (images in [-0.5, 0.5]); reward
squared error (PlaNet, DreamerV1) or two-hot symlog cross-entropy over 255 bins (DreamerV3); squared errors
are halved for PlaNet / DreamerV1 (their unit-variance Gaussian log-likelihood, ``sq_scale``); continue
Bernoulli cross-entropy on ``1 - is_terminal`` (DreamerV1, DreamerV3; PlaNet has no continue head and
``cont()`` returns ones); and the KL between posterior and prior:

* PlaNet: ``kl_scale * mean max(0, KL - free_nats)``, each step clipped (planet ``training/utility.py``), scale 1
  and 3 free nats; its reward term is scaled by 10 (planet ``scripts/configs.py``) and its images are quantized to
  5 bits with uniform dequantization noise (``encoders.pixels.to_float``).
* DreamerV1: ``kl_scale * max(mean KL, free_nats)``, the batch mean clipped (DreamerV1 code ``dreamer.py``:
  ``tf.maximum(div, free_nats)`` after ``reduce_mean``), scale 1 and 3 free nats (DreamerV1 Sec. 6).
* DreamerV3: KL balancing ``0.5 * mean max(dyn, 1) + 0.1 * mean max(rep, 1)``, each step clipped separately
  (DreamerV3 Sec. 2), with ``dyn = KL[sg(post) || prior]`` and ``rep = KL[post || sg(prior)]``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from einops import pack, rearrange, unpack
from torch import Tensor, nn

from encoders.conv import ConvDecoder, ConvEncoder, num_stages
from encoders.mlp import LN_EPS, dense, init_weights, mlp
from encoders.pixels import to_float, to_uint8
from encoders.precision import Network, float32_between_networks, low_precision
from worldmodels.distributions import (
    BINS,
    SAME_DRAWS,
    TwoHotSymlog,
    kl,
    kl_dyn_rep,
    latent_entropy,
    latent_mode,
    latent_sample,
    unimix,
)
from worldmodels.errors import CheckpointError, ConfigError
from worldmodels.guards import check_finite
from worldmodels.interface import State, stack_time

_DREAMERV3 = dict(
    style="dreamerv3",  # LayerNorm (eps 1e-3) + SiLU everywhere, LayerNorm GRU, truncated-normal fan-avg init
    initial="learned",  # DreamerV3 code (rssm initial: learned): deter = tanh(W), stoch = the prior's mode there
    action_clip=1.0,  # DreamerV3 code (rssm action_clip: 1.0): actions scaled by sg(1 / max(1, |a|)) in each step
    image_bits=8,
    reward_scale=1.0,
    stoch=32,  # DreamerV3 Table B.1: 32 latents
    classes=32,  # of 32 classes each
    min_std=0.1,  # unused by categorical latents
    unimix=0.01,  # DreamerV3 Sec. 2: 1% uniform mixture
    reward_head="twohot",  # DreamerV3 Sec. 2: symlog two-hot, 255 bins
    cont_head=True,
    cont_scale=1.0,  # DreamerV3 Sec. 2: beta_pred = 1
    sq_scale=1.0,  # DreamerV3 code: MSE summed over pixels
    kl_balance=True,
    free_nats_per_step=True,  # each step's term clipped (DreamerV3 Sec. 2)
    kl_scale=1.0,  # unused with kl_balance
    dyn_scale=0.5,  # DreamerV3 Sec. 2: beta_dyn = 0.5
    rep_scale=0.1,  # DreamerV3 Sec. 2: beta_rep = 0.1
    free_nats=1.0,  # DreamerV3 Sec. 2: free bits 1 nat, each term clipped
    lr=1e-4,  # DreamerV3 Table W.1: world model Adam lr 1e-4
    eps=1e-8,  # DreamerV3 Table W.1: Adam epsilon 1e-8
    grad_clip=1000.0,  # DreamerV3 Table W.1: gradient clipping 1000
)

PRESETS: dict[str, dict[str, Any]] = {
    # PlaNet (Hafner et al. 2019, arXiv 1811.04551) Sec. 5 and App. A
    "planet": dict(
        style="planet",  # ReLU convs and dense layers (planet scripts/configs.py: activation relu), nn.GRUCell
        initial="zeros",
        action_clip=0.0,  # the planner's actions are in bounds
        image_bits=5,  # planet scripts/configs.py: image_bits 5, with uniform dequantization noise
        reward_scale=10.0,  # planet scripts/configs.py: loss_scales reward 10
        head_hidden=300,  # planet scripts/configs.py: reward head num_units 300
        head_layers=3,  # planet scripts/configs.py: reward head num_layers 3
        deter=200,  # PlaNet: GRU with 200 units
        stoch=30,  # PlaNet: 30-d diagonal Gaussian
        classes=0,  # 0: Gaussian latents
        min_std=0.1,  # PlaNet / DreamerV1 code: std = softplus(x) + 0.1
        hidden=200,  # PlaNet: hidden layers of 200 units
        mlp_layers=2,
        cnn_depth=32,  # PlaNet / DreamerV1 code: conv channels 32, 64, 128, 256
        unimix=0.0,
        reward_head="mse",
        cont_head=False,  # PlaNet predicts no episode ends
        cont_scale=0.0,
        sq_scale=0.5,  # unit-variance Gaussian log-likelihood: 0.5 * squared error (PlaNet / DreamerV1 code)
        kl_balance=False,
        free_nats_per_step=True,  # planet training/utility.py: max(0, kl - free_nats) per step, then the mean
        kl_scale=1.0,  # PlaNet: KL not scaled
        dyn_scale=0.0,
        rep_scale=0.0,
        free_nats=3.0,  # PlaNet: 3 free nats
        lr=1e-3,  # PlaNet App. A: Adam lr 1e-3
        eps=1e-4,  # PlaNet App. A: Adam epsilon 1e-4
        grad_clip=1000.0,  # PlaNet App. A: clip gradient norm at 1000
    ),
    # DreamerV1 (Hafner et al. 2020, arXiv 1912.01603) Sec. 6 and App. A
    "dreamerv1": dict(
        style="dreamerv1",  # ReLU convs, ELU dense layers, nn.GRUCell
        initial="zeros",
        action_clip=0.0,  # the tanh actor's actions are in bounds
        image_bits=8,
        reward_scale=1.0,
        deter=200,  # DreamerV1: GRU with 200 units
        stoch=30,  # DreamerV1: 30-d diagonal Gaussian
        classes=0,
        min_std=0.1,
        hidden=200,  # DreamerV1 code (dreamer.py): models.RSSM(stoch, deter, deter): the RSSM's layers 200
        mlp_layers=2,
        head_hidden=400,  # DreamerV1 code: num_units 400 for the reward and continue heads
        head_layers=2,  # DreamerV1 code: reward DenseDecoder((), 2, num_units)
        cont_layers=3,  # DreamerV1 code: pcont DenseDecoder((), 3, num_units, 'binary')
        cnn_depth=32,
        unimix=0.0,
        reward_head="mse",
        cont_head=True,  # DreamerV1 Sec. 6: discount predictor for early episode ends (code flag pcont)
        cont_scale=10.0,  # DreamerV1 code: pcont_scale 10
        sq_scale=0.5,  # DreamerV1 code: image and reward are tfd.Normal(mean, 1)
        kl_balance=False,
        free_nats_per_step=False,  # DreamerV1 code: the batch mean clipped
        kl_scale=1.0,  # DreamerV1 Sec. 6: "we do not scale the KL regularizers (beta = 1)"
        dyn_scale=0.0,
        rep_scale=0.0,
        free_nats=3.0,  # DreamerV1 Sec. 6: "clip them below 3 free nats as in PlaNet"
        lr=6e-4,  # DreamerV1 Sec. 6: world model lr 6e-4
        eps=1e-7,  # DreamerV1 code (TF2, tools.py): tf.optimizers.Adam(lr), Keras' default epsilon 1e-7
        grad_clip=100.0,  # DreamerV1 Sec. 6: gradient norms clipped at 100
    ),
    # DreamerV3 (Hafner et al. 2023, arXiv 2301.04104v1) Table B.1 model sizes
    "dreamerv3-XS": dict(_DREAMERV3, deter=256, cnn_depth=24, hidden=256, mlp_layers=1),
    "dreamerv3-S": dict(_DREAMERV3, deter=512, cnn_depth=32, hidden=512, mlp_layers=2),
    "dreamerv3-M": dict(_DREAMERV3, deter=1024, cnn_depth=48, hidden=640, mlp_layers=3),
}


INITIALS = ("learned", "zeros")


class LayerNormGRUCell(nn.Module):
    """GRU cell with one LayerNorm over all gates and the update gate biased to keep the state (DreamerV3
    code, ``RSSM._gru``). x (B, I), h (B, H) -> h (B, H)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(input_size + hidden_size, 3 * hidden_size, bias=False)
        self.norm = nn.LayerNorm(3 * hidden_size, eps=LN_EPS)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        reset, cand, update = self.norm(self.linear(torch.cat([x, h], -1))).chunk(3, -1)
        cand = torch.tanh(torch.sigmoid(reset) * cand)
        update = torch.sigmoid(update - 1.0)
        return update * cand + (1.0 - update) * h


def _reset(x: Tensor, init: Tensor, is_first: Tensor) -> Tensor:
    """x, init (B, ...), is_first (B,) bool -> x with the rows where is_first replaced by init."""
    return torch.where(is_first.reshape(-1, *[1] * (x.ndim - 1)), init, x)


class RSSM(L.LightningModule):
    """PlaNet / Dreamer world model on the shared interface (worldmodels/interface.py).

    ``preset`` names a paper setting in ``PRESETS``; every other size argument left at None takes the
    preset's value (the paper-detail switches too: ``free_nats_per_step``, ``reward_scale``, ``image_bits``,
    ``initial`` "learned" | "zeros", ``action_clip``; docs/fidelity.md). ``classes=0`` gives Gaussian latents of ``stoch`` dims, ``classes>0`` categorical latents
    of ``stoch`` x ``classes``. ``action_dim=0`` trains on video without actions (actions (B, T, 0)).
    """

    def __init__(
        self,
        preset: str = "dreamerv3-S",
        image_size: int = 64,
        action_dim: int = 0,
        discrete: bool = False,
        deter: int | None = None,
        stoch: int | None = None,
        classes: int | None = None,
        hidden: int | None = None,
        mlp_layers: int | None = None,
        cnn_depth: int | None = None,
        lr: float | None = None,
        grad_clip: float | None = None,
        free_nats: float | None = None,
        free_nats_per_step: bool | None = None,
        reward_scale: float | None = None,
        image_bits: int | None = None,
        initial: str | None = None,
        action_clip: float | None = None,
        channels_last: bool = False,
        compile: bool = False,
        on_nonfinite: str = "stop",
    ) -> None:
        super().__init__()
        if preset not in PRESETS:
            raise ConfigError(f"RSSM preset {preset!r} is unknown; use one of {list(PRESETS)}")
        overrides = dict(
            deter=deter,
            stoch=stoch,
            classes=classes,
            hidden=hidden,
            mlp_layers=mlp_layers,
            cnn_depth=cnn_depth,
            lr=lr,
            grad_clip=grad_clip,
            free_nats=free_nats,
            free_nats_per_step=free_nats_per_step,
            reward_scale=reward_scale,
            image_bits=image_bits,
            initial=initial,
            action_clip=action_clip,
        )
        cfg = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
        for key in ("deter", "stoch", "hidden", "cnn_depth"):
            if cfg[key] < 1:
                raise ConfigError(f"RSSM {key}={cfg[key]}: must be a positive integer")
        if cfg["initial"] not in INITIALS or not 1 <= cfg["image_bits"] <= 8 or cfg["action_clip"] < 0:
            raise ConfigError(
                f"RSSM initial={cfg['initial']!r}, image_bits={cfg['image_bits']}, action_clip={cfg['action_clip']}: "
                f"use initial in {INITIALS}, image_bits in 1..8 and action_clip >= 0 (0: off)"
            )
        if cfg["classes"] < 0 or cfg["mlp_layers"] < 0 or action_dim < 0 or cfg["lr"] <= 0:
            raise ConfigError(
                f"RSSM classes={cfg['classes']}, mlp_layers={cfg['mlp_layers']}, action_dim={action_dim}, "
                f"lr={cfg['lr']}: classes, mlp_layers and action_dim must be >= 0 and lr > 0"
            )
        try:
            num_stages(image_size)
        except ValueError as e:
            raise ConfigError(f"RSSM {e}") from e
        self.save_hyperparameters()
        # The saved hyperparameters show the values in force, not the None that means "the preset's".
        self.hparams.update({k: cfg[k] for k in overrides})
        self.on_nonfinite = (
            on_nonfinite  # a NaN/inf loss: "stop" with an error naming the term, "skip" the batch
        )
        self.config = cfg
        self.grad_clip, self.grad_clip_algorithm = cfg["grad_clip"], "norm"  # the interface's clipping
        self.image_size, self.action_dim, self.discrete = image_size, action_dim, discrete
        style, hidden_dim, self.categorical = cfg["style"], cfg["hidden"], cfg["classes"] > 0
        self.stoch_dim = cfg["stoch"] * max(cfg["classes"], 1)  # flattened z
        self.feature_dim = cfg["deter"] + self.stoch_dim
        stats_dim = self.stoch_dim if self.categorical else 2 * cfg["stoch"]

        self.encoder = ConvEncoder(image_size, cfg["cnn_depth"], style, channels_last)
        self.img_in = Network(*dense(style, self.stoch_dim + action_dim, hidden_dim))
        gru = LayerNormGRUCell if style == "dreamerv3" else nn.GRUCell
        self.cell = gru(hidden_dim, cfg["deter"])
        self.img_out = Network(*dense(style, cfg["deter"], hidden_dim))
        self.img_stats = nn.Linear(hidden_dim, stats_dim)
        self.obs_out = Network(*dense(style, cfg["deter"] + self.encoder.out_dim, hidden_dim))
        self.obs_stats = nn.Linear(hidden_dim, stats_dim)

        self.decoder = ConvDecoder(self.feature_dim, image_size, cfg["cnn_depth"], style, channels_last)
        twohot = cfg["reward_head"] == "twohot"
        head = (cfg.get("head_hidden", hidden_dim), cfg.get("head_layers", cfg["mlp_layers"]))  # reward, cont
        self.reward_head = mlp(style, self.feature_dim, *head, BINS if twohot else 1)
        cont = (head[0], cfg.get("cont_layers", head[1]))
        self.cont_head = mlp(style, self.feature_dim, *cont, 1) if cfg["cont_head"] else None
        if cfg["initial"] == "learned":  # DreamerV3 code: RSSM.initial, W starts at zeros
            self.initial_deter = nn.Parameter(torch.zeros(cfg["deter"]))
        init_weights(self, style)
        if twohot:  # DreamerV3 code: reward output layer initialized to zeros (reward_head outscale 0)
            nn.init.zeros_(self.reward_head[-1].weight)
            nn.init.zeros_(self.reward_head[-1].bias)
        # compile: the filter step and the imagination step, each one graph (docs/benchmarks.md section 2)
        self._step_fn = torch.compile(self._step, options=SAME_DRAWS) if compile else self._step
        self._imagine_fn = torch.compile(self._imagine, options=SAME_DRAWS) if compile else self._imagine

    # --- the shared interface ---------------------------------------------------------------------------

    def initial(self, batch_size: int) -> State:
        """-> state (B, ...): zeros, with uniform (categorical) or standard normal (Gaussian) stats; with
        ``initial="learned"`` (DreamerV3) deter = tanh(W) of a learned W and stoch = the prior's mode at it."""
        cfg, zeros = self.config, lambda *s: torch.zeros(batch_size, *s, device=self.device, dtype=self.dtype)
        if self.categorical:
            shape = (cfg["stoch"], cfg["classes"])
            state = {"deter": zeros(cfg["deter"]), "stoch": zeros(*shape), "logits": zeros(*shape)}
        else:
            stats = {"mean": zeros(cfg["stoch"]), "std": zeros(cfg["stoch"]) + 1.0}
            state = {"deter": zeros(cfg["deter"]), "stoch": zeros(cfg["stoch"]), **stats}
        if cfg["initial"] == "learned":
            deter = torch.tanh(self.initial_deter)[None]  # (1, D)
            stats = self._prior_stats(deter)
            state["deter"] = deter.expand(batch_size, -1)
            state["stoch"] = latent_mode(stats).expand(batch_size, *state["stoch"].shape[1:])
        return state

    def observe(self, images: Tensor, actions: Tensor, is_first: Tensor, state: State | None = None) -> State:
        """images (B, T, H, W, 3) uint8, actions (B, T, A), is_first (B, T) bool -> posterior states (B, T, ...).

        ``state`` (B, ...) continues a previous call; ``is_first`` resets a sequence to ``initial``."""
        self._check(images, actions, is_first)
        x = to_float(images, self.config["image_bits"])
        return self._filter(x, actions, is_first, state, priors=False)[0]

    def imagine(self, state: State, action: Tensor) -> State:
        """state (B, ...), action (B, A) -> prior state (B, ...); differentiable (rsample / straight-through)."""
        return self._imagine_fn(state, action)

    def _imagine(self, state: State, action: Tensor) -> State:
        return self._prior(self._deter(state, action))

    def features(self, state: State) -> Tensor:
        """state (..., ...) -> (..., feature_dim) = [deter, flatten(stoch)]."""
        return torch.cat([state["deter"], self._flat(state["stoch"])], -1)

    def reward(self, state: State) -> Tensor:
        """state (..., ...) -> predicted reward (...)."""
        return self.reward_from_features(self.features(state))

    def cont(self, state: State) -> Tensor:
        """state (..., ...) -> P(the episode continues) (...); ones without a continue head (PlaNet)."""
        return self.cont_from_features(self.features(state))

    def reward_from_features(self, features: Tensor) -> Tensor:
        """features (..., F) -> predicted reward (...): ``reward`` for a caller that already holds features."""
        out = self.reward_head(features)
        return TwoHotSymlog(out).mean() if self.config["reward_head"] == "twohot" else out.squeeze(-1)

    def cont_from_features(self, features: Tensor) -> Tensor:
        """features (..., F) -> P(the episode continues) (...), as ``cont``."""
        if self.cont_head is None:
            return torch.ones(features.shape[:-1], device=features.device, dtype=features.dtype)
        return torch.sigmoid(self.cont_head(features).squeeze(-1))

    @torch.no_grad()
    def decode(self, state: State) -> Tensor:
        """state (..., ...) -> decoded image means (..., H, W, 3) uint8."""
        flat, shape = pack([self.features(state)], "* f")
        return unpack(to_uint8(self.decoder(flat)), shape, "* h w c")[0]

    # --- filtering ---------------------------------------------------------------------------------------

    def _flat(self, stoch: Tensor) -> Tensor:
        return rearrange(stoch, "... s k -> ... (s k)") if self.categorical else stoch

    def _stats(self, x: Tensor) -> dict[str, Tensor]:
        """x (..., stats_dim) -> {"logits": (..., S, K)} after unimix, or {"mean", "std": (..., S)}."""
        if self.categorical:
            logits = rearrange(x, "... (s k) -> ... s k", k=self.config["classes"])
            return {"logits": unimix(logits, self.config["unimix"])}
        mean, std = x.chunk(2, -1)
        return {"mean": mean, "std": F.softplus(std) + self.config["min_std"]}

    def _deter(self, state: State, action: Tensor) -> Tensor:
        """state (B, ...), action (B, A) -> the next deterministic state h (B, D) = GRU(h, [z, a]).

        With ``action_clip`` c > 0 (DreamerV3 code, ``RSSM.img_step``) actions are scaled by sg(c / max(c, |a|)):
        an imagined action outside [-c, c] (the DreamerV3 actor's Normal samples) acts as its clipped value,
        while its gradient keeps its direction."""
        clip = self.config["action_clip"]
        if clip > 0:
            action = action * (clip / action.abs().clamp(min=clip)).detach()
        x = self.img_in(torch.cat([self._flat(state["stoch"]), action], -1))
        return low_precision(self.cell, x, state["deter"])

    def _prior(self, deter: Tensor) -> State:
        """deter (..., D) -> prior state (..., ...): the prior's statistics from h and a sample of z."""
        stats = self._prior_stats(deter)
        return {"deter": deter, "stoch": latent_sample(stats), **stats}

    def _prior_stats(self, deter: Tensor) -> dict[str, Tensor]:
        return self._stats(low_precision(self.img_stats, self.img_out(deter)))

    def _step(
        self, state: State, action: Tensor, obs_in: Tensor, is_first: Tensor, init: State, w_deter: Tensor
    ) -> State:
        """One filtering step -> posterior (B, ...). state (B, ...); action (B, A), already zero where is_first;
        obs_in (B, hidden) the observation's share of the posterior layer's first Linear (bias included);
        is_first (B,); w_deter (hidden, D) the deter columns of that Linear's weight."""
        state = {k: _reset(state[k], init[k], is_first) for k in ("deter", "stoch")}
        deter = self._deter(state, action)
        hidden = self.obs_out[1:](
            obs_in + low_precision(torch.matmul, deter, w_deter.T)
        )  # obs_out(cat(...)) split
        stats = self._stats(low_precision(self.obs_stats, hidden))
        return {"deter": deter, "stoch": latent_sample(stats), **stats}

    def _filter(
        self, x: Tensor, actions: Tensor, is_first: Tensor, state: State | None = None, priors: bool = True
    ) -> tuple[State, State | None]:
        """x (B, T, 3, H, W) float, actions (B, T, A), is_first (B, T) -> posteriors, priors (B, T, ...); the
        priors are None with ``priors=False`` (``observe``: acting and filtering need the posteriors only).

        Only the recurrence runs step by step. The work that does not depend on the previous step is done for
        the whole sequence at once: the encoder, the embedding's share of the posterior layer, the action
        reset at episode starts, and the priors (whose deter is the posterior's)."""
        batch, length = is_first.shape
        embed = rearrange(self.encoder(rearrange(x, "b t c h w -> (b t) c h w")), "(b t) e -> b t e", b=batch)
        is_first = is_first.bool()
        actions = actions.to(embed.dtype) * (~is_first).to(embed.dtype)[..., None]  # no action into a reset
        first = self.obs_out[0]  # Linear(deter + embed -> hidden)
        deter_dim = self.config["deter"]
        w_embed, bias = first.weight[:, deter_dim:], first.bias
        obs_in = low_precision(lambda e: F.linear(e, w_embed, bias), embed)  # (B, T, hidden)
        w_deter = first.weight[:, :deter_dim]
        init = self.initial(batch)
        state = init if state is None else state
        posts = []
        for t in range(length):
            state = self._step_fn(state, actions[:, t], obs_in[:, t], is_first[:, t], init, w_deter)
            posts.append(state)
        post = stack_time(posts)
        return post, self._prior(post["deter"]) if priors else None

    def _check(self, images: Tensor, actions: Tensor, is_first: Tensor) -> None:
        size, dim = self.image_size, self.action_dim
        if images.dtype != torch.uint8 or images.ndim != 5 or tuple(images.shape[2:]) != (size, size, 3):
            raise CheckpointError(
                f"RSSM(image_size={size}) got images {images.dtype} {tuple(images.shape)}; it needs uint8 "
                f"(B, T, {size}, {size}, 3): resize the data (e.g. --data.size {size}) or train a model of that size"
            )
        if tuple(actions.shape) != (*images.shape[:2], dim) or tuple(is_first.shape) != tuple(
            images.shape[:2]
        ):
            raise CheckpointError(
                f"RSSM(action_dim={dim}) got actions {tuple(actions.shape)} and is_first {tuple(is_first.shape)} "
                f"for images {tuple(images.shape)}; it needs actions (B, T, {dim}) (zero-width for video without "
                "actions) and is_first (B, T): use a model trained on data with these actions"
            )

    # --- training ----------------------------------------------------------------------------------------

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor], State]:
        """batch: image (B, T, H, W, 3) uint8, action (B, T, A), reward (B, T), is_first (B, T),
        is_terminal (B, T) -> (total loss, detached metrics, posterior states (B, T, ...)).

        Metrics: loss, image, reward, kl, post_entropy, prior_entropy; cont with a continue head; dyn and rep
        with KL balancing. The KL terms are the raw means, before free nats and scales. Under a mixed-precision
        autocast only the networks compute in low precision (encoders/precision.py)."""
        with float32_between_networks():
            return self._loss(batch)

    def _loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor], State]:
        cfg, images = self.config, batch["image"]
        self._check(images, batch["action"], batch["is_first"])
        x = to_float(images, self.config["image_bits"], noise=True)  # (B, T, 3, H, W)
        post, prior = self._filter(x, batch["action"], batch["is_first"])
        features = self.features(post)  # (B, T, F)
        recon = self.decoder(rearrange(features, "b t f -> (b t) f"))
        error = (recon - rearrange(x, "b t c h w -> (b t) c h w")).square()  # (B*T, 3, H, W)
        terms = {"image": cfg["sq_scale"] * error.sum((1, 2, 3)).mean()}
        reward_out, reward = self.reward_head(features), batch["reward"].float()  # float32 under bf16 too
        if cfg["reward_head"] == "twohot":
            terms["reward"] = -TwoHotSymlog(reward_out).log_prob(reward).mean()
        else:
            terms["reward"] = cfg["sq_scale"] * (reward_out.squeeze(-1) - reward).square().mean()
        total = terms["image"] + cfg["reward_scale"] * terms["reward"]
        if self.cont_head is not None:
            cont = 1.0 - batch["is_terminal"].to(features.dtype)
            terms["cont"] = F.binary_cross_entropy_with_logits(self.cont_head(features).squeeze(-1), cont)
            total = total + cfg["cont_scale"] * terms["cont"]
        free = cfg["free_nats"]
        if cfg["kl_balance"]:  # DreamerV3: clip each step's term at the free nats, then average
            dyn, rep = kl_dyn_rep(post, prior)  # (B, T) each
            total = (
                total
                + cfg["dyn_scale"] * dyn.clamp(min=free).mean()
                + cfg["rep_scale"] * rep.clamp(min=free).mean()
            )
            terms.update(kl=dyn.mean(), dyn=dyn.mean(), rep=rep.mean())
        elif cfg["free_nats_per_step"]:  # PlaNet code: max(0, kl - free nats) at each step, then the mean
            divergence = kl(post, prior)  # (B, T)
            total = total + cfg["kl_scale"] * (divergence - free).clamp(min=0).mean()
            terms["kl"] = divergence.mean()
        else:  # DreamerV1 code: clip the batch mean at the free nats
            divergence = kl(post, prior).mean()
            total = total + cfg["kl_scale"] * divergence.clamp(min=free)
            terms["kl"] = divergence
        terms["post_entropy"] = latent_entropy(post).mean()
        terms["prior_entropy"] = latent_entropy(prior).mean()
        metrics = {"loss": total.detach(), **{k: v.detach() for k, v in terms.items()}}
        return total, metrics, post

    def _shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor | None:
        total, metrics, _ = self.loss(batch)
        if stage == "train" and not check_finite(metrics, self.global_step, self.on_nonfinite):
            return None  # skip this batch
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, batch_size=batch["image"].shape[0])
        return total

    def training_step(self, batch: dict[str, Tensor], batch_idx: int = 0) -> Tensor | None:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int = 0) -> Tensor:
        return self._shared_step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        fused = True if self.device.type == "cuda" else None  # fused Adam on GPU, torch's default elsewhere
        return torch.optim.Adam(self.parameters(), lr=self.config["lr"], eps=self.config["eps"], fused=fused)

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any
    ) -> None:
        self.clip_gradients(
            optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm=self.grad_clip_algorithm
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["model_class"] = "worldmodels.rssm.RSSM"
