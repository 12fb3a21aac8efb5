"""Agent head 2: PlaNet, latent model-predictive control trained online from pixels (Hafner et al. 2019).

    worldmodels agent planet -c configs/planet_cartpole_swingup.yaml
    worldmodels agent planet -c configs/planet_cartpole_swingup.yaml --ckpt_path last     # resume
    worldmodels agent planet -c configs/planet_cartpole_swingup.yaml --world_model.ckpt M.ckpt   # reuse a model

``PlaNetAgent`` is given a world model (any ``WorldModel``: an RSSM, the VAE + MDN-RNN pair; agents/head.py)
and owns a planner. Training steps fit the world model on replay windows (unless ``train_world_model`` is
false; plus, as options, a latent ensemble for uncertainty-aware planning and a critic for a terminal value);
acting filters the newest frame into the posterior and plans from it (``agents/planners.py``), adding Gaussian
exploration noise while collecting. The online loop (seed episodes, C training steps, one episode collected with the
planner) is ``agents/online.py``'s, shared with the Dreamer head.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agents.head import WorldModelHead, exploration_noise, lambda_return
from agents.objectives import make_objective
from agents.planners import (
    CEMPlanner,
    GradientPlanner,
    HybridPlanner,
    LatentEnsemble,
    MPPIPlanner,
    RandomShooting,
)
from worldmodels.errors import ConfigError
from worldmodels.guards import check_finite

PLANNERS = {
    "cem": CEMPlanner,
    "mppi": MPPIPlanner,
    "random": RandomShooting,
    "gradient": GradientPlanner,
    "hybrid": HybridPlanner,
}
PLANNER_OPTIONS = (  # shown with their values in force in the saved hyperparameters
    "horizon",
    "candidates",
    "iterations",
    "top_k",
    "gamma",
    "beta",
    "noise_std",
    "lr",
    "init_std",
    "restarts",
    "refine_steps",
    "warm_start",
)


class PlaNetAgent(WorldModelHead):
    """World model + latent planner. Defaults are PlaNet's (App. A): a fresh RSSM of the `planet` preset, CEM
    with horizon 12, 1000 candidates, 10 iterations, top 100, warm start off, exploration noise 0.3, plain sum
    of rewards.

    ``world_model``: any ``WorldModel`` object or spec (agents/head.py). ``planner``: "cem" | "mppi" |
    "random" | "gradient" | "hybrid"; ``planner_options`` go to its constructor (horizon, candidates,
    iterations, top_k, gamma, beta, noise_std, lr, init_std, proposal, restarts, refine_steps, warm_start,
    discount, compile). ``objective`` is what the planner maximizes (agents/objectives.py: "reward",
    "goal:IMAGE", "goal:STORE@EPISODE:FRAME", "module:function"; ``objective_options``: goal_distance,
    goal_steps, goal_repeat); ``set_objective`` swaps it at test time. ``ensemble_heads > 0`` trains a
    ``LatentEnsemble`` whose disagreement, times ``ensemble_scale``, is added to the planner's rewards
    (negative: cautious, positive: exploration); with ``trajectory_sampling`` its heads also roll the
    candidates out (PETS TS-infinity), scored by mean + ``risk`` * std over heads. ``value_critic`` trains
    V(features) by TD(lambda) on replayed posterior states and adds V(s_H) at the planning horizon.

    A frozen model with nothing to learn (``train_world_model: false`` and neither ensemble nor critic) can
    still plan: ``worldmodels eval`` builds such an agent around a world-model checkpoint; only training it
    is refused.
    """

    critic_discount = 0.99
    critic_lambda = 0.95

    def __init__(
        self,
        world_model: dict[str, Any] | None = None,  # or a WorldModel object (agents/head.py)
        train_world_model: bool = True,
        image_size: int | None = None,
        action_dim: int | None = None,
        discrete: bool | None = None,
        planner: str = "cem",
        planner_options: dict[str, Any] | None = None,
        exploration_noise: float = 0.3,  # PlaNet App. A: Gaussian noise with std 0.3 added to planned actions
        ensemble_heads: int = 0,
        ensemble_scale: float = 0.0,
        trajectory_sampling: bool = False,
        risk: float = 0.0,
        objective: str = "reward",
        objective_options: dict[str, Any] | None = None,
        value_critic: bool = False,
        aux_lr: float = 1e-3,
        on_nonfinite: str = "stop",
    ) -> None:
        super().__init__()
        if planner not in PLANNERS:
            raise ConfigError(f"planner {planner!r} is unknown; use one of {list(PLANNERS)}")
        self.save_hyperparameters(ignore=["world_model"])
        default = {"class_path": "worldmodels.rssm.RSSM", "init_args": {"preset": "planet"}}
        self.attach(world_model, default, train_world_model, action_dim, discrete, image_size)
        features = self.world_model.feature_dim
        self.ensemble = (
            LatentEnsemble(features, self.action_dim, heads=ensemble_heads) if ensemble_heads else None
        )
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
            trajectory_sampling=trajectory_sampling,
            risk=risk,
            value_fn=self.value if value_critic else None,
        )
        self.set_objective(objective, **(objective_options or {}))
        self.hparams["planner_options"] = {  # the values in force, the planner's defaults resolved
            **{k: getattr(self.planner, k) for k in PLANNER_OPTIONS if hasattr(self.planner, k)},
            **options,
        }
        self.noise = exploration_noise
        self.aux_lr = aux_lr

    def set_objective(self, objective: str, **options: Any) -> None:
        """Plan for ``objective`` from now on (agents/objectives.py ``make_objective``; ``options``: goal_distance,
        goal_steps, goal_repeat). "reward" keeps the trained terminal value and the ensemble term."""
        self.planner.objective = make_objective(
            objective,
            self.world_model,
            discount=self.planner.discount,
            value_fn=self.planner.value_fn,
            ensemble=self.planner.ensemble,
            ensemble_scale=self.planner.ensemble_scale,
            **options,
        )
        self.objective_name = objective

    def on_fit_start(self) -> None:
        if not self.train_world_model and self.ensemble is None and self.critic is None:
            raise ConfigError(
                "PlaNetAgent with train_world_model: false and neither ensemble_heads nor value_critic has "
                "nothing to learn; plan with the model directly (worldmodels eval) or train one of them"
            )
        if self.objective_name != "reward":
            self.print(f"planning for objective {self.objective_name} while collecting")

    def value(self, features: Tensor) -> Tensor:
        """features (M, F) -> V (M,)."""
        return self.critic(features).squeeze(-1)

    # --- learning ----------------------------------------------------------------------------------------

    def training_step(self, batch: dict[str, Tensor], batch_idx: int = 0) -> Tensor | None:
        if self.train_world_model:
            total, metrics, post = self.world_model.loss(batch)
            if not check_finite(metrics, self.global_step, self.hparams.on_nonfinite):
                return None  # skip this batch
        else:  # a frozen model only filters the window
            with torch.no_grad():
                post = self.world_model.observe(batch["image"], batch["action"], batch["is_first"])
            total, metrics = 0.0, {}
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
        self.log("loss", total.detach(), prog_bar=True, logger=False)
        return total

    def critic_loss(self, features: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """TD(lambda) regression of V on replayed posterior features (B, T, F) with the observed rewards."""
        value = self.value(features)  # (B, T)
        with torch.no_grad():
            cont = (~batch["is_terminal"][:, 1:]).float() * (~batch["is_first"][:, 1:]).float()
            discount = self.critic_discount * cont
            target = lambda_return(batch["reward"][:, 1:].float(), value, discount, self.critic_lambda)
        return F.mse_loss(value[:, :-1], target)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """The world model's own optimizer (its learning rate and epsilon), with the ensemble and critic as a
        second parameter group at ``aux_lr``."""
        aux = [p for m in (self.ensemble, self.critic) if m is not None for p in m.parameters()]
        if not self.train_world_model:
            return torch.optim.Adam(aux, lr=self.aux_lr)
        optimizer = self.world_model.configure_optimizers()
        if aux:
            optimizer.add_param_group({"params": aux, "lr": self.aux_lr})
        return optimizer

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any
    ) -> None:
        self.clip_world_model_gradients(optimizer)

    # --- acting ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def act(
        self, obs: Tensor, is_first: Tensor, state: dict[str, Any] | None, explore: bool
    ) -> tuple[Tensor, Any]:
        """obs (N, H, W, 3) uint8, is_first (N,) bool -> action (N, A), the filter and plan state to pass back."""
        state = state or {"carry": None, "plan": None}
        post = self.observe(obs, is_first, state["carry"])
        plan = state["plan"]
        if plan is not None:  # a new episode starts from an empty plan
            plan = plan * (~is_first.to(plan.device)).to(plan.dtype)[:, None, None]
        action, plan = self.planner(self.world_model, post, plan)
        if explore:
            action = exploration_noise(action, self.noise, self.discrete)
        return action, {"carry": (post, action), "plan": plan}
