"""The one model interface every agent head uses (see DESIGN.md).

A *state* is a dict of tensors sharing leading batch dims: ``(B, ...)`` for one step or ``(B, T, ...)`` for a
filtered sequence. The RSSM's state is ``{"deter": h, "stoch": z, ...}``; the World-Models pair uses
``{"z": z, "h": h, "c": c}``. Heads never look inside a state: they call the methods below.

    model.initial(batch_size)                 -> state (B, ...)
    model.observe(images, actions, is_first)  -> states (B, T, ...)   posterior, filtering real data
    model.imagine(state, action)              -> state (B, ...)       one dream step (prior sample)
    model.features(state)                     -> (..., F)             what heads read
    model.reward(state), model.cont(state)    -> (...)                predicted reward, P(continue)
    model.decode(state)                       -> (..., H, W, 3) uint8 back to pixels, for looking
    model.reward_from_features(f), model.cont_from_features(f)  the same heads on features already computed
    model.loss(batch)                         -> (total, metrics, posterior states (B, T, ...))
    model.configure_optimizers()              -> the model's own optimizer (its paper's learning rate)

Attributes: ``feature_dim``, ``action_dim``, ``discrete`` (actions are one-hot of size ``action_dim``),
``image_size``, and the gradient clipping the model trains with: ``grad_clip`` (None: none) applied by
``grad_clip_algorithm`` ("norm" or "value", as Lightning's ``clip_gradients``).

Agent heads (agents/) reach a model through these and nothing else, so every head works on every model.
``observe_step`` below is the one place where a head filters the newest frame of N environments.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from einops import rearrange
from torch import Tensor

State = dict[str, Tensor]


@runtime_checkable
class WorldModel(Protocol):
    feature_dim: int
    action_dim: int
    discrete: bool
    image_size: int
    grad_clip: float | None
    grad_clip_algorithm: str

    def initial(self, batch_size: int) -> State: ...

    def observe(self, images: Tensor, actions: Tensor, is_first: Tensor, state: State | None = None) -> State:
        """images (B, T, H, W, 3) uint8, actions (B, T, A), is_first (B, T) bool -> states (B, T, ...).

        ``state`` (B, ...) continues a previous call (online filtering); ``is_first`` resets it."""
        ...

    def imagine(self, state: State, action: Tensor) -> State:
        """state (B, ...), action (B, A) -> next state (B, ...), sampled from the model's prior."""
        ...

    def features(self, state: State) -> Tensor: ...

    def reward(self, state: State) -> Tensor: ...

    def cont(self, state: State) -> Tensor: ...

    def decode(self, state: State) -> Tensor: ...

    def reward_from_features(self, features: Tensor) -> Tensor:
        """features (..., F) -> predicted reward (...), as ``reward`` of the state they came from."""
        ...

    def cont_from_features(self, features: Tensor) -> Tensor:
        """features (..., F) -> P(the episode continues) (...), as ``cont``."""
        ...

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor], State]:
        """batch: image (B, T, H, W, 3) uint8, action (B, T, A), reward, is_first, is_terminal (B, T) ->
        (total loss, detached scalar metrics with a "loss" entry, posterior states (B, T, ...))."""
        ...

    def configure_optimizers(self) -> torch.optim.Optimizer: ...


Carry = tuple[State, Tensor]  # a filter's state between env steps: (posterior (N, ...), last action (N, A))


def observe_step(model: WorldModel, obs: Tensor, is_first: Tensor, carry: Carry | None = None) -> State:
    """Filter the newest frame of N environments: obs (N, H, W, 3) uint8, is_first (N,) bool, ``carry`` the
    previous posterior and the action taken since (None at the start) -> posterior (N, ...).

    Where ``is_first``, the model starts over from its initial state and the action is zeroed (the
    convention of worldmodels/__init__.py: the first step of an episode has no action that led to it)."""
    batch = obs.shape[0]
    device = obs.device
    if carry is None:
        state, action = None, torch.zeros(batch, model.action_dim, device=device)
    else:
        state, action = carry
    action = action.to(device).float() * (~is_first.bool())[:, None].float()
    return last_step(model.observe(obs[:, None], action[:, None], is_first.bool()[:, None], state))


def last_step(states: State) -> State:
    """states (B, T, ...) -> state (B, ...) at the last time step."""
    return {k: v[:, -1] for k, v in states.items()}


def flatten_time(states: State) -> State:
    """states (B, T, ...) -> (B*T, ...): e.g. to imagine from every posterior state of a batch."""
    return {k: rearrange(v, "b t ... -> (b t) ...") for k, v in states.items()}


def stack_time(steps: list[State]) -> State:
    """[state (B, ...)] * T -> states (B, T, ...)."""
    return {k: torch.stack([s[k] for s in steps], dim=1) for k in steps[0]}


def detach(state: State) -> State:
    return {k: v.detach() for k, v in state.items()}


@torch.no_grad()
def open_loop(model: WorldModel, state: State, actions: Tensor) -> State:
    """Roll the model forward in its dream. state (B, ...), actions (B, H, A) -> states (B, H, ...)."""
    steps = []
    for t in range(actions.shape[1]):
        state = model.imagine(state, actions[:, t])
        steps.append(state)
    return stack_time(steps)
