"""Convolutional image encoder and decoder of PlaNet / Dreamer, in two styles.

Images are float ``(N, 3, H, W)`` in ``[-0.5, 0.5]``, square. Both styles use stride-2 layers whose channels
are ``depth * (1, 2, 4, 8, ...)``, one layer per halving of the side down to a map of 4 to 7 pixels
(64 -> 4x4 map: 4 layers; 16 -> 2 layers; 96 -> 6x6 map: 4 layers).

* ``"planet"`` / ``"dreamerv1"`` (PlaNet / DreamerV1, the same convs): ReLU, no normalization. At 64x64 the layers are the papers': four
  convs k4 stride 2 without padding (64 -> 31 -> 14 -> 6 -> 2, a 1024-d embedding at depth 32), and a decoder
  from a dense layer of ``32 * depth`` units seen as a 1x1 map through deconvs k5, k5, k6, k6 stride 2
  (1 -> 5 -> 13 -> 30 -> 64). Other sizes use the general padded scheme below with ReLU.
* ``"dreamerv3"`` (DreamerV3): convs k4 stride 2 padding 1 that halve the side exactly, each followed by
  LayerNorm over the channels of every pixel and SiLU; the decoder mirrors it from a dense layer to the
  smallest map, and its last deconv has neither norm nor activation.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from einops import rearrange
from torch import Tensor, nn

from encoders.mlp import LN_EPS, STYLES
from encoders.precision import low_precision

Style = Literal["planet", "dreamerv1", "dreamerv3"]
PAPER_SIZE = 64  # PlaNet / DreamerV1: 64x64x3 frames
MIN_RES = 4  # DreamerV3 code (minres): downsample to a 4x4 map at 64x64


def num_stages(image_size: int) -> int:
    """Stride-2 layers that take ``image_size`` down to a map of 4 to 7 pixels; ValueError if impossible."""
    stages = int(math.log2(image_size / MIN_RES)) if image_size >= 2 * MIN_RES else 0
    if stages < 1 or image_size % 2**stages:
        raise ValueError(
            f"image_size={image_size}: the conv encoder needs a side of 8 or more that halves evenly down to a "
            "4 to 7 pixel map (16, 32, 48, 64, 96, 128, ...)"
        )
    return stages


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"conv style {style!r}: use one of {STYLES}")


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of each pixel: (N, C, H, W) -> (N, C, H, W) (DreamerV3)."""

    def forward(self, x: Tensor) -> Tensor:
        x = super().forward(rearrange(x, "n c h w -> n h w c"))
        return rearrange(x, "n h w c -> n c h w")


def _norm_act(style: str, channels: int) -> list[nn.Module]:
    return [nn.ReLU()] if style != "dreamerv3" else [ChannelNorm(channels, eps=LN_EPS), nn.SiLU()]


class ConvEncoder(nn.Module):
    """images (N, C, H, W) float in [-0.5, 0.5] -> embedding (N, out_dim); C = ``in_channels``, 3 for one RGB
    frame (several frames stacked on the channels: e.g. 9 for three, as the inverse model reads them)."""

    def __init__(
        self,
        image_size: int = 64,
        depth: int = 32,
        style: Style = "dreamerv3",
        channels_last: bool = False,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        _check_style(style)
        stages = num_stages(image_size)
        paper = style != "dreamerv3" and image_size == PAPER_SIZE
        layers, prev, side = [], in_channels, image_size
        for i in range(stages):
            ch = depth * 2**i
            conv = nn.Conv2d(prev, ch, 4, stride=2, padding=0 if paper else 1, bias=style != "dreamerv3")
            layers += [conv, *_norm_act(style, ch)]
            prev, side = ch, (side - 4) // 2 + 1 if paper else side // 2
        self.convs = nn.Sequential(*layers)
        self.out_dim = prev * side * side  # 1024 for dreamerv1 at 64x64, 4096 for dreamerv3 (depth 32)
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, images: Tensor) -> Tensor:
        """images (N, C, H, W) -> (N, out_dim); in a training step's mixed precision: low, float32 out."""
        return low_precision(self._forward, images)

    def _forward(self, images: Tensor) -> Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return rearrange(self.convs(images), "n c h w -> n (c h w)")


class ConvDecoder(nn.Module):
    """features (N, F) -> image mean (N, 3, H, W), float, in about [-0.5, 0.5]."""

    def __init__(
        self,
        in_dim: int,
        image_size: int = 64,
        depth: int = 32,
        style: Style = "dreamerv3",
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        _check_style(style)
        stages = num_stages(image_size)
        if style != "dreamerv3" and image_size == PAPER_SIZE:
            # DreamerV1 / PlaNet: dense 32 * depth seen as 1x1, deconvs k5, k5, k6, k6 stride 2
            self.side, self.top, kernels, padding = 1, 32 * depth, (5, 5, 6, 6), 0
        else:
            self.side, self.top, kernels, padding = (
                image_size // 2**stages,
                depth * 2 ** (stages - 1),
                None,
                1,
            )
        self.linear = nn.Linear(in_dim, self.top * self.side**2)
        layers, prev = [], self.top
        for i in reversed(range(stages)):
            last = i == 0
            ch = 3 if last else depth * 2 ** (i - 1)
            kernel = kernels[stages - 1 - i] if kernels else 4
            deconv = nn.ConvTranspose2d(
                prev, ch, kernel, stride=2, padding=padding, bias=last or style != "dreamerv3"
            )
            layers += [deconv] if last else [deconv, *_norm_act(style, ch)]
            prev = ch
        self.deconvs = nn.Sequential(*layers)
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, features: Tensor) -> Tensor:
        """features (N, F) -> (N, 3, H, W); in a training step's mixed precision: low, float32 out."""
        return low_precision(self._forward, features)

    def _forward(self, features: Tensor) -> Tensor:
        x = rearrange(self.linear(features), "n (c h w) -> n c h w", h=self.side, w=self.side)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.deconvs(x)
