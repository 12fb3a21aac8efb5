"""The toolkit's pixel convention: uint8 (..., H, W, 3) on disk and in batches, float (..., 3, H, W) in
[-0.5, 0.5] inside models."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor


def to_float(images: Tensor) -> Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-0.5, 0.5]."""
    return rearrange(images, "... h w c -> ... c h w").float() / 255.0 - 0.5


def to_uint8(x: Tensor) -> Tensor:
    """float (..., 3, H, W) in [-0.5, 0.5] -> uint8 (..., H, W, 3)."""
    return rearrange(((x + 0.5) * 255.0).round().clamp(0, 255).to(torch.uint8), "... c h w -> ... h w c")
