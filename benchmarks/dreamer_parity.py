"""Parity of the DreamerV3 update with SheepRL 0.8.4's, at size S, on one fixed batch, with the same weights.

    python benchmarks/sheeprl_side_by_side.py --setup          # once: SheepRL into .bench/sheeprl-venv
    OMP_NUM_THREADS=1 python benchmarks/dreamer_parity.py      # B 16 x T 64, 64x64 frames, 6-dim actions
    OMP_NUM_THREADS=1 python benchmarks/dreamer_parity.py --batch 4 --length 16    # a quicker, smaller check
    OMP_NUM_THREADS=1 python benchmarks/dreamer_parity.py --zero-heads             # SheepRL's init, untouched

What it does, in three processes:

1. a SheepRL worker (inside ``.bench/sheeprl-venv``, run as ``sheeprl_side_by_side.py`` runs its own) builds
   SheepRL's DreamerV3-S with its ``build_agent`` and its Hydra configs (``exp=dreamer_v3_dmc_walker_walk
   algo=dreamer_v3_S``) and saves the state dicts of its world model, actor and critic;
2. this process copies them into our ``DreamerAgent`` (version v3, RSSM preset ``dreamerv3-S``) through the
   explicit table ``WEIGHT_MAP`` (tensors rearranged where the two order their inputs differently), then
   computes, on a fixed batch, our world-model loss, our actor loss through 15 imagined steps from every posterior
   state and our critic loss, each one's gradients, and records the latent samples it drew;
3. a second SheepRL worker loads the same weights and runs SheepRL's own ``dreamer_v3.train`` on the same batch,
   with the same latent samples and the same action noise, and reports its terms and gradients.

No optimizer steps on either side: SheepRL's ``update`` (backward, clip, step) is replaced by a backward that
records the gradients, so every term on both sides is evaluated at the same, copied weights (SheepRL's
``train`` steps the world model before it imagines; ours does too in ``training_step``: the order is the same,
the step is left out). No gradient clipping: the norms are the raw ones.

Same noise on both sides: our posterior samples (one-hot, straight-through) are recorded and forced into
SheepRL's ``compute_stochastic_state``, in filtering and in imagination; the actors' reparameterized Normal
samples take the same standard-normal noise, drawn here. So no term differs by sampling.

The batch (``dreamer_update.synthetic_batch``: random frames, actions in [-1, 1], rewards in [0, 1)) has a
second episode in every odd sequence (``is_first`` at T/2, ``is_terminal`` at T/2 - 1), so that the resets and
the continue targets take part. Layouts: ours is batch-major, ``action[t]`` led to ``image[t]``; SheepRL's is
time-major with ``actions[t]`` taken at ``obs[t]`` (its ``train`` shifts them right by one and puts a zero action
first), so SheepRL gets ``actions[t] = ours action[t + 1]`` (its last row is unused). Our imagination starts
are ordered (b, t), SheepRL's (t, b): the imagination samples are reordered between the two.

By default the two output layers SheepRL initializes to zero (reward and critic, ``uniform_init_weights(0.0)``)
are filled with small random weights before the copy, so that rewards, values, returns and the actor's and
critic's terms are not trivially zero; ``--zero-heads`` keeps SheepRL's init as is.

Printed: a table, then one JSON line per term (``{"what": "dreamer_parity", "term", "kind", "ours",
"sheeprl", "rel_diff", "same_quantity", "within_tolerance"}``) and a summary line. "Same quantity" means that
both implementations define the term by the same formula on the same inputs (``TERMS``); for those, the target
is a relative difference of at most 1% (or an absolute one of at most 1e-6, for a term that is zero up to
float32 rounding, as the values and returns are with ``--zero-heads``). docs/parity.md explains the terms that
differ in definition, with the lines of code on both sides. Until 2026-12-02 that was the actor's loss and
gradient: SheepRL (and the official code) subtract the critic's baseline from the lambda-returns, ours did not.
``actor_no_baseline`` is SheepRL's actor loss (and its gradient) without that baseline. Our side recomputes its
no-baseline loss from the trajectory, so the script notices whether ours subtracts the baseline; when it does (now),
``actor`` counts as the same quantity and the no-baseline rows are left out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dreamer_update import ACTION_DIM, BATCH, IMAGE_SIZE, LENGTH, ROOT, synthetic_batch  # noqa: E402
from sheeprl_side_by_side import SHEEPRL_EXP, VENV, venv_python  # noqa: E402

SIZE = "S"
TOLERANCE = 0.01  # relative, for the terms both define the same way
ABS_TOLERANCE = (
    1e-6  # absolute, for a term that is zero up to float32 rounding (--zero-heads: values, returns)
)

# SheepRL state-dict key (prefix) -> ours (``DreamerAgent.state_dict()``), and how the tensor is rearranged:
#   same      as is
#   features  a Linear reading SheepRL's latent state [stoch (S*K) | deter (D)], ours reads [deter | stoch]: the
#             weight's input columns are swapped (sheeprl dreamer_v3.py world_model_loss: latent_states =
#             cat(posteriors, recurrent_states); ours worldmodels/rssm.py RSSM.features: cat([deter, stoch]))
#   gru       SheepRL's GRU Linear reads [h (D) | x (hidden)] (sheeprl models.py LayerNormGRUCell.forward:
#             cat((hx, input))), ours [x | h] (worldmodels/rssm.py LayerNormGRUCell.forward: cat([x, h]))
# The first rule whose key is a prefix of SheepRL's key wins: whole keys come before their module's prefix.
WEIGHT_MAP: list[tuple[str, str, str]] = [
    ("world_model.encoder.cnn_encoder.model.0._model.", "world_model.encoder.convs.", "same"),
    ("world_model.rssm.initial_recurrent_state", "world_model.initial_deter", "same"),
    ("world_model.rssm.recurrent_model.mlp._model.", "world_model.img_in.", "same"),
    ("world_model.rssm.recurrent_model.rnn.linear.weight", "world_model.cell.linear.weight", "gru"),
    ("world_model.rssm.recurrent_model.rnn.layer_norm.", "world_model.cell.norm.", "same"),
    ("world_model.rssm.representation_model._model.0.", "world_model.obs_out.0.", "same"),  # [deter | embed]
    ("world_model.rssm.representation_model._model.1.", "world_model.obs_out.1.", "same"),
    ("world_model.rssm.representation_model._model.3.", "world_model.obs_stats.", "same"),
    ("world_model.rssm.transition_model._model.0.", "world_model.img_out.0.", "same"),
    ("world_model.rssm.transition_model._model.1.", "world_model.img_out.1.", "same"),
    ("world_model.rssm.transition_model._model.3.", "world_model.img_stats.", "same"),
    (
        "world_model.observation_model.cnn_decoder.model.0.weight",
        "world_model.decoder.linear.weight",
        "features",
    ),
    ("world_model.observation_model.cnn_decoder.model.0.bias", "world_model.decoder.linear.bias", "same"),
    ("world_model.observation_model.cnn_decoder.model.2._model.", "world_model.decoder.deconvs.", "same"),
    ("world_model.reward_model._model.0.weight", "world_model.reward_head.0.weight", "features"),
    ("world_model.reward_model._model.", "world_model.reward_head.", "same"),
    ("world_model.continue_model._model.0.weight", "world_model.cont_head.0.weight", "features"),
    ("world_model.continue_model._model.", "world_model.cont_head.", "same"),
    ("actor.model._model.0.weight", "actor.net.0.weight", "features"),
    ("actor.model._model.", "actor.net.", "same"),
    ("actor.mlp_heads.0.", "actor.net.6.", "same"),  # after 2 x (Linear, LayerNorm, SiLU): size S
    ("critic._model.0.weight", "critic.0.weight", "features"),
    ("critic._model.", "critic.", "same"),
]
# The output layers SheepRL initializes to zeros (build_agent: uniform_init_weights(0.0)); see --zero-heads
ZERO_HEADS = ("world_model.reward_model._model.6.weight", "critic._model.6.weight")

# Gradient-norm groups: module -> key prefixes, SheepRL's and ours
GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "encoder": (("world_model.encoder.",), ("world_model.encoder.",)),
    "recurrent": (("world_model.rssm.recurrent_model.",), ("world_model.img_in.", "world_model.cell.")),
    "representation": (
        ("world_model.rssm.representation_model.",),
        ("world_model.obs_out.", "world_model.obs_stats."),
    ),
    "transition": (
        ("world_model.rssm.transition_model.",),
        ("world_model.img_out.", "world_model.img_stats."),
    ),
    "initial": (("world_model.rssm.initial_recurrent_state",), ("world_model.initial_deter",)),
    "decoder": (("world_model.observation_model.",), ("world_model.decoder.",)),
    "reward": (("world_model.reward_model.",), ("world_model.reward_head.",)),
    "continue": (("world_model.continue_model.",), ("world_model.cont_head.",)),
    "world_model": (("world_model.",), ("world_model.",)),
    "actor": (("actor.",), ("actor.",)),
    "critic": (("critic.",), ("critic.",)),
    "actor_no_baseline": ((), ()),  # the actor's gradient of actor_no_baseline (SheepRL: autograd.grad of it)
}

# term -> (kind, same quantity on both sides)
TERMS: dict[str, tuple[str, bool]] = {
    "image": ("loss", True),  # sum over pixels of the squared error, mean over (B, T)
    "reward": ("loss", True),  # two-hot symlog cross-entropy, 255 bins in [-20, 20]
    "continue": ("loss", True),  # Bernoulli cross-entropy on 1 - terminal
    "dyn": ("loss", True),  # mean KL[sg(post) || prior], before free nats and scale
    "rep": ("loss", True),  # mean KL[post || sg(prior)], before free nats and scale
    "kl_loss": ("loss", True),  # 0.5 mean max(dyn, 1) + 0.1 mean max(rep, 1)
    "model_loss": ("loss", True),  # image + reward + continue + kl_loss
    "post_entropy": ("stat", True),
    "prior_entropy": ("stat", True),
    "return": ("stat", True),  # mean lambda-return over s_0..s_{H-1}
    "value": ("stat", True),  # mean critic value over s_0..s_{H-1}
    "weight": ("stat", True),  # mean discount weight over s_0..s_{H-1}
    "policy_entropy": ("stat", True),  # mean actor entropy over s_0..s_{H-1}
    "return_scale": ("stat", True),  # max(1, EMA 95th - EMA 5th percentile), after one update from zero
    # SheepRL: -mean(w ((R - v) / S + eta H)); ours: -mean(w (R / S + eta H)) (same once ours subtracts v too:
    # detected, see ours_run)
    "actor": ("loss", False),
    "actor_no_baseline": ("loss", True),  # SheepRL's actor loss without its baseline term: ours' definition
    "critic": ("loss", True),  # mean w (-log p(R) - log p(v_slow)), two-hot
}
GRAD_SAME = {name: name != "actor" for name in GROUPS}  # the actor's gradient includes SheepRL's baseline's


# --- shared helpers ------------------------------------------------------------------------------------------


def to_sheeprl_order(x: Tensor, batch: int, length: int) -> Tensor:
    """x (B*T, ...) ordered (b, t), as our ``flatten_time`` -> (T*B, ...) ordered (t, b), as SheepRL's imagination
    starts (``posteriors.reshape(1, -1, ...)`` of time-major posteriors)."""
    return x.reshape(batch, length, *x.shape[1:]).transpose(0, 1).reshape(batch * length, *x.shape[1:])


class NormalNoise:
    """Replaces ``torch.distributions.Normal.rsample``: the next noise of ``queue`` whose shape matches
    ``loc`` (ours (N, A), SheepRL (1, N, A)) gives loc + noise * scale; a call of another shape (SheepRL's actor
    forward on the whole trajectory, whose samples no loss uses) falls back to torch's."""

    def __init__(self, queue: list[Tensor]) -> None:
        self.queue, self.used = queue, 0
        self.original = torch.distributions.Normal.rsample

    def __enter__(self) -> NormalNoise:
        noise = self

        def rsample(dist: torch.distributions.Normal, sample_shape: tuple[int, ...] = ()) -> Tensor:
            shape = dist._extended_shape(torch.Size(sample_shape))
            if noise.queue and tuple(noise.queue[0].shape) == tuple(shape):
                noise.used += 1
                return dist.loc + noise.queue.pop(0).to(dist.loc) * dist.scale
            return noise.original(dist, sample_shape)

        torch.distributions.Normal.rsample = rsample
        return self

    def __exit__(self, *exc: Any) -> None:
        torch.distributions.Normal.rsample = self.original


