"""Agent head 2: PlaNet, latent model-predictive control trained online from pixels (Hafner et al. 2019).

    worldmodels agent planet -c configs/planet_cartpole_swingup.yaml
    worldmodels agent planet -c configs/planet_cartpole_swingup.yaml --ckpt_path last     # resume

``PlaNetAgent`` owns an RSSM and a planner. Training steps fit the world model on replay windows (plus, as
options, a latent ensemble for uncertainty-aware planning and a critic for a terminal value); acting filters
the newest frame into the posterior and plans from it (``agents/planners.py``), adding Gaussian exploration
noise while collecting. The online loop (seed episodes, C training steps, one episode collected with the
planner) is ``agents/online.py``'s, shared with the Dreamer head.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agents.online import agent_cli
from agents.planners import CEMPlanner, LatentEnsemble, MPPIPlanner, RandomShooting
from worldmodels.errors import ConfigError
from worldmodels.guards import check_finite
from worldmodels.interface import State, last_step
from worldmodels.rssm import build_rssm

PLANNERS = {"cem": CEMPlanner, "mppi": MPPIPlanner, "random": RandomShooting}


class PlaNetAgent(L.LightningModule):
    """RSSM + latent planner. Defaults are PlaNet's (App. A): the `planet` RSSM preset, CEM with horizon 12,
    1000 candidates, 10 iterations, top 100, warm start off, exploration noise 0.3, plain sum of rewards.

    ``planner``: "cem" | "mppi" | "random"; ``planner_options`` go to its constructor (horizon, candidates,
    iterations, top_k, gamma, beta, noise_std, warm_start, discount, compile).
    ``ensemble_heads > 0`` trains a ``LatentEnsemble`` whose disagreement, times ``ensemble_scale``, is added to
    the planner's rewards (negative: cautious, positive: exploration). ``value_critic`` trains V(features) by
    TD(lambda) on replayed posterior states and adds V(s_H) at the planning horizon.
    """

    exploration_noise = 0.3  # PlaNet App. A: Gaussian noise with std 0.3 added to planned actions
    critic_discount = 0.99
    critic_lambda = 0.95

    def __init__(
        self,
        preset: str = "planet",
        image_size: int = 64,
        action_dim: int = 0,
        discrete: bool = False,
        model_overrides: dict[str, Any] | None = None,
        planner: str = "cem",
        planner_options: dict[str, Any] | None = None,
        exploration_noise: float | None = None,
        ensemble_heads: int = 0,
        ensemble_scale: float = 0.0,
        value_critic: bool = False,
        aux_lr: float = 1e-3,
        on_nonfinite: str = "stop",
    ) -> None:
        super().__init__()
        if planner not in PLANNERS:
            raise ConfigError(f"planner {planner!r} is unknown; use one of {list(PLANNERS)}")
        self.save_hyperparameters()
        self.image_size, self.action_dim, self.discrete = image_size, action_dim, discrete
        self.world_model = build_rssm(preset, image_size, action_dim, discrete, model_overrides)
        features = self.world_model.feature_dim
        self.ensemble = LatentEnsemble(features, action_dim, heads=ensemble_heads) if ensemble_heads else None
        self.critic = (
            nn.Sequential(
                nn.Linear(features, 200), nn.ELU(), nn.Linear(200, 200), nn.ELU(), nn.Linear(200, 1)
            )
            if value_critic
            else None
        )
        options = {"discount": 1.0, **(planner_options or {})}  # PlaNet sums rewards over the horizon
        self.planner = PLANNERS[planner](
            **options,
            ensemble=self.ensemble,
            ensemble_scale=ensemble_scale,
            value_fn=self.value if value_critic else None,
        )
        self.noise = self.exploration_noise if exploration_noise is None else exploration_noise
        self.aux_lr = aux_lr

    def value(self, features: Tensor) -> Tensor:
        """features (M, F) -> V (M,)."""
        return self.critic(features).squeeze(-1)

    # --- learning ----------------------------------------------------------------------------------------

    def training_step(self, batch: dict[str, Tensor], batch_idx: int = 0) -> Tensor | None:
        total, metrics, post = self.world_model.loss(batch)
        if not check_finite(metrics, self.global_step, self.hparams.on_nonfinite):
            return None  # skip this batch
        features = self.world_model.features(post).detach()  # (B, T, F)
        if self.ensemble is not None:
            metrics["ensemble"] = self.ensemble.loss(features, batch["action"])
            total = total + metrics["ensemble"]
        if self.critic is not None:
            metrics["critic"] = self.critic_loss(features, batch)
            total = total + metrics["critic"]
        self.log_dict(
            {f"train/{k}": v.detach() for k, v in metrics.items()},
            batch_size=batch["image"].shape[0],
            prog_bar=False,
        )
        self.log("loss", metrics["loss"], prog_bar=True, logger=False)
        return total

    def critic_loss(self, features: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """TD(lambda) regression of V on replayed posterior features (B, T, F) with the observed rewards."""
        value = self.value(features)  # (B, T)
        with torch.no_grad():
            reward = batch["reward"][:, 1:]
            cont = (~batch["is_terminal"][:, 1:]).float() * (~batch["is_first"][:, 1:]).float()
            target, next_return = [], value[:, -1]
            for t in reversed(range(value.shape[1] - 1)):
                bootstrap = (1 - self.critic_lambda) * value[:, t + 1] + self.critic_lambda * next_return
                next_return = reward[:, t] + self.critic_discount * cont[:, t] * bootstrap
                target.append(next_return)
            target = torch.stack(target[::-1], 1)
        return F.mse_loss(value[:, :-1], target)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        cfg = self.world_model.config
        groups = [{"params": self.world_model.parameters(), "lr": cfg["lr"]}]
        aux = [p for m in (self.ensemble, self.critic) if m is not None for p in m.parameters()]
        if aux:
            groups.append({"params": aux, "lr": self.aux_lr})
        return torch.optim.Adam(groups, eps=cfg["eps"])

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any
    ) -> None:
        self.clip_gradients(
            optimizer, gradient_clip_val=self.world_model.config["grad_clip"], gradient_clip_algorithm="norm"
        )

    # --- acting ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def act(
        self, obs: Tensor, is_first: Tensor, state: dict[str, Any] | None, explore: bool
    ) -> tuple[Tensor, Any]:
        """obs (N, H, W, 3) uint8, is_first (N,) bool -> action (N, A), the filter and plan state to pass back."""
        obs, is_first = obs.to(self.device), is_first.to(self.device)
        batch = obs.shape[0]
        if state is None:
            state = {
                "model": self.world_model.initial(batch),
                "action": torch.zeros(batch, self.action_dim, device=self.device),
                "plan": None,
            }
        post: State = last_step(
            self.world_model.observe(
                obs[:, None], state["action"][:, None], is_first[:, None], state["model"]
            )
        )
        plan = state["plan"]
        if plan is not None:  # a new episode starts from an empty plan
            plan = plan * (~is_first).to(plan.dtype)[:, None, None]
        action, plan = self.planner(self.world_model, post, plan)
        if explore and self.noise > 0:
            if self.discrete:  # epsilon-greedy with epsilon = noise
                random = F.one_hot(
                    torch.randint(self.action_dim, (batch,), device=self.device), self.action_dim
                )
                pick = torch.rand(batch, 1, device=self.device) < self.noise
                action = torch.where(pick, random.to(action.dtype), action)
            else:
                action = (action + self.noise * torch.randn_like(action)).clamp(-1, 1)
        return action, {"model": post, "action": action, "plan": plan}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["model_class"] = "agents.planet.PlaNetAgent"


def main(argv: list[str]) -> None:
    """`worldmodels agent planet -c RECIPE.yaml [--key value ...]`."""
    agent_cli(PlaNetAgent, argv)
