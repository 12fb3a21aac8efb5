"""Load any world-model checkpoint without knowing its class in advance, and hand world models to agent heads.

A *world-model spec* says which world model an agent head uses, in the same shape as a ``fit`` recipe:

    {"class_path": "worldmodels.rssm.RSSM", "init_args": {"preset": "dreamerv3-S", ...}}   a fresh model
    {"ckpt": "runs/rssm_video/checkpoints/last.ckpt"}                                    a trained one

``ckpt`` may be a checkpoint written by ``worldmodels fit`` (RSSM, MDN-RNN) or by an agent run (whose world
model is taken out of it). ``load_world_model`` turns either into a model; ``world_model_spec`` is what an
agent saves, so its checkpoint rebuilds the model alone (the weights travel in the agent's state_dict).
"""

from __future__ import annotations

import importlib
import inspect
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.core.mixins import hparams_mixin

from worldmodels.errors import CheckpointError, ConfigError
from worldmodels.interface import WorldModel

MODEL_CLASSES = ("worldmodels.rssm.RSSM", "worldmodels.vae.VAE", "worldmodels.mdnrnn.MDNRNN")
WORLD_MODEL_CLASSES = (
    "worldmodels.rssm.RSSM",
    "worldmodels.mdnrnn.MDNRNN",
)  # those that dream (interface.py)
SPEC_KEYS = ("ckpt", "class_path", "init_args")
DATA_KEYS = ("action_dim", "discrete", "image_size")  # what a fresh model takes from the data


def _read(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no such checkpoint file; give a .ckpt written by `worldmodels fit` or `agent`"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:  # torch raises many types for a damaged file
        raise CheckpointError(f"{path}: cannot read checkpoint ({e}); is it a complete .ckpt file?") from e
    return checkpoint if isinstance(checkpoint, dict) else {}


def read_model_class(path: str | Path) -> str | None:
    """The dotted class name a checkpoint was saved from (``checkpoint["model_class"]``, stored by each model's
    and agent's ``on_save_checkpoint``), or None. Raises CheckpointError for a missing or unreadable file."""
    return _read(path).get("model_class")


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


def model_from_checkpoint_dict(checkpoint: dict[str, Any], device: str = "cpu") -> L.LightningModule:
    """Rebuild a world model from a checkpoint held in memory (e.g. embedded in a controller checkpoint)."""
    name = checkpoint.get("model_class")
    if name not in WORLD_MODEL_CLASSES:
        raise CheckpointError(
            f"embedded world model of class {name!r}; expected one of {list(WORLD_MODEL_CLASSES)}"
        )
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    return import_class(name).load_from_checkpoint(buffer, map_location=device).eval()


# --- world models for agent heads ---------------------------------------------------------------------------


def world_model_spec(model: Any) -> dict[str, Any]:
    """``{"class_path", "init_args"}`` that rebuilds ``model``'s architecture: its saved hyperparameters, which
    every world model keeps sufficient to build it alone (values in force, no file paths)."""
    cls = type(model)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(model.hparams)}


