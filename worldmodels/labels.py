"""Label a folder of videos with the actions an inverse-dynamics model infers (`worldmodels label`).

    label_folder("runs/inverse_1step/checkpoints/last.ckpt", "my_videos/")

For every video file and frame folder under the folder (worldmodels/videos.py finds them) it writes the sidecar
``<stem>.npz`` that the video loader reads: ``action`` as inferred by ``worldmodels.inverse.label_actions``
(the store convention: row t led to frame t; row 0 and the last n - 1 rows, which the model cannot infer, hold
"no action": zeros, or -1 for discrete actions), with ``inferred=True``, ``inferred_model`` (the checkpoint's
absolute path), ``inferred_n`` and ``inferred_history`` beside it, so inferred actions are never taken for
recorded ones; ``continuous=True`` (continuous actions) or ``num_actions`` (discrete ones) say the action space.

* Resumable: a video whose sidecar already holds inferred actions is skipped (``overwrite`` relabels it). Each
  sidecar is written to a hidden temporary file beside it, flushed to disk and renamed over the final name, so a
  killed run leaves either the finished sidecar or none; a leftover temporary file (``.<stem>.npz.tmp-<pid>``,
  hidden from the video loader) does not count as finished and is removed when that video is labelled.
* Recorded actions are never replaced: a sidecar with recorded actions is left as it is, even with
  ``overwrite``. A sidecar with recorded rewards and no actions keeps its rewards beside the inferred actions.
* Before anything is written, every existing sidecar's actions (but inferred ones that ``overwrite`` replaces)
  are checked against the model's action space, and so is ``action_dim`` when given: a model for another
  action space is one error, not a folder of mixed labels.
  A video shorter than n + 1 frames raises ``VideoError`` naming it; the videos labelled before it stay done.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from worldmodels.errors import CheckpointError, SidecarError, VideoError
from worldmodels.inverse import InverseDynamics, frames_needed, label_actions, load_inverse, sidecar_actions
from worldmodels.videos import decode_frames, find_items, sidecar_path

TEMP_INFIX = ".tmp-"  # temporary sidecars: .<name>.tmp-<pid>


def temp_path(sidecar: Path) -> Path:
    """The hidden temporary file a sidecar is written to before it is renamed into place."""
    return sidecar.with_name(f".{sidecar.name}{TEMP_INFIX}{os.getpid()}")


def _read(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise SidecarError(
            f"{path}: unreadable sidecar ({e}); `worldmodels label` writes sidecars whole, so this one was "
            "written by something else: remove it or rewrite it with np.savez"
        ) from e


def describe(action_dim: int, discrete: bool) -> str:
    """The words for an action space in messages: '2-d continuous actions' / '4 discrete actions'."""
    return f"{action_dim} discrete actions" if discrete else f"{action_dim}-d continuous actions"


def check_action_space(model: InverseDynamics, model_path: str | Path, sidecar: Path, arrays: dict) -> None:
    """CheckpointError if the recorded or inferred ``action`` of a sidecar is of another action space than the
    model's (its kind, its width, or for discrete actions ``num_actions`` / the largest action)."""
    action = arrays.get("action")
    if action is None:
        return
    discrete = action.ndim == 1 and action.dtype.kind in "iu"
    if discrete:
        n = int(arrays["num_actions"]) if "num_actions" in arrays else int(action.max(initial=-1)) + 1
        same = model.discrete and (
            n == model.action_dim if "num_actions" in arrays else n <= model.action_dim
        )
        theirs = describe(n, True) if "num_actions" in arrays else f"discrete actions up to {n - 1}"
    else:
        width = action.shape[1] if action.ndim == 2 else 0
        same, theirs = not model.discrete and width == model.action_dim, describe(width, False)
    if not same:
        raise CheckpointError(
            f"{model_path}: the model infers {describe(model.action_dim, model.discrete)} but {sidecar} holds "
            f"{theirs}; label with an inverse model trained on this action space"
        )


def write_sidecar(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` as the sidecar ``path`` atomically: a hidden temporary file, flushed, then renamed."""
    temp = temp_path(path)
    try:
        with open(temp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


def _remove_leftovers(sidecar: Path) -> None:
    """Delete the temporary files a killed run left for this sidecar."""
    for leftover in sidecar.parent.glob(f".{sidecar.name}{TEMP_INFIX}*"):
        leftover.unlink(missing_ok=True)


def label_folder(
    model_path: str | Path,
    root: str | Path,
    overwrite: bool = False,
    action_dim: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Write inferred-action sidecars for every video under ``root`` (module docstring) -> counts: labelled,
    skipped (labelled before), recorded (sidecars with recorded actions, left alone), frames (labelled), and
    the model's n."""
    root = Path(root)
    if not root.is_dir():
        raise VideoError(f"{root}: not a directory; give the folder that holds the videos to label")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_inverse(model_path, device)
    model_path = Path(model_path).resolve()
    if action_dim is not None and action_dim != model.action_dim:
        raise CheckpointError(
            f"{model_path}: the model infers {describe(model.action_dim, model.discrete)} but --action_dim "
            f"{action_dim} was given; label with an inverse model trained on that action space"
        )
    items = list(find_items(root))
    if not items:
        raise VideoError(f"{root}: no video files and no frame folders in it; give the folder of your videos")
    existing = {item: _read(sidecar_path(item)) for item in items if sidecar_path(item).is_file()}
    for item, arrays in existing.items():
        if not (overwrite and bool(arrays.get("inferred", False))):  # those are about to be replaced
            check_action_space(model, model_path, sidecar_path(item), arrays)
    counts = {"labelled": 0, "skipped": 0, "recorded": 0, "frames": 0, "n": model.n}
    # a progress bar on a terminal; none into a log or a pipe, where the summary says it all
    for item in tqdm(items, desc="label", unit="video", disable=None if progress else True):
        arrays = existing.get(item, {})
        if "action" in arrays and not bool(arrays.get("inferred", False)):
            counts["recorded"] += 1
            continue
        if "action" in arrays and not overwrite:
            counts["skipped"] += 1
            continue
        sidecar = sidecar_path(item)
        _remove_leftovers(sidecar)
        frames = decode_frames(item, model.image_size)
        if len(frames) < frames_needed(model.n):
            raise VideoError(
                f"{item}: {len(frames)} frames, but the inverse model {model_path.name} (n={model.n}) needs at "
                f"least {frames_needed(model.n)} to infer an action; remove the video or label with a smaller n "
                f"(the {counts['labelled']} videos labelled so far are kept)"
            )
        actions = label_actions(model, frames, name=str(item))
        out = {
            "action": sidecar_actions(actions, model.discrete),
            "inferred": np.bool_(True),
            "inferred_model": np.str_(str(model_path)),
            "inferred_n": np.int64(model.n),
            "inferred_history": np.int64(model.history),
        }
        out |= (
            {"num_actions": np.int64(model.action_dim)} if model.discrete else {"continuous": np.bool_(True)}
        )
        if "reward" in arrays:  # recorded rewards stay beside the inferred actions
            out["reward"] = arrays["reward"]
        write_sidecar(sidecar, out)
        counts["labelled"] += 1
        counts["frames"] += len(frames)
    return counts
