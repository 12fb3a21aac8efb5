"""The World Models VAE encoder and decoder (Ha & Schmidhuber 2018, Appendix A.1) as plain torch modules.

Images are float ``(N, 3, H, W)`` in ``[-0.5, 0.5]``. At 64x64 the layers are the paper's: four convs k4
stride 2 without padding (64 -> 31 -> 14 -> 6 -> 2), a dense layer to 1024 units seen as a 1x1 map, and four
deconvs k5, k5, k6, k6 stride 2 (1 -> 5 -> 13 -> 30 -> 64) ending in a sigmoid. Other sizes (multiples of 16,
e.g. 16 or 32 for fast tests) use padded k4 stride-2 layers that halve / double the side exactly.
The decoder returns ``sigmoid - 0.5``: the paper's sigmoid output, shifted to the toolkit's pixel range.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

PAPER_SIZE = 64  # World Models Appendix A.1: 64x64x3 frames


def _channels(width: float) -> list[int]:
    """Conv channels 32, 64, 128, 256 (World Models Appendix A.1) times ``width``."""
    return [max(1, round(c * width)) for c in (32, 64, 128, 256)]


def _check_size(image_size: int) -> None:
    if image_size != PAPER_SIZE and (image_size < 16 or image_size % 16):
        raise ValueError(
            f"image_size={image_size}: the VAE needs 64 or a multiple of 16 (16, 32, 48, 96, ...)"
        )


class VAEEncoder(nn.Module):
    """images (N, 3, H, W) float in [-0.5, 0.5] -> mu, logvar (N, Z)."""

    def __init__(self, image_size: int = 64, z_dim: int = 32, width: float = 1.0) -> None:
        super().__init__()
        _check_size(image_size)
        paper = image_size == PAPER_SIZE
        layers, prev = [], 3
        for ch in _channels(width):
            layers += [nn.Conv2d(prev, ch, 4, stride=2, padding=0 if paper else 1), nn.ReLU()]
            prev = ch
        self.convs = nn.Sequential(*layers, nn.Flatten())
        side = 2 if paper else image_size // 16
        self.mu = nn.Linear(prev * side * side, z_dim)
        self.logvar = nn.Linear(prev * side * side, z_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.convs(x)
        return self.mu(h), self.logvar(h)


class VAEDecoder(nn.Module):
    """z (N, Z) -> images (N, 3, H, W) float in (-0.5, 0.5)."""

    def __init__(self, image_size: int = 64, z_dim: int = 32, width: float = 1.0) -> None:
        super().__init__()
        _check_size(image_size)
        c32, c64, c128, c256 = _channels(width)
        if image_size == PAPER_SIZE:
            # World Models Appendix A.1: dense 1024 (= 4 * 256) seen as 1x1, deconvs k5, k5, k6, k6 stride 2
            self.side, first, kernels, padding = 1, 4 * c256, (5, 5, 6, 6), 0
        else:
            self.side, first, kernels, padding = image_size // 16, c256, (4, 4, 4, 4), 1
        self.fc = nn.Linear(z_dim, first * self.side * self.side)
        layers, prev = [], first
        for i, (k, ch) in enumerate(zip(kernels, (c128, c64, c32, 3))):
            layers.append(nn.ConvTranspose2d(prev, ch, k, stride=2, padding=padding))
            if i < 3:
                layers.append(nn.ReLU())
            prev = ch
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        h = rearrange(self.fc(z), "n (c h w) -> n c h w", h=self.side, w=self.side)
        return torch.sigmoid(self.deconvs(h)) - 0.5
