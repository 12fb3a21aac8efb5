"""Dense networks in the two styles of the papers, shared by the world models' heads and the agents' heads."""

from __future__ import annotations

from torch import nn


def dense(style: str, in_dim: int, out_dim: int) -> list[nn.Module]:
    """A hidden layer: Linear + ELU (PlaNet, DreamerV1) or Linear + LayerNorm + SiLU (DreamerV3)."""
    if style == "dreamerv1":
        return [nn.Linear(in_dim, out_dim), nn.ELU()]
    return [nn.Linear(in_dim, out_dim, bias=False), nn.LayerNorm(out_dim), nn.SiLU()]


def mlp(style: str, in_dim: int, hidden: int, layers: int, out_dim: int) -> nn.Sequential:
    """(..., in_dim) -> (..., out_dim) through ``layers`` hidden layers of ``hidden`` units (``dense``)."""
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += dense(style, in_dim if i == 0 else hidden, hidden)
    return nn.Sequential(*mods, nn.Linear(hidden if layers else in_dim, out_dim))
