"""Guards that keep a long run from losing or corrupting work: atomic checkpoints and non-finite losses."""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from lightning.pytorch import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import Tensor

from worldmodels.errors import NonFiniteLossError

NONFINITE_MODES = ("stop", "skip", "off")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(f)`` on a hidden temporary file in ``path``'s directory, flush it to disk, then rename it
    over ``path``: a kill at any moment leaves either the previous file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written with ``atomic_write``."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        atomic_write(path, lambda f: torch.save(checkpoint, f))


def check_finite(terms: dict[str, Tensor], step: int, mode: str = "stop") -> bool:
    """True if every loss term is finite. Otherwise ``mode="stop"`` raises NonFiniteLossError naming the terms
    and the step; ``"skip"`` returns False so the caller skips the batch; ``"off"`` never checks (no host sync).

    The check costs one host-device sync per step on a GPU, the price of stopping at the step a NaN appears.
    """
    if mode == "off":
        return True
    if mode not in NONFINITE_MODES:
        raise ValueError(f"on_nonfinite must be one of {NONFINITE_MODES}, got {mode!r}")
    names = list(terms)
    finite = torch.stack([torch.isfinite(terms[n].detach()).all() for n in names])
    if bool(finite.all()):
        return True
    bad = [n for n, ok in zip(names, finite.tolist()) if not ok]
    if mode == "skip":
        return False
    values = ", ".join(f"{n}={float(terms[n].detach().float().mean())}" for n in bad)
    raise NonFiniteLossError(
        f"non-finite loss at step {step}: {values}; check the data for NaN/inf (worldmodels info), lower the "
        "learning rate, or pass on_nonfinite=skip to skip such batches"
    )


class RNGState(Callback):
    """Saves the Python, NumPy and torch (CPU and CUDA) random states in every checkpoint and restores them on
    resume, so a resumed run draws the noise it would have drawn."""

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        # as a tensor, not an array, so that checkpoints load with torch.load(weights_only=True)
        numpy_state = (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)
        state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        random.setstate(state_dict["python"])
        kind, keys, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
