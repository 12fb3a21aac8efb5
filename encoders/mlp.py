"""Dense networks in the styles of the papers, shared by the world models' heads and the agents' heads, and
the papers' weight initializations.

Styles: ``"planet"`` (Linear + ReLU: PlaNet ``scripts/configs.py``, ``activation='relu'`` for the RSSM and the
heads), ``"dreamerv1"`` (Linear + ELU: DreamerV1 code ``dense_act='elu'``) and ``"dreamerv3"`` (Linear without
bias + LayerNorm + SiLU: DreamerV3 code ``act: silu, norm: layer``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from encoders.precision import Network

STYLES = ("planet", "dreamerv1", "dreamerv3")
LN_EPS = 1e-3  # DreamerV3 code (nets.Norm): jax.nn.standardize(x, epsilon=1e-3); torch's default is 1e-5
TRUNC_STD = 0.87962566103423978  # DreamerV3 code (nets.Initializer): std of N(0, 1) truncated to [-2, 2]


def dense(style: str, in_dim: int, out_dim: int) -> list[nn.Module]:
    """A hidden layer (..., in_dim) -> (..., out_dim) of ``style``."""
    if style == "planet":
        return [nn.Linear(in_dim, out_dim), nn.ReLU()]
    if style == "dreamerv1":
        return [nn.Linear(in_dim, out_dim), nn.ELU()]
    return [nn.Linear(in_dim, out_dim, bias=False), nn.LayerNorm(out_dim, eps=LN_EPS), nn.SiLU()]


def mlp(style: str, in_dim: int, hidden: int, layers: int, out_dim: int) -> Network:
    """(..., in_dim) -> (..., out_dim) through ``layers`` hidden layers of ``hidden`` units (``dense``); a
    ``Network``: in a training step's mixed precision it computes in low precision and returns float32."""
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += dense(style, in_dim if i == 0 else hidden, hidden)
    return Network(*mods, nn.Linear(hidden if layers else in_dim, out_dim))


def _fans(weight: torch.Tensor, transposed: bool) -> tuple[int, int]:
    """Fan-in and fan-out of a Linear (out, in), Conv (out, in, k, k) or ConvTranspose (in, out, k, k) weight."""
    space = math.prod(weight.shape[2:])
    outs, ins = (weight.shape[1], weight.shape[0]) if transposed else weight.shape[:2]
    return ins * space, outs * space


@torch.no_grad()
def init_weights(module: nn.Module, style: str) -> None:
    """Re-initialize every Linear / Conv / ConvTranspose weight inside ``module`` as its paper's code does, with
    zero biases (LayerNorm and GRUCell parameters keep torch's defaults).

    * ``"dreamerv3"``: truncated normal on [-2, 2] with std sqrt(1 / fan_avg), fan_avg = (fan_in + fan_out) / 2
      (DreamerV3 code, configs.yaml ``winit: normal, fan: avg``; nets.Initializer);
    * ``"planet"``, ``"dreamerv1"``: Glorot uniform on +-sqrt(3 / fan_avg), TensorFlow's default for dense and
      conv layers (``tf.layers`` / Keras ``glorot_uniform``), which both papers' code leave in place."""
    for layer in module.modules():
        if not isinstance(layer, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
            continue
        fan_in, fan_out = _fans(layer.weight, isinstance(layer, nn.ConvTranspose2d))
        scale = 1.0 / ((fan_in + fan_out) / 2)
        if style == "dreamerv3":
            nn.init.trunc_normal_(layer.weight, std=1.0, a=-2.0, b=2.0)
            layer.weight.mul_(math.sqrt(scale) / TRUNC_STD)
        else:
            limit = math.sqrt(3 * scale)
            nn.init.uniform_(layer.weight, -limit, limit)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