def grad_norms(named: dict[str, Tensor], side: int) -> dict[str, float]:
    """named: parameter name -> gradient (absent or None: no gradient) -> the norm of each group of ``GROUPS``
    (``side`` 0: SheepRL's names, 1: ours); a group with no gradient at all is left out."""
    out = {}
    for group, prefixes in GROUPS.items():
        grads = [
            g for k, g in named.items() if g is not None and prefixes[side] and k.startswith(prefixes[side])
        ]
        if grads:
            out[group] = math.sqrt(sum(float(g.double().square().sum()) for g in grads))
    return out


def rel_diff(ours: float, theirs: float) -> float:
    return abs(ours - theirs) / max(abs(theirs), 1e-12)


# --- the SheepRL side (runs inside SheepRL's virtual environment) ----------------------------------------------


def sheeprl_config(batch: int, length: int, image_size: int) -> Any:
    """SheepRL's resolved Hydra config of DreamerV3-S on DMC walker-walk, on the CPU in float32."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf
    from sheeprl.utils.utils import dotdict

    overrides = [SHEEPRL_EXP, f"algo=dreamer_v3_{SIZE}", "env.num_envs=1", "fabric.accelerator=cpu"]
    overrides += ["fabric.precision=32-true", f"env.screen_size={image_size}"]
    overrides += [f"algo.per_rank_batch_size={batch}", f"algo.per_rank_sequence_length={length}"]
    with initialize_config_module("sheeprl.configs", version_base="1.3"):
        return dotdict(OmegaConf.to_container(compose("config", overrides=overrides), resolve=True))


def sheeprl_agent(args: argparse.Namespace, states: dict[str, dict[str, Tensor]] | None = None) -> tuple:
    """(cfg, fabric, world_model, actor, critic, target_critic) of SheepRL, built by its ``build_agent`` (seeded),
    from ``states`` ({"world_model", "actor", "critic"} state dicts; the target critic is the critic) if given."""
    import gymnasium as gym
    import hydra
    from sheeprl.algos.dreamer_v3.agent import build_agent

    cfg = sheeprl_config(args.batch, args.length, args.image_size)
    # as SheepRL's CLI (sheeprl/cli.py run_algorithm) does before it builds the agent
    torch.distributions.Distribution.set_default_validate_args(cfg.distribution.validate_args)
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    torch.manual_seed(args.seed)
    fabric = hydra.utils.instantiate(cfg.fabric, callbacks=[], _convert_="all")
    size = args.image_size
    obs_space = gym.spaces.Dict({"rgb": gym.spaces.Box(0, 255, (3, size, size), "uint8")})
    s = states or {}
    world_model, actor, critic, target_critic, _ = build_agent(
        fabric,
        (args.action_dim,),
        True,
        cfg,
        obs_space,
        s.get("world_model"),
        s.get("actor"),
        s.get("critic"),
        s.get("critic"),
    )
    return cfg, fabric, world_model, actor, critic, target_critic


def sheeprl_run(args: argparse.Namespace) -> dict[str, Any]:
    """SheepRL's ``train`` on the saved batch, weights and noise, without optimizer steps -> terms and norms."""
    import sheeprl.algos.dreamer_v3.agent as sheeprl_agent_module
    import sheeprl.algos.dreamer_v3.dreamer_v3 as dv3
    from sheeprl.algos.dreamer_v3.loss import categorical_kl
    from sheeprl.algos.dreamer_v3.utils import Moments
    from torch.distributions import Independent, OneHotCategorical

    work = Path(args.dir)
    states = torch.load(work / "sheeprl_weights.pt")
    noise = torch.load(work / "noise.pt")
    data = torch.load(work / "sheeprl_batch.pt")
    cfg, fabric, world_model, actor, critic, target_critic = sheeprl_agent(args, states)
    named = {
        **{f"world_model.{k}": v for k, v in world_model.state_dict(keep_vars=True).items()},
        **{f"actor.{k}": v for k, v in actor.state_dict(keep_vars=True).items()},
        **{f"critic.{k}": v for k, v in critic.state_dict(keep_vars=True).items()},
    }
    name_of = {id(p): k for k, p in named.items()}
    terms: dict[str, float] = {}
    grads: dict[str, float] = {}
    # the one-hot samples to force, in the order SheepRL draws them: T posteriors, then H imagined priors
    forced = [x[None] for x in noise["posterior"]] + [x[None] for x in noise["imagined_sheeprl"]]

    def compute_stochastic_state(logits: Tensor, discrete: int = 32, sample: bool = True) -> Tensor:
        logits = logits.view(*logits.shape[:-1], -1, discrete)
        if not sample:  # the initial state: the prior's mode
            dist = Independent(OneHotCategorical(logits=logits, validate_args=False), 1)
            return dist.mode
        onehot = forced.pop(0)
        if onehot.shape != logits.shape:
            raise RuntimeError(f"forced sample {tuple(onehot.shape)} for logits {tuple(logits.shape)}")
        probs = logits.softmax(-1)  # OneHotCategoricalStraightThrough.rsample: sample + probs - sg(probs)
        return onehot.to(probs) + probs - probs.detach()

    def update(fabric, loss, optimizer, max_grad_norm=None, params=None, error_if_nonfinite=True):  # noqa: ANN001, ANN202
        params = [p for g in optimizer.param_groups for p in g["params"]] if params is None else list(params)
        optimizer.zero_grad(set_to_none=True)
        fabric.backward(loss, inputs=params)
        grads.update(grad_norms({name_of[id(p)]: p.grad for p in params}, 0))
        return None  # no clipping, no step

    original_reconstruction = dv3.reconstruction_loss

    def reconstruction_loss(po, observations, pr, rewards, priors_logits, posteriors_logits, *a, **kw):  # noqa: ANN001, ANN202
        out = original_reconstruction(
            po, observations, pr, rewards, priors_logits, posteriors_logits, *a, **kw
        )
        rec_loss, _, state_loss, reward_loss, observation_loss, continue_loss = out
        dyn = categorical_kl(posteriors_logits.detach(), priors_logits)
        rep = categorical_kl(posteriors_logits, priors_logits.detach())
        entropy = lambda lg: Independent(OneHotCategorical(logits=lg.detach()), 1).entropy().mean()  # noqa: E731
        terms.update(
            image=float(observation_loss),
            reward=float(reward_loss),
            **{"continue": float(continue_loss)},
            dyn=float(dyn.mean()),
            rep=float(rep.mean()),
            kl_loss=float(state_loss),
            model_loss=float(rec_loss),
            post_entropy=float(entropy(posteriors_logits)),
            prior_entropy=float(entropy(priors_logits)),
        )
        return out

    original_entropy = dv3.policy_entropy
    entropies: list[Tensor] = []

    def policy_entropy(dist: Any) -> Tensor:
        value = original_entropy(dist)
        entropies.append(value.detach())
        return value

    original_actor_loss = dv3.actor_loss

    def actor_loss(actor, trajectories, actions, values, lambda_values, discount, offset, invscale, **kw):  # noqa: ANN001, ANN202
        loss = original_actor_loss(
            actor, trajectories, actions, values, lambda_values, discount, offset, invscale, **kw
        )
        w, v = discount[:-1].detach(), values[:-1]
        # -mean(w ((R - v) / S + eta H)) - mean(w v / S) = -mean(w (R / S + eta H)): ours' definition; its
        # gradient (the baseline's gradient through the imagined states left out) is ours' too
        no_baseline = loss - (w * v / invscale).mean()
        params = [p for p in actor.parameters() if p.requires_grad]
        nb_grads = torch.autograd.grad(no_baseline, params, retain_graph=True, allow_unused=True)
        grads["actor_no_baseline"] = math.sqrt(
            sum(float(g.double().square().sum()) for g in nb_grads if g is not None)
        )
        terms.update(
            actor=float(loss),
            actor_no_baseline=float(no_baseline),
            **{"return": float(lambda_values.mean())},
            value=float(v.detach().mean()),
            weight=float(w.mean()),
            return_scale=float(invscale),
            policy_entropy=float(entropies[-1][:-1].mean()),
        )
        return loss

    original_critic_loss = dv3.critic_loss

    def critic_loss(*a: Any) -> Tensor:
        loss = original_critic_loss(*a)
        terms["critic"] = float(loss)
        return loss

    sheeprl_agent_module.compute_stochastic_state = compute_stochastic_state
    dv3.update, dv3.reconstruction_loss, dv3.policy_entropy = update, reconstruction_loss, policy_entropy
    dv3.actor_loss, dv3.critic_loss = actor_loss, critic_loss
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.0) for m in (world_model, actor, critic)]
    p = cfg.algo.actor.moments
    moments = Moments(p.decay, p.max, p.percentile.low, p.percentile.high)
    start = time.perf_counter()
    with NormalNoise([x[None] for x in noise["action_sheeprl"]]) as normal:
        dv3.train(
            fabric, world_model, actor, critic, target_critic, *optimizers, data, None, cfg, True,
            (args.action_dim,), moments,
        )  # fmt: skip
    if forced or normal.used != cfg.algo.horizon + 1:
        raise RuntimeError(f"SheepRL left {len(forced)} forced samples and used {normal.used} action noises")
    return {"terms": terms, "grads": grads, "seconds": round(time.perf_counter() - start, 1)}