def _agent_world_model(checkpoint: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """An agent checkpoint's world model as (spec, state_dict), or None if ``checkpoint`` holds no agent."""
    embedded = checkpoint.get("world_model")  # the controller embeds a whole fit checkpoint
    if isinstance(embedded, dict) and embedded.get("model_class") in WORLD_MODEL_CLASSES:
        spec = {"class_path": embedded["model_class"], "init_args": embedded.get("hyper_parameters", {})}
        return spec, None
    spec = (checkpoint.get("hyper_parameters") or {}).get("world_model")
    if isinstance(spec, dict) and spec.get("class_path") in WORLD_MODEL_CLASSES:
        prefix = "world_model."
        weights = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
        return spec, weights
    return None


def checkpoint_spec(path: str | Path) -> dict[str, Any]:
    """The world model in a checkpoint of ``fit`` or of an agent, as ``{"class_path", "init_args"}``, without
    building it (e.g. to read its ``image_size``). CheckpointError for any other file."""
    checkpoint = _read(path)
    name = checkpoint.get("model_class")
    if name in WORLD_MODEL_CLASSES:
        return {"class_path": name, "init_args": checkpoint.get("hyper_parameters", {})}
    found = _agent_world_model(checkpoint)
    if found is None:
        raise _no_world_model(path, name)
    return found[0]


def _no_world_model(path: str | Path, name: str | None) -> CheckpointError:
    return CheckpointError(
        f"{path}: holds no world model (class {name!r}); give a checkpoint of `worldmodels fit` with an RSSM "
        "or MDN-RNN, or of `worldmodels agent`"
    )


def _from_checkpoint(path: str | Path, device: str) -> L.LightningModule:
    checkpoint = _read(path)
    if checkpoint.get("model_class") in WORLD_MODEL_CLASSES:
        return load_model(path, expect=WORLD_MODEL_CLASSES, device=device)
    if isinstance(checkpoint.get("world_model"), dict):
        return model_from_checkpoint_dict(checkpoint["world_model"], device)
    found = _agent_world_model(checkpoint)
    if found is None:
        raise _no_world_model(path, checkpoint.get("model_class"))
    spec, weights = found
    model = _build(spec, {})
    model.load_state_dict(weights)
    return model.to(device).eval()


def _build(spec: dict[str, Any], data: dict[str, Any]) -> L.LightningModule:
    """A fresh model from ``{"class_path", "init_args"}``; ``data`` fills the DATA_KEYS it does not set."""
    name, init_args = spec.get("class_path"), dict(spec.get("init_args") or {})
    if not isinstance(name, str) or "." not in name:
        raise ConfigError(
            f"world_model: class_path {name!r} is not a dotted class name; use e.g. worldmodels.rssm.RSSM"
        )
    try:
        cls = import_class(name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"world_model: cannot import {name} ({e}); use e.g. worldmodels.rssm.RSSM") from e
    accepted = inspect.signature(cls).parameters
    unknown = sorted(set(init_args) - set(accepted))
    if unknown:
        raise ConfigError(f"world_model: {cls.__name__} has no argument {unknown}; it takes {list(accepted)}")
    for key, value in data.items():
        if key in accepted and value is not None:
            init_args.setdefault(key, value)
    try:
        model = cls(**init_args)
    except TypeError as e:
        raise ConfigError(f"world_model: {name}({', '.join(init_args)}): {e}") from e
    if not isinstance(model, WorldModel):
        raise ConfigError(
            f"world_model: {name} is not a world model (worldmodels/interface.py); use one of "
            f"{list(WORLD_MODEL_CLASSES)}"
        )
    return model


@contextmanager
def own_hyperparameters() -> Iterator[None]:
    """Models built inside keep their own hyperparameters. While LightningCLI instantiates a module it hands that
    module's config to every ``save_hyperparameters`` call (the ContextVar ``_given_hyperparameters`` of
    lightning.pytorch.core.mixins.hparams_mixin), so a world model built inside an agent would record the agent's."""
    given = getattr(hparams_mixin, "_given_hyperparameters", None)
    token = given.set(None) if given is not None else None
    try:
        yield
    finally:
        if token is not None:
            given.reset(token)


def load_world_model(
    spec: Any,
    action_dim: int | None = None,
    discrete: bool | None = None,
    image_size: int | None = None,
    device: str = "cpu",
) -> Any:
    """A world model from ``spec``: a WorldModel object (returned as it is), ``{"ckpt": PATH}`` or
    ``{"class_path", "init_args"}`` (module docstring). A fresh model takes ``action_dim``, ``discrete`` and
    ``image_size`` (the data's) where its init_args leave them out. Building happens here, outside any agent's
    ``__init__``: Lightning's ``save_hyperparameters`` would otherwise record the agent's arguments as the
    model's."""
    if isinstance(spec, WorldModel):
        return spec
    if not isinstance(spec, dict) or not spec or set(spec) - set(SPEC_KEYS):
        raise ConfigError(
            f"world_model: {spec!r} is not a world-model spec; give {{ckpt: PATH}} or "
            "{class_path: worldmodels.rssm.RSSM, init_args: {...}} (e.g. --world_model.ckpt PATH)"
        )
    with own_hyperparameters():
        if spec.get("ckpt"):
            if spec.get("class_path") or spec.get("init_args"):
                raise ConfigError("world_model: give either ckpt or class_path/init_args, not both")
            return _from_checkpoint(spec["ckpt"], device)
        data = {"action_dim": action_dim, "discrete": discrete, "image_size": image_size}
        return _build(spec, data).to(device)
