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

Attributes: ``feature_dim``, ``action_dim``, ``discrete`` (actions are one-hot of size ``action_dim``),
``image_size``.
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