def sheeprl_worker(args: argparse.Namespace) -> None:
    """``--worker init``: save SheepRL's freshly built weights; ``--worker run``: print ``sheeprl_run``'s JSON."""
    from importlib.metadata import version

    torch.set_num_threads(args.threads)
    if args.worker == "init":
        _, _, world_model, actor, critic, _ = sheeprl_agent(args)
        states = {
            k: m.state_dict() for k, m in (("world_model", world_model), ("actor", actor), ("critic", critic))
        }
        torch.save({k: {n: t.detach().cpu() for n, t in s.items()} for k, s in states.items()}, args.out)
        print(json.dumps({"sheeprl": version("sheeprl"), "torch": torch.__version__}), flush=True)
        return
    print(
        json.dumps({**sheeprl_run(args), "sheeprl": version("sheeprl"), "torch": torch.__version__}),
        flush=True,
    )


# --- our side --------------------------------------------------------------------------------------------------


def map_weights(
    sheeprl: dict[str, Tensor], ours: dict[str, Tensor], stoch_dim: int, deter_dim: int
) -> tuple[dict[str, Tensor], list[str], list[str]]:
    """SheepRL's flat state dict ({"world_model.*", "actor.*", "critic.*"}) -> (ours' state dict with every mapped
    tensor replaced, SheepRL keys with no counterpart in ours, ours' keys that SheepRL does not set). Tensors are
    rearranged by ``WEIGHT_MAP``; the slow critic gets the critic's weights (SheepRL: target critic = critic)."""
    out, missing = dict(ours), []
    for key, value in sheeprl.items():
        rule = next(((s, o, how) for s, o, how in WEIGHT_MAP if key.startswith(s)), None)
        target = None if rule is None else rule[1] + key[len(rule[0]) :]
        if target is None or target not in ours:
            missing.append(key)
            continue
        if rule[2] == "features":  # [stoch | deter] -> [deter | stoch]
            value = torch.cat([value[:, stoch_dim:], value[:, :stoch_dim]], 1)
        elif rule[2] == "gru":  # [h | x] -> [x | h]
            value = torch.cat([value[:, deter_dim:], value[:, :deter_dim]], 1)
        if value.shape != ours[target].shape:
            raise RuntimeError(f"{key} {tuple(value.shape)} -> {target} {tuple(ours[target].shape)}")
        out[target] = value.clone()
        if target.startswith("critic.") and "slow_" + target in ours:
            out["slow_" + target] = value.clone()
    mapped = {o + key[len(s) :] for key in sheeprl for s, o, _ in WEIGHT_MAP if key.startswith(s)}
    unset = [k for k in ours if k not in mapped and not k.startswith(("slow_critic.", "return_scale."))]
    return out, missing, unset


