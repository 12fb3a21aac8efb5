"""Load any world-model checkpoint without knowing its class in advance."""

from __future__ import annotations

import importlib
from pathlib import Path

import lightning as L
import torch

from worldmodels.errors import CheckpointError

MODEL_CLASSES = ("worldmodels.rssm.RSSM", "worldmodels.vae.VAE", "worldmodels.mdnrnn.MDNRNN")


def read_model_class(path: str | Path) -> str | None:
    """The dotted class name a checkpoint was saved from (``checkpoint["model_class"]``, stored by each model's
    and agent's ``on_save_checkpoint``), or None. Raises CheckpointError for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no such checkpoint file; give a .ckpt written by `worldmodels fit` or `agent`"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:  # torch raises many types for a damaged file
        raise CheckpointError(f"{path}: cannot read checkpoint ({e}); is it a complete .ckpt file?") from e
    return checkpoint.get("model_class") if isinstance(checkpoint, dict) else None


def import_class(name: str) -> type:
    """``"package.module.Class"`` -> the class."""
    module, cls = name.rsplit(".", 1)
    return getattr(importlib.import_module(module), cls)


def model_class_of(path: str | Path) -> str:
    """The world-model class a checkpoint was saved from; CheckpointError for anything else."""
    name = read_model_class(path)
    if name not in MODEL_CLASSES:
        raise CheckpointError(
            f"{path}: not a worldmodels checkpoint (model class {name!r}); expected one of {list(MODEL_CLASSES)}"
        )
    return name


def load_model(
    path: str | Path, expect: tuple[str, ...] = MODEL_CLASSES, device: str = "cpu"
) -> L.LightningModule:
    """Load a checkpoint written by ``worldmodels fit``; ``expect`` restricts the accepted model classes."""
    name = model_class_of(path)
    if name not in expect:
        raise CheckpointError(
            f"{path}: holds a {name.rsplit('.', 1)[1]}, but this command needs one of "
            f"{[e.rsplit('.', 1)[1] for e in expect]}"
        )
    model = import_class(name).load_from_checkpoint(path, map_location=device)
    return model.eval()
