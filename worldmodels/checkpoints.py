"""Load any world-model checkpoint without knowing its class in advance."""

from __future__ import annotations

import importlib
from pathlib import Path

import lightning as L
import torch

from worldmodels.errors import CheckpointError

MODEL_CLASSES = ("worldmodels.rssm.RSSM", "worldmodels.vae.VAE", "worldmodels.mdnrnn.MDNRNN")


def model_class_of(path: str | Path) -> str:
    """The dotted class name a checkpoint was saved from (stored by each model's ``on_save_checkpoint``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; give the .ckpt written by `worldmodels fit`")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:  # torch raises many types for a damaged file
        raise CheckpointError(f"{path}: cannot read checkpoint ({e}); is it a complete .ckpt file?") from e
    name = checkpoint.get("model_class") if isinstance(checkpoint, dict) else None
    if name not in MODEL_CLASSES:
        raise CheckpointError(
            f"{path}: not a worldmodels checkpoint (model class {name!r}); expected one of "
            f"{list(MODEL_CLASSES)}"
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
    module, cls = name.rsplit(".", 1)
    model = getattr(importlib.import_module(module), cls).load_from_checkpoint(path, map_location=device)
    return model.eval()
