"""The toolkit's pixel convention: uint8 (..., H, W, 3) on disk and in batches, float (..., 3, H, W) in
[-0.5, 0.5] inside models."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor


def to_float(images: Tensor, bits: int = 8, noise: bool = False) -> Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-0.5, 0.5].

    ``bits < 8`` quantizes as PlaNet's code does (planet ``tools/preprocess.py``, 5 bits by default in its
    ``scripts/configs.py``): floor to 2**bits levels, divide by 2**bits, add uniform noise in [0, 1 / 2**bits)
    (``noise``, the dequantization noise of training) or half a level (the level's middle, deterministic), and
    subtract 0.5."""
    x = rearrange(images, "... h w c -> ... c h w").float()
    if bits >= 8:
        return x / 255.0 - 0.5
    bins = 2**bits
    x = torch.floor(x / 2 ** (8 - bits))
    return (x + (torch.rand_like(x) if noise else 0.5)) / bins - 0.5


def to_uint8(x: Tensor) -> Tensor:
    """float (..., 3, H, W) in [-0.5, 0.5] -> uint8 (..., H, W, 3)."""
    return rearrange(((x + 0.5) * 255.0).round().clamp(0, 255).to(torch.uint8), "... c h w -> ... h w c")
