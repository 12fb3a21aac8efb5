"""V of World Models (Ha & Schmidhuber 2018): a convolutional VAE that compresses each frame to z.

Loss as in the official code (hardmaru/WorldModelsExperiments, carracing/vae/vae.py): squared error summed
over pixels, plus the KL to N(0, I) summed over z and floored at ``kl_tolerance * z_dim`` ("KL tolerance":
below that floor the KL gets no gradient, so the code is not squeezed towards the prior).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from einops import pack, unpack
from torch import Tensor
from torch.distributions import Normal, kl_divergence

from encoders.pixels import to_float, to_uint8
from encoders.vae import VAEDecoder, VAEEncoder
from worldmodels.errors import CheckpointError, ConfigError
from worldmodels.guards import check_finite


class VAE(L.LightningModule):
    """World Models V: images uint8 (..., H, W, 3) <-> z (..., Z)."""

    def __init__(
        self,
        image_size: int = 64,  # World Models: 64x64x3 frames
        z_dim: int = 32,  # World Models: z is 32-d for CarRacing (64 for Doom)
        width: float = 1.0,  # channel multiplier on 32/64/128/256
        lr: float = 1e-4,  # official vae.py learning_rate
        kl_tolerance: float = 0.5,  # official vae.py kl_tolerance
        grad_clip: float | None = None,  # official vae.py does not clip; a value clips each gradient element
        on_nonfinite: str = "stop",  # a NaN/inf loss: "stop" with an error naming the term, "skip" the batch
    ) -> None:
        super().__init__()
        if image_size != 64 and (image_size < 16 or image_size % 16):
            raise ConfigError(
                f"VAE image_size={image_size}: use 64 or a multiple of 16 (16, 32, 48, 96, ...)"
            )
        self.save_hyperparameters()
        # Plain attributes, not self.hparams: a VAE built inside another module's __init__ under LightningCLI
        # (as MDNRNN does) receives that module's hparams from Lightning.
        self.image_size, self.z_dim, self.width = image_size, z_dim, width
        self.lr, self.kl_tolerance, self.grad_clip = lr, kl_tolerance, grad_clip
        self.on_nonfinite = on_nonfinite
        self.encoder = VAEEncoder(image_size, z_dim, width)
        self.decoder = VAEDecoder(image_size, z_dim, width)

    def _check(self, images: Tensor) -> None:
        size = self.image_size
        if images.dtype != torch.uint8 or tuple(images.shape[-3:]) != (size, size, 3):
            raise CheckpointError(
                f"VAE(image_size={size}) got images {images.dtype} {tuple(images.shape)}; it needs uint8 "
                f"(..., {size}, {size}, 3): resize the data (--data.size {size}) or train a VAE of that size"
            )

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images uint8 (..., H, W, 3) -> mu, logvar (..., Z)."""
        self._check(images)
        flat, shape = pack([images], "* h w c")
        mu, logvar = self.encoder(to_float(flat))
        return unpack(mu, shape, "* z")[0], unpack(logvar, shape, "* z")[0]

    def decode(self, z: Tensor) -> Tensor:
        """z (..., Z) -> images uint8 (..., H, W, 3)."""
        flat, shape = pack([z], "* z")
        return unpack(to_uint8(self.decoder(flat)), shape, "* h w c")[0]

    def losses(self, images: Tensor) -> dict[str, Tensor]:
        """images uint8 (..., H, W, 3) -> scalar terms: loss, recon, kl (before the tolerance floor)."""
        self._check(images)
        x = to_float(pack([images], "* h w c")[0])  # (N, 3, H, W)
        mu, logvar = self.encoder(x)
        posterior = Normal(mu, (0.5 * logvar).exp())
        recon = (self.decoder(posterior.rsample()) - x).square().sum((1, 2, 3)).mean()
        kl = kl_divergence(posterior, Normal(0.0, 1.0)).sum(-1)  # (N,)
        floored = kl.clamp(min=self.kl_tolerance * self.z_dim).mean()
        return {"loss": recon + floored, "recon": recon, "kl": kl.mean()}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        terms = self.losses(batch["image"])  # (B, T, H, W, 3): time is flattened, frames are independent
        if not check_finite(terms, self.global_step, self.on_nonfinite):
            return None  # skip this batch
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, prog_bar=True)
        return terms["loss"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)  # official vae.py: Adam

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any
    ) -> None:
        if self.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="value")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["model_class"] = "worldmodels.vae.VAE"
