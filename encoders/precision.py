"""Mixed precision by network: low precision where the matmuls and convolutions are, float32 in between.

A Trainer or Fabric with ``precision="bf16-mixed"`` opens one ``torch.autocast`` around the whole training step.
On a CPU, autocast leaves layer norms, activations and element-wise code in whatever dtype their input has, so
under one step-wide context the code between the networks (the RSSM step's gates, unimix, the distributions,
the KL and the losses) computes in bf16 too, with extra casts back and forth. A training step that enters
``float32_between_networks()`` instead runs that code in float32, and each network (``Network``, the encoder,
decoder and GRU cell) computes under the enclosing autocast and hands float32 back: SheepRL's layout, where
Fabric autocasts inside each module call (``lightning.fabric.wrappers._FabricModule``). Outside such a step
(acting, planning, tests) nothing changes: ``low_precision`` then just calls the network.

    with float32_between_networks():      # inside a training step under a bf16 autocast
        h = low_precision(self.linear, x)  # bf16 matmul, float32 out
        z = distribution(h)                # float32
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor, nn

_AUTOCAST: ContextVar[tuple[str, torch.dtype] | None] = ContextVar("worldmodels_autocast", default=None)
DEVICE_TYPES = ("cuda", "cpu")


@contextmanager
def float32_between_networks() -> Iterator[None]:
    """Under an enclosing autocast: turn it off for the code inside, except in ``low_precision`` calls, which
    get the enclosing autocast's device and dtype back. Without an enclosing autocast: does nothing."""
    enclosing = next((d for d in DEVICE_TYPES if torch.is_autocast_enabled(d)), None)
    if enclosing is None or _AUTOCAST.get() is not None:
        yield
        return
    token = _AUTOCAST.set((enclosing, torch.get_autocast_dtype(enclosing)))
    try:
        with torch.autocast(enclosing, enabled=False):
            yield
    finally:
        _AUTOCAST.reset(token)


def low_precision(fn: Callable[..., Tensor], *args: Tensor) -> Tensor:
    """``fn(*args)`` under the autocast that ``float32_between_networks`` turned off, its result in float32;
    elsewhere just ``fn(*args)``."""
    autocast = _AUTOCAST.get()
    if autocast is None:
        return fn(*args)
    with torch.autocast(autocast[0], dtype=autocast[1]):
        return fn(*args).float()


class Network(nn.Sequential):
    """``nn.Sequential`` that runs in ``low_precision`` (same parameters and state-dict keys)."""

    def forward(self, x: Tensor) -> Tensor:
        return low_precision(super().forward, x)
