"""Agent head 4: Dyna / MBPO, an off-policy model-free learner fed real replay and short branched model rollouts.

    worldmodels agent mbpo -c configs/mbpo_tiny.yaml
    worldmodels agent mbpo -c configs/mbpo_pixel_point.yaml --ckpt_path last          # resume the whole run
    worldmodels agent mbpo -c configs/mbpo_pixel_point.yaml --model.rollout_length 0  # the model-free baseline
    worldmodels eval --ckpt runs/mbpo_tiny/checkpoints/last.ckpt --env worldmodels.pixel_point:PixelPoint-v0

Sutton's Dyna (1991) and MBPO (Janner et al. 2019, "When to Trust Your Model", arXiv 1906.08253, Alg. 2): the
world model generates short rollouts branched from states of the real replay, and a model-free learner trains
on a mix of real and model transitions. Each training step here:

1. the world model (any ``WorldModel``, reached through worldmodels/interface.py only) learns on a replay window
   (B, T) with ``world_model.loss``; with ``train_world_model: false`` it stays frozen and only filters the
   window (``observe``). The posterior features f_t (B, T, F) are detached: the learner never trains the model;
2. real transitions (f_t, a_{t+1}, r_{t+1}, cont_{t+1}, f_{t+1}) are read off the window (``real_transitions``;
   a step whose next step starts a new episode is no transition);
3. ``branch``: from ``rollouts_per_step`` posterior states of the window drawn at random (None: every one, as
   MBPO branches from every replay state) the current policy rolls the model ``k = rollout_length`` steps with
   ``world_model.imagine``; each step is a model transition (f, a, reward(s'), cont(s'), f'). A branch
   *stops* at a predicted termination: the step where ``cont(s') < 0.5`` is kept as a terminal transition
   (cont 0) and the branch makes no further transitions; branches do not start from real terminal states;
4. ``updates_per_step`` learner updates, each on a batch of ``learner_batch`` transitions of which
   ``round(real_ratio * learner_batch)`` are real and the rest model ones (``mix``); with k = 0 every transition
   is real: the model-free baseline, the same learner on the same features.

The learner (``learner``): SAC (Haarnoja et al. 2018, arXiv 1812.05905, "Soft Actor-Critic Algorithms and
Applications", Table 1 and Sec. 5) for continuous actions: two Q networks with Polyak-averaged targets, a
tanh-Gaussian actor, automatic entropy tuning towards target entropy -|A|; for discrete (one-hot) actions a
double-DQN Q-learner (van Hasselt et al. 2016): online argmax, target value, Huber loss, soft target updates
with the same tau, epsilon-greedy acting. Logged: ``train/model_share`` (the counted fraction of model
transitions in the learner's batches), ``train/q_loss``, ``train/actor_loss``, ``train/alpha``, ``train/q``,
``rollout/steps`` (mean transitions per branch), ``rollout/reward``, ``rollout/stopped`` (fraction of branches
stopped by a predicted termination).

MBPO defaults used: the hyperparameter table of Janner et al. 2019 (App. C): G = 20 policy updates per env step
(``updates_per_step``), rollout length 1 (their HalfCheetah setting; the other tasks ramp k linearly from 1
over a range of epochs, ``rollout_ramp``), M = 400 model rollouts per env step; and their code (jannerm/mbpo,
``real_ratio: 0.05``): 5% real transitions in each SAC batch of 256, SAC networks of two hidden layers of 256.
MBPO's M = 400 becomes "every posterior state of the replay batch" (B * T branches per training step) here,
since the window is filtered anyway. MBPO keeps model rollouts in a buffer for a few epochs; here every training
step makes fresh ones from its own window, so the model data always comes from the current model and policy.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor, nn

from agents.head import WorldModelHead
from encoders.mlp import mlp
from worldmodels.errors import ConfigError
from worldmodels.guards import NONFINITE_MODES, check_finite
from worldmodels.interface import Carry, State, detach, flatten_time

# SAC (Haarnoja et al. 2018, arXiv 1812.05905, Table 1): Adam lr 3e-4, discount 0.99, target smoothing 0.005,
# batch 256, 2 hidden layers of 256 units; target entropy -|A| (Sec. 5)
SAC = dict(lr=3e-4, discount=0.99, tau=0.005, learner_batch=256, hidden=256, layers=2)
# MBPO (Janner et al. 2019, App. C; code jannerm/mbpo): real ratio 0.05, G = 20 updates per env step, k = 1 at first
MBPO = dict(real_ratio=0.05, updates_per_step=20, rollout_length=1)
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # SAC code (rlkit / softlearning): log-std clipped to [-20, 2]
STYLE = "planet"  # Linear + ReLU hidden layers, as SAC's networks (Haarnoja et al. 2018, App. D)
EPSILON = 0.1  # epsilon-greedy exploration of the discrete Q-learner while collecting and in rollouts
CONT_STOP = 0.5  # a branch stops where the model's P(continue) < 0.5
Transitions = dict[str, Tensor]  # features (N, F), action (N, A), reward (N,), cont (N,), next (N, F)


class GaussianActor(nn.Module):
    """features (N, F) -> tanh-Gaussian actions (N, A) in (-1, 1) with their log-probabilities (SAC, App. C)."""

    def __init__(self, feature_dim: int, action_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.net = mlp(STYLE, feature_dim, hidden, layers, 2 * action_dim)

    def forward(self, features: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor]:
        """-> action (N, A), log pi(action) (N,) with the tanh change of variables (SAC Eq. 26)."""
        mean, log_std = self.net(features).float().chunk(2, -1)
        std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()
        pre = mean if deterministic else mean + std * torch.randn_like(mean)
        log_prob = torch.distributions.Normal(mean, std).log_prob(pre)
        # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), the numerically stable form of the SAC code
        log_prob = log_prob - 2 * (math.log(2) - pre - F.softplus(-2 * pre))
        return torch.tanh(pre), log_prob.sum(-1)


class MBPOAgent(WorldModelHead):
    """World model + an off-policy learner (SAC or a double-DQN Q-learner) on its latent features, trained on
    real replay mixed with model rollouts branched from it (module docstring).

    ``world_model``: any ``WorldModel`` object or spec (agents/head.py); default a fresh ``dreamerv3-S`` RSSM.
    ``rollout_length`` k (0: model-free), ``real_ratio`` (share of real transitions in a learner batch),
    ``rollouts_per_step`` (branches per training step, None: from every posterior state of the window),
    ``rollout_ramp`` [start, end] (training steps over which k grows linearly from 1 to ``rollout_length``,
    MBPO's schedule; None: k from the start), ``updates_per_step`` (learner updates per training step),
    ``learner_batch``, ``hidden``, ``layers``, ``lr``, ``discount``, ``tau``, ``target_entropy`` (None: -|A|),
    ``epsilon`` (discrete exploration).
    """

    def __init__(
        self,
        world_model: dict[str, Any] | None = None,  # or a WorldModel object (agents/head.py)
        train_world_model: bool = True,
        image_size: int | None = None,
        action_dim: int | None = None,
        discrete: bool | None = None,
        rollout_length: int = MBPO["rollout_length"],
        real_ratio: float = MBPO["real_ratio"],
        rollouts_per_step: int | None = None,
        rollout_ramp: list[int] | None = None,
        updates_per_step: int = MBPO["updates_per_step"],
        learner_batch: int = SAC["learner_batch"],
        hidden: int = SAC["hidden"],
        layers: int = SAC["layers"],
        lr: float = SAC["lr"],
        discount: float = SAC["discount"],
        tau: float = SAC["tau"],
        target_entropy: float | None = None,
        initial_alpha: float = 1.0,  # SAC code (softlearning): log alpha starts at 0
        epsilon: float = EPSILON,
        on_nonfinite: str = "stop",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["world_model"])
        default = {"class_path": "worldmodels.rssm.RSSM", "init_args": {"preset": "dreamerv3-S"}}
        self.attach(world_model, default, train_world_model, action_dim, discrete, image_size)
        if target_entropy is None:
            target_entropy = -float(self.action_dim)  # SAC Sec. 5: target entropy -dim(A)
        self.hparams.update(target_entropy=target_entropy)  # the value in force
        if (
            rollout_length < 0
            or not 0 <= real_ratio <= 1
            or (rollout_length > 0 and real_ratio >= 1)
            or updates_per_step < 1
            or learner_batch < 1
            or not 0 < discount <= 1
            or not 0 < tau <= 1
            or (rollouts_per_step is not None and rollouts_per_step < 1)
            or (rollout_ramp is not None and (len(rollout_ramp) != 2 or rollout_ramp[0] > rollout_ramp[1]))
            or on_nonfinite not in NONFINITE_MODES
        ):
            raise ConfigError(
                f"MBPOAgent rollout_length={rollout_length}, real_ratio={real_ratio}, updates_per_step="
                f"{updates_per_step}, learner_batch={learner_batch}, discount={discount}, tau={tau}, "
                f"rollouts_per_step={rollouts_per_step}, rollout_ramp={rollout_ramp}, on_nonfinite={on_nonfinite!r}: "
                "use rollout_length >= 0, 0 <= real_ratio <= 1 (< 1 with model rollouts), updates_per_step >= 1, "
                "learner_batch >= 1, 0 < discount <= 1, 0 < tau <= 1, rollouts_per_step None or >= 1, "
                f"rollout_ramp None or [start, end] with start <= end, on_nonfinite one of {NONFINITE_MODES}"
            )
        self.automatic_optimization = False
        self.rollout_length, self.real_ratio, self.rollouts_per_step = (
            rollout_length,
            real_ratio,
            rollouts_per_step,
        )
        self.rollout_ramp, self.updates_per_step, self.learner_batch = (
            rollout_ramp,
            updates_per_step,
            learner_batch,
        )
        self.lr, self.discount, self.tau, self.target_entropy = lr, discount, tau, target_entropy
        self.epsilon, self.on_nonfinite = epsilon, on_nonfinite

        features, actions = self.world_model.feature_dim, self.action_dim
        if self.discrete:  # double DQN: Q(f) -> one value per action
            self.q = nn.ModuleList([mlp(STYLE, features, hidden, layers, actions)])
            self.actor = None
            self.log_alpha = None
        else:  # SAC: two Q(f, a) and a tanh-Gaussian actor
            self.q = nn.ModuleList([mlp(STYLE, features + actions, hidden, layers, 1) for _ in range(2)])
            self.actor = GaussianActor(features, actions, hidden, layers)
            self.log_alpha = nn.Parameter(torch.tensor(math.log(initial_alpha)))
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)

    # --- the learner ------------------------------------------------------------------------------------

    def q_values(self, features: Tensor, action: Tensor, nets: nn.ModuleList | None = None) -> Tensor:
        """features (N, F), action (N, A) -> Q (K, N): each of the K Q networks (default: those trained)."""
        nets = self.q if nets is None else nets
        if self.discrete:
            return torch.stack([(net(features).float() * action).sum(-1) for net in nets])
        inputs = torch.cat([features, action.to(features.dtype)], -1)
        return torch.stack([net(inputs).float().squeeze(-1) for net in nets])

    def policy(self, features: Tensor, explore: bool = False) -> Tensor:
        """features (N, F) -> action (N, A): SAC's tanh(mean) (``explore``: a sample), or the greedy one-hot of
        Q (``explore``: epsilon-greedy)."""
        if not self.discrete:
            return self.actor(features, deterministic=not explore)[0]
        greedy = self.q[0](features).float().argmax(-1)
        if explore and self.epsilon > 0:
            random = torch.randint(self.action_dim, greedy.shape, device=greedy.device)
            greedy = torch.where(
                torch.rand(greedy.shape, device=greedy.device) < self.epsilon, random, greedy
            )
        return F.one_hot(greedy, self.action_dim).float()

    def alpha(self) -> Tensor:
        """SAC's temperature exp(log alpha) (), detached."""
        return self.log_alpha.exp().detach()

    def q_loss(self, batch: Transitions) -> tuple[Tensor, dict[str, Tensor]]:
        """The critic's TD loss on a batch of transitions. SAC: 1/2 (Q_i(f, a) - y)^2 summed over both Q with
        y = r + gamma cont (min_i Qtarget_i(f', a') - alpha log pi(a' | f')), a' ~ pi (SAC Eq. 5, 7); discrete:
        Huber(Q(f, a) - y), y = r + gamma cont Qtarget(f', argmax_a Q(f', a)) (double DQN)."""
        with torch.no_grad():
            following = batch["next"]
            if self.discrete:
                best = F.one_hot(self.q[0](following).float().argmax(-1), self.action_dim).float()
                next_value = self.q_values(following, best, self.q_target)[0]
            else:
                next_action, next_log_prob = self.actor(following)
                next_q = self.q_values(following, next_action, self.q_target).min(0).values
                next_value = next_q - self.alpha() * next_log_prob
            target = batch["reward"].float() + self.discount * batch["cont"].float() * next_value
        q = self.q_values(batch["features"], batch["action"])
        if self.discrete:
            loss = F.smooth_l1_loss(q[0], target)
        else:
            loss = 0.5 * (q - target[None]).square().mean(1).sum()
        return loss, {"q_loss": loss.detach(), "q": q.detach().mean(), "target": target.mean()}

    def actor_loss(self, features: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """features (N, F) -> (actor loss mean(alpha log pi(a|f) - min_i Q_i(f, a)), a ~ pi reparameterized
        (SAC Eq. 12); temperature loss -log alpha * mean(log pi + target entropy) (SAC Eq. 18); metrics)."""
        action, log_prob = self.actor(features)
        q = self.q_values(features, action).min(0).values
        loss = (self.alpha() * log_prob - q).mean()
        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        metrics = {"actor_loss": loss.detach(), "alpha": self.alpha(), "entropy": -log_prob.detach().mean()}
        return loss, alpha_loss, metrics

    @torch.no_grad()
    def update_targets(self) -> None:
        """Qtarget <- (1 - tau) Qtarget + tau Q (Polyak averaging, SAC tau 0.005)."""
        for target, online in zip(self.q_target.parameters(), self.q.parameters()):
            target.lerp_(online, self.tau)

    def learner_step(
        self, batch: Transitions, optimizers: list[Any], counts_as_step: bool
    ) -> dict[str, Tensor]:
        """One update of the critic (and for SAC the actor and the temperature) on ``batch``; the optimizers are
        [q, actor, alpha] (SAC) or [q] (discrete). Returns the metrics, empty if a loss was not finite."""
        q_loss, metrics = self.q_loss(batch)
        if not check_finite({"q": q_loss}, self.global_step, self.on_nonfinite):
            return {}
        self._step(optimizers[0], q_loss, counts_as_step)
        if not self.discrete:
            for p in self.q.parameters():  # the actor's loss trains the actor only
                p.requires_grad_(False)
            try:
                actor_loss, alpha_loss, actor_metrics = self.actor_loss(batch["features"])
            finally:
                for p in self.q.parameters():
                    p.requires_grad_(True)
            if not check_finite(
                {"actor": actor_loss, "alpha": alpha_loss}, self.global_step, self.on_nonfinite
            ):
                return {}
            self._step(optimizers[1], actor_loss, False)
            self._step(optimizers[2], alpha_loss, False)
            metrics.update(actor_metrics)
        self.update_targets()
        return metrics

    def _step(
        self, optimizer: LightningOptimizer | torch.optim.Optimizer, loss: Tensor, counts_as_step: bool
    ) -> None:
        """Backward and step; only a step that ``counts_as_step`` goes through Lightning's wrapper, so that one
        training step is one ``global_step`` (as DreamerAgent._update)."""
        optimizer.zero_grad(set_to_none=True)
        if self._trainer is not None:
            self.manual_backward(loss)
        else:
            loss.backward()
        if counts_as_step or not isinstance(optimizer, LightningOptimizer):
            optimizer.step()
        else:
            optimizer.optimizer.step()

    # --- data: real transitions, model rollouts, the mix --------------------------------------------------

    def real_transitions(self, features: Tensor, batch: dict[str, Tensor]) -> Transitions:
        """features (B, T, F) of a replay window's posterior, batch (B, T) -> its real transitions (N, ...),
        N <= B (T - 1): (f_t, a_{t+1}, r_{t+1}, 1 - is_terminal_{t+1}, f_{t+1}) wherever step t+1 does not
        start a new episode (the action stored at t+1 led from t to t+1, worldmodels/__init__.py)."""
        valid = rearrange(~batch["is_first"][:, 1:].bool(), "b t -> (b t)")
        out = {
            "features": features[:, :-1],
            "action": batch["action"][:, 1:].to(features.dtype),
            "reward": batch["reward"][:, 1:].float(),
            "cont": 1.0 - batch["is_terminal"][:, 1:].float(),
            "next": features[:, 1:],
        }
        return {k: rearrange(v, "b t ... -> (b t) ...")[valid] for k, v in out.items()}

    def current_rollout_length(self) -> int:
        """k at this training step: ``rollout_length``, or MBPO's linear ramp from 1 to it over ``rollout_ramp``."""
        if self.rollout_length == 0 or self.rollout_ramp is None:
            return self.rollout_length
        start, end = self.rollout_ramp
        fraction = min(max((self.global_step - start) / max(end - start, 1), 0.0), 1.0)
        return int(round(1 + fraction * (self.rollout_length - 1)))

    @torch.no_grad()
    def branch(self, start: State, start_cont: Tensor, length: int) -> tuple[Transitions, dict[str, Tensor]]:
        """start (N, ...) posterior states, start_cont (N,) 1 where the state is not terminal -> the model
        transitions of ``length``-step branches from them with the current exploring policy, and rollout stats.

        Step j of a branch from s_0: a_j ~ pi(f_j), s_{j+1} = imagine(s_j, a_j), transition (f_j, a_j,
        reward(s_{j+1}), cont, f_{j+1}) with cont = 1[P(continue | s_{j+1}) >= 0.5]. A branch makes steps while it
        runs: it does not start from a terminal state and stops after the step whose cont is 0 (that step is
        kept, as a terminal transition). Transitions are ordered step-major: the N branches' first steps, then
        the second steps of those still running, ..."""
        model, state = self.world_model, start
        running = start_cont > 0.5
        steps: list[Transitions] = []
        features = model.features(state)
        reward_sum = torch.zeros(running.shape, device=running.device)
        for _ in range(length):
            action = self.policy(features, explore=True)
            state = model.imagine(state, action.to(features.dtype))
            following = model.features(state)
            reward = model.reward_from_features(following).float()
            cont = (model.cont_from_features(following).float() >= CONT_STOP).float()
            step = {"features": features, "action": action, "reward": reward, "cont": cont, "next": following}
            steps.append({k: v[running] for k, v in step.items()})
            reward_sum += reward * running
            running = running & (cont > 0)
            features = following
        out = {k: torch.cat([s[k] for s in steps]) for k in steps[0]} if steps else {}
        made = sum(len(s["reward"]) for s in steps)
        branches = max(int((start_cont > 0.5).sum()), 1)
        stats = {
            "rollout/steps": torch.tensor(made / branches),
            "rollout/reward": reward_sum.sum() / max(made, 1),
            "rollout/stopped": ((start_cont > 0.5) & ~running).float().sum() / branches,
        }
        return out, stats

    def mix(self, real: Transitions, model: Transitions) -> tuple[Transitions, int]:
        """-> a learner batch of ``learner_batch`` transitions, ``round(real_ratio * learner_batch)`` of them real
        (all of them when there is no model data), each part drawn uniformly with replacement; and its count of
        model transitions."""
        n_model = 0
        if model and len(model["reward"]):
            n_model = self.learner_batch - int(round(self.real_ratio * self.learner_batch))
        n_real = self.learner_batch - n_model
        if n_real and not len(real["reward"]):  # no real transition in this window: model data only
            n_real, n_model = 0, self.learner_batch
        parts = []
        for source, count in ((real, n_real), (model, n_model)):
            if count:
                pick = torch.randint(len(source["reward"]), (count,), device=source["reward"].device)
                parts.append({k: v[pick] for k, v in source.items()})
        if not parts:
            return {}, 0
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}, n_model

    # --- training ----------------------------------------------------------------------------------------

    def training_step(self, batch: dict[str, Tensor], batch_idx: int = 0) -> None:
        """batch: image (B, T, H, W, 3) uint8, action (B, T, A), reward, is_first, is_terminal (B, T)."""
        optimizers = list(self.optimizers()) if self._trainer is not None else self.configure_optimizers()
        metrics: dict[str, Tensor] = {}
        if self.train_world_model:
            model_opt = optimizers.pop(0)
            model_loss, metrics, posterior = self.world_model.loss(batch)
            if not check_finite(metrics, self.global_step, self.on_nonfinite):
                return
            model_opt.zero_grad(set_to_none=True)
            if self._trainer is not None:
                self.manual_backward(model_loss)
                self.clip_world_model_gradients(model_opt)
            else:
                model_loss.backward()
            model_opt.step()
        else:
            with torch.no_grad():
                posterior = self.world_model.observe(batch["image"], batch["action"], batch["is_first"])
        posterior = detach(posterior)
        with torch.no_grad():
            features = self.world_model.features(posterior)  # (B, T, F)
        real = self.real_transitions(features, batch)
        model_data: Transitions = {}
        length = self.current_rollout_length()
        if length > 0:
            start = flatten_time(posterior)
            start_cont = 1.0 - rearrange(batch["is_terminal"], "b t -> (b t)").float()
            if self.rollouts_per_step is not None and self.rollouts_per_step < len(start_cont):
                pick = torch.randperm(len(start_cont), device=start_cont.device)[: self.rollouts_per_step]
                start, start_cont = {k: v[pick] for k, v in start.items()}, start_cont[pick]
            model_data, rollout_stats = self.branch(start, start_cont, length)
            metrics.update(rollout_stats)
        learner: dict[str, list[Tensor]] = {}
        shares = []
        for update in range(self.updates_per_step):
            mixed, n_model = self.mix(real, model_data)
            if not mixed:
                break
            shares.append(n_model / self.learner_batch)
            step_metrics = self.learner_step(
                mixed, optimizers, counts_as_step=update == 0 and not self.train_world_model
            )
            for k, v in step_metrics.items():
                learner.setdefault(k, []).append(v)
        metrics.update({k: torch.stack(v).mean() for k, v in learner.items()})
        metrics["model_share"] = torch.tensor(sum(shares) / max(len(shares), 1))
        metrics["rollout_length"] = torch.tensor(float(length))
        logged = {(k if k.startswith("rollout/") else f"train/{k}"): v for k, v in metrics.items()}
        if self._trainer is not None:
            self.log_dict(logged, batch_size=batch["image"].shape[0])
        self.last_metrics = logged

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """The world model's own optimizer (while it trains), then Adam (SAC lr 3e-4) for Q, actor, temperature."""
        model = [self.world_model.configure_optimizers()] if self.train_world_model else []
        learner = [torch.optim.Adam(self.q.parameters(), lr=self.lr)]
        if not self.discrete:
            learner += [
                torch.optim.Adam(self.actor.parameters(), lr=self.lr),
                torch.optim.Adam([self.log_alpha], lr=self.lr),
            ]
        return model + learner

    # --- acting ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def act(
        self, obs: Tensor, is_first: Tensor, state: Carry | None = None, explore: bool = False
    ) -> tuple[Tensor, Carry]:
        """obs (N, H, W, 3) uint8, is_first (N,) bool -> action (N, A) in [-1, 1] or one-hot, and the state to pass
        back (posterior (N, ...), that action). ``explore``: SAC samples / epsilon-greedy; otherwise the mode."""
        posterior = self.observe(obs, is_first, state)
        action = self.policy(self.world_model.features(posterior), explore)
        return action, (posterior, action)
