"""Distributions of the RSSM and the Dreamer heads: symlog, two-hot bins, unimix categoricals, latent KLs.

Standalone functions on tensors; the Dreamer critic reuses ``TwoHotSymlog`` and ``symlog``.
Latent distributions are ``torch.distributions`` objects built from a state's statistics:
``{"logits": (..., S, K)}`` for categorical latents, ``{"mean": (..., S), "std": (..., S)}`` for Gaussian ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import (
    Distribution,
    Independent,
    Normal,
    OneHotCategoricalStraightThrough,
    kl_divergence,
)

BINS = 255  # DreamerV3 Sec. 2 (reward and critic): 255 bins
LOW, HIGH = -20.0, 20.0  # DreamerV3 code: bins linspace(-20, 20) in symlog space
UNIMIX = 0.01  # DreamerV3 Sec. 2: categoricals mix 1% uniform


def symlog(x: Tensor) -> Tensor:
    """sign(x) * log(1 + |x|) (DreamerV3 Sec. 2), elementwise."""
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: Tensor) -> Tensor:
    """sign(x) * (exp(|x|) - 1), the inverse of ``symlog``, elementwise."""
    return torch.sign(x) * torch.expm1(x.abs())


def twohot(x: Tensor, bins: Tensor) -> Tensor:
    """x (...) -> weights (..., K) on the two bins around x (clipped to the range) whose mean is x."""
    x = x.clamp(bins[0], bins[-1])
    above = torch.searchsorted(bins, x.contiguous(), right=True).clamp(1, len(bins) - 1)  # first bin > x
    below = above - 1
    weight_above = (x - bins[below]) / (bins[above] - bins[below])  # (...)
    onehot = lambda i: F.one_hot(i, len(bins)).to(x.dtype)
    return onehot(below) * (1 - weight_above)[..., None] + onehot(above) * weight_above[..., None]


class TwoHotSymlog:
    """A categorical over ``K`` bins evenly spaced in symlog space (DreamerV3 Sec. 2, reward and critic).

    logits (..., K) -> ``mean()`` (...) = symexp(E[bin]); ``log_prob(target)`` (...) is the cross-entropy
    of the logits with the two-hot encoding of symlog(target).
    """

    def __init__(self, logits: Tensor, low: float = LOW, high: float = HIGH) -> None:
        self.logits = logits
        self.bins = torch.linspace(low, high, logits.shape[-1], device=logits.device, dtype=logits.dtype)

    def mean(self) -> Tensor:
        return symexp((self.logits.softmax(-1) * self.bins).sum(-1))

    def log_prob(self, target: Tensor) -> Tensor:
        """target (...) -> (...)."""
        weights = twohot(symlog(target.to(self.logits.dtype)), self.bins)
        return (weights * self.logits.log_softmax(-1)).sum(-1)


def unimix(logits: Tensor, mix: float = UNIMIX) -> Tensor:
    """logits (..., K) -> logits of (1 - mix) * softmax(logits) + mix / K (DreamerV3 Sec. 2: 1% unimix)."""
    if mix <= 0:
        return logits
    probs = (1 - mix) * logits.softmax(-1) + mix / logits.shape[-1]
    return probs.log()


def categorical(logits: Tensor) -> Distribution:
    """One-hot categoricals with straight-through ``rsample``; logits (..., S, K), event shape (S, K)."""
    return Independent(OneHotCategoricalStraightThrough(logits=logits, validate_args=False), 1)


def sample_onehot(logits: Tensor, mix: float = UNIMIX) -> Tensor:
    """logits (..., S, K) -> one-hot samples (..., S, K) of the unimix distribution; gradients pass straight
    through to the probabilities (DreamerV2 Sec. 2)."""
    return categorical(unimix(logits, mix)).rsample()


def gaussian(mean: Tensor, std: Tensor) -> Distribution:
    """Diagonal Gaussian; mean, std (..., S), event shape (S,)."""
    return Independent(Normal(mean, std, validate_args=False), 1)


def latent_dist(stats: dict[str, Tensor]) -> Distribution:
    """The latent distribution of a state: from ``logits`` (categorical) or ``mean`` and ``std`` (Gaussian).

    Categorical logits are used as stored (the RSSM stores them after unimix)."""
    if "logits" in stats:
        return categorical(stats["logits"])
    return gaussian(stats["mean"], stats["std"])


def kl(post: dict[str, Tensor], prior: dict[str, Tensor]) -> Tensor:
    """KL[post || prior] summed over the latent (...), for PlaNet / DreamerV1's plain KL loss."""
    return kl_divergence(latent_dist(post), latent_dist(prior))


def kl_dyn_rep(post: dict[str, Tensor], prior: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """DreamerV3 Sec. 2 KL balancing terms, each (...), both equal in value to KL[post || prior]:
    dyn = KL[sg(post) || prior] trains the prior, rep = KL[post || sg(prior)] trains the posterior."""
    sg = lambda stats: {k: v.detach() for k, v in stats.items()}
    dyn = kl_divergence(latent_dist(sg(post)), latent_dist(prior))
    rep = kl_divergence(latent_dist(post), latent_dist(sg(prior)))
    return dyn, rep