def fixed_batch(batch: int, length: int, image_size: int, action_dim: int) -> dict[str, Tensor]:
    """Ours' layout: ``synthetic_batch`` (seeded), with a second episode in every odd sequence: is_first at
    T/2, is_terminal at T/2 - 1. image (B, T, H, W, 3) uint8, action (B, T, A), reward, flags (B, T)."""
    data = synthetic_batch(batch, length, image_size, action_dim, torch.device("cpu"))
    if length >= 4:
        data["is_first"][1::2, length // 2] = True
        data["is_terminal"][1::2, length // 2 - 1] = True
        data["is_last"][1::2, length // 2 - 1] = True
    return data


def sheeprl_batch(data: dict[str, Tensor]) -> dict[str, Tensor]:
    """Ours' batch -> SheepRL's (T, B, ...) float, as its replay sampler returns it: rgb (T, B, 3, H, W) in
    [0, 255], actions[t] the action taken at obs[t] (= ours action[t + 1]; the last row, unused, zeros),
    rewards, terminated, truncated, is_first (T, B, 1)."""
    action = data["action"].transpose(0, 1).float()
    actions = torch.zeros_like(action)
    actions[:-1] = action[1:]
    flag = lambda k: data[k].transpose(0, 1).float()[..., None]  # noqa: E731
    return {
        "rgb": data["image"].permute(1, 0, 4, 2, 3).float(),
        "actions": actions,
        "rewards": flag("reward"),
        "terminated": flag("is_terminal"),
        "truncated": torch.zeros_like(flag("is_terminal")),
        "is_first": flag("is_first"),
    }


def ours_run(
    agent: Any, data: dict[str, Tensor], action_noise: list[Tensor]
) -> tuple[dict[str, float], dict[str, float], dict[str, list[Tensor]]]:
    """Our world-model, actor and critic losses on ``data`` (ours' layout), each backpropagated alone, no step ->
    (terms, gradient norms per group, the one-hot samples drawn: "posterior" T x (B, S, K), "imagined"
    H x (N, S, K))."""
    import worldmodels.distributions as distributions
    import worldmodels.rssm as rssm
    from agents.dreamer import entropy as agent_entropy
    from agents.dreamer import frozen
    from worldmodels.interface import detach, flatten_time

    drawn: list[Tensor] = []
    original, original_kl = distributions.onehot_sample, rssm.kl_dyn_rep
    kl_terms: list[tuple[Tensor, Tensor]] = []

    def kl_dyn_rep(post: dict[str, Tensor], prior: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        out = original_kl(post, prior)
        kl_terms.append(tuple(x.detach() for x in out))
        return out

    def onehot_sample(logits: Tensor) -> Tensor:
        sample = original(logits)
        drawn.append(sample.detach().clone())
        return sample

    wm, batch = agent.world_model, data["is_first"].shape[0]
    named = lambda: {k: p.grad for k, p in agent.named_parameters()}  # noqa: E731
    distributions.onehot_sample, rssm.kl_dyn_rep = onehot_sample, kl_dyn_rep
    try:
        total, metrics, posterior = wm.loss(data)
        posterior_samples = [s for s in drawn if s.ndim == 3 and s.shape[0] == batch]  # not the unused priors
        drawn.clear()
        agent.zero_grad(set_to_none=True)
        total.backward()
        grads = grad_norms(named(), 1)
        start = detach(flatten_time(posterior))
        first_cont = 1.0 - data["is_terminal"].reshape(-1).float()
        with NormalNoise(list(action_noise)), frozen(wm, agent.critic):
            actor_loss, trajectory, actor_metrics = agent.actor_loss(start, first_cont)
        imagined = list(drawn)
    finally:
        distributions.onehot_sample, rssm.kl_dyn_rep = original, original_kl
    # ours' actor loss without a baseline, recomputed from its pieces: -mean(w (R / S + eta H)); equal to ours'
    # loss unless ours subtracts a baseline too (then "actor" becomes the same quantity as SheepRL's)
    with torch.no_grad():
        entropy = agent_entropy(agent.actor(trajectory["features"]))  # (N, H)
        scale = actor_metrics["return_scale"]
        objective = trajectory["returns"] / scale + agent.actor_entropy * entropy
        no_baseline = float(-(trajectory["weight"] * objective).mean())
    has_baseline = abs(no_baseline - float(actor_loss.detach())) > 1e-6 + 1e-4 * abs(no_baseline)
    agent.zero_grad(set_to_none=True)
    actor_loss.backward()
    grads.update({k: v for k, v in grad_norms(named(), 1).items() if k == "actor"})
    if not has_baseline:
        grads["actor_no_baseline"] = grads["actor"]
    critic_loss, critic_metrics = agent.critic_loss(**trajectory)
    agent.zero_grad(set_to_none=True)
    critic_loss.backward()
    grads.update({k: v for k, v in grad_norms(named(), 1).items() if k == "critic"})
    cont = float(metrics.get("cont", float("nan")))
    terms = {
        "image": float(metrics["image"]),
        "reward": float(metrics["reward"]),
        "continue": cont,
        "dyn": float(metrics["dyn"]),
        "rep": float(metrics["rep"]),
        "model_loss": float(metrics["loss"]),
        "post_entropy": float(metrics["post_entropy"]),
        "prior_entropy": float(metrics["prior_entropy"]),
        "actor": float(actor_loss.detach()),
        "actor_no_baseline": no_baseline,
        "ours_actor_has_baseline": float(has_baseline),
        "return": float(actor_metrics["return"]),
        "weight": float(actor_metrics["weight"]),
        "policy_entropy": float(actor_metrics["policy_entropy"]),
        "return_scale": float(actor_metrics["return_scale"]),
        "value": float(critic_metrics["value"]),
        "critic": float(critic_loss.detach()),
    }
    cfg, (dyn, rep) = wm.config, kl_terms[0]  # the KL balancing of RSSM.loss, with its scales and free nats
    free = cfg["free_nats"]
    kl_loss = cfg["dyn_scale"] * dyn.clamp(min=free).mean() + cfg["rep_scale"] * rep.clamp(min=free).mean()
    terms["kl_loss"] = float(kl_loss)
    return terms, grads, {"posterior": posterior_samples, "imagined": imagined}


def build_ours(args: argparse.Namespace) -> Any:
    """Our DreamerAgent v3 with the RSSM preset ``dreamerv3-S`` and actor / critic MLPs of its size."""
    sys.path.insert(0, str(ROOT))
    from agents.dreamer import DreamerAgent
    from worldmodels.rssm import PRESETS

    preset = f"dreamerv3-{SIZE}"
    sizes = PRESETS[preset]
    torch.manual_seed(args.seed)
    return DreamerAgent(
        {"class_path": "worldmodels.rssm.RSSM", "init_args": {"preset": preset}},
        version="v3",
        image_size=args.image_size,
        action_dim=args.action_dim,
        hidden=sizes["hidden"],
        actor_layers=sizes["mlp_layers"],
        critic_layers=sizes["mlp_layers"],
    )


# --- the comparison --------------------------------------------------------------------------------------------


def sheeprl_command(args: argparse.Namespace, worker: str, work: Path) -> list[str]:
    command = [str(venv_python()), str(Path(__file__).resolve()), "--worker", worker, "--dir", str(work)]
    command += [
        "--batch",
        str(args.batch),
        "--length",
        str(args.length),
        "--image-size",
        str(args.image_size),
    ]
    command += [
        "--action-dim",
        str(args.action_dim),
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
    ]
    return command + (["--out", str(work / "sheeprl_init.pt")] if worker == "init" else [])


def run_sheeprl(args: argparse.Namespace, worker: str, work: Path) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(
        sheeprl_command(args, worker, work), capture_output=True, text=True, cwd=ROOT, env=env
    )
    if proc.returncode:
        sys.stderr.write(proc.stderr[-6000:])
        raise SystemExit(f"SheepRL worker {worker!r} exited with status {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def perturb_zero_heads(states: dict[str, dict[str, Tensor]], seed: int) -> list[str]:
    """Fill SheepRL's zero-initialized output layers (``ZERO_HEADS``) with a fan-avg normal of scale 1, in place;
    -> the keys filled."""
    g, filled = torch.Generator().manual_seed(seed + 1), []
    for key in ZERO_HEADS:
        part, name = key.split(".", 1)
        weight = states[part][name]
        if not weight.abs().sum():
            std = math.sqrt(2.0 / sum(weight.shape))
            states[part][name] = torch.randn(weight.shape, generator=g) * std
            filled.append(key)
    return filled


def compare(
    ours_terms: dict[str, float],
    theirs_terms: dict[str, float],
    ours_grads: dict[str, float],
    theirs_grads: dict[str, float],
) -> list[dict[str, Any]]:
    """One row per term and per gradient group present on either side: ours, SheepRL's, relative difference."""
    rows, ours_baseline = [], bool(ours_terms.get("ours_actor_has_baseline"))
    terms = {**TERMS, "actor": (TERMS["actor"][0], ours_baseline)}  # same once ours subtracts a baseline too
    grad_same = {**GRAD_SAME, "actor": ours_baseline}
    for term, (kind, same) in terms.items():
        rows.append(
            dict(term=term, kind=kind, ours=ours_terms.get(term), sheeprl=theirs_terms.get(term), same=same)
        )
    for group in GROUPS:
        if group in ours_grads or group in theirs_grads:
            row = dict(term=f"grad/{group}", kind="grad_norm", ours=ours_grads.get(group))
            rows.append({**row, "sheeprl": theirs_grads.get(group), "same": grad_same[group]})
    if ours_baseline:  # the no-baseline variant only explained a difference that is gone
        rows = [r for r in rows if not r["term"].endswith("actor_no_baseline")]
    for row in rows:
        both = row["ours"] is not None and row["sheeprl"] is not None
        row["rel_diff"] = rel_diff(row["ours"], row["sheeprl"]) if both else None
        row["within"] = both and (
            row["rel_diff"] <= TOLERANCE or abs(row["ours"] - row["sheeprl"]) <= ABS_TOLERANCE
        )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    fmt = lambda x: "-" if x is None else f"{x:.6g}"  # noqa: E731
    print(f"{'term':24} {'ours':>14} {'sheeprl':>14} {'rel diff':>10}  same quantity  within 1%")
    for r in rows:
        rd = "-" if r["rel_diff"] is None else f"{r['rel_diff']:.2e}"
        same, within = "yes" if r["same"] else "no", "yes" if r["within"] else "NO"
        print(f"{r['term']:24} {fmt(r['ours']):>14} {fmt(r['sheeprl']):>14} {rd:>10}  {same:13}  {within}")


def git_state() -> dict[str, Any]:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], capture_output=True, text=True, cwd=ROOT).stdout.strip()

    files = ["worldmodels/rssm.py", "worldmodels/distributions.py", "agents/dreamer.py", "encoders/"]
    return {"commit": git("rev-parse", "--short", "HEAD"), "modified": git("status", "--short", "--", *files)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--length", type=int, default=LENGTH)
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    parser.add_argument("--action-dim", type=int, default=ACTION_DIM)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every process")
    parser.add_argument(
        "--zero-heads", action="store_true", help="keep SheepRL's zero reward / critic outputs"
    )
    parser.add_argument("--keep", help="a folder to keep the exchanged files in (default: a temporary one)")
    parser.add_argument("--worker", choices=["init", "run"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sheeprl_worker(args)
        return
    if not venv_python().exists():
        parser.error(
            f"no SheepRL environment at {VENV}: run `python benchmarks/sheeprl_side_by_side.py --setup`"
        )
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        versions = run_sheeprl(args, "init", work)
        raw = torch.load(work / "sheeprl_init.pt")
        filled = [] if args.zero_heads else perturb_zero_heads(raw, args.seed)
        torch.save(raw, work / "sheeprl_weights.pt")

        agent = build_ours(args)
        wm = agent.world_model
        flat = {f"{part}.{k}": v for part, s in raw.items() for k, v in s.items()}
        state, missing, unset = map_weights(flat, agent.state_dict(), wm.stoch_dim, wm.config["deter"])
        agent.load_state_dict(state)
        data = fixed_batch(args.batch, args.length, args.image_size, args.action_dim)
        n, horizon = args.batch * args.length, agent.horizon
        g = torch.Generator().manual_seed(args.seed + 2)
        action_noise = [torch.randn(n, args.action_dim, generator=g) for _ in range(horizon + 1)]
        t0 = time.perf_counter()
        ours_terms, ours_grads, samples = ours_run(agent, data, action_noise)
        ours_s = time.perf_counter() - t0
        noise = {
            "posterior": samples["posterior"],
            "imagined_sheeprl": [to_sheeprl_order(x, args.batch, args.length) for x in samples["imagined"]],
            "action_sheeprl": [to_sheeprl_order(x, args.batch, args.length) for x in action_noise],
        }
        torch.save(noise, work / "noise.pt")
        torch.save(sheeprl_batch(data), work / "sheeprl_batch.pt")
        theirs = run_sheeprl(args, "run", work)

    rows = compare(ours_terms, theirs["terms"], ours_grads, theirs["grads"])
    header = {
        "what": "dreamer_parity_setup",
        "size": SIZE,
        "batch": args.batch,
        "length": args.length,
        "image_size": args.image_size,
        "action_dim": args.action_dim,
        "seed": args.seed,
        "threads": args.threads,
        "zero_heads_filled": filled,
        "sheeprl_keys_without_counterpart": missing,
        "ours_keys_not_set": unset,
        "sheeprl": versions["sheeprl"],
        "sheeprl_torch": versions["torch"],
        "torch": torch.__version__,
        "ours_s": round(ours_s, 1),
        "sheeprl_s": theirs["seconds"],
        "total_s": round(time.perf_counter() - started, 1),
        **git_state(),
    }
    print(json.dumps(header))
    print_table(rows)
    for r in rows:
        line = {"what": "dreamer_parity", "term": r["term"], "kind": r["kind"], "ours": r["ours"]}
        line.update(
            sheeprl=r["sheeprl"],
            rel_diff=r["rel_diff"],
            same_quantity=r["same"],
            within_tolerance=r["within"],
        )
        print(json.dumps(line))
    same = [r for r in rows if r["same"]]
    summary = {"what": "dreamer_parity_summary", "tolerance": TOLERANCE, "abs_tolerance": ABS_TOLERANCE}
    summary["same_quantity"] = len(same)
    summary["within"] = sum(r["within"] for r in same)
    summary["beyond"] = [r["term"] for r in same if not r["within"]]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
