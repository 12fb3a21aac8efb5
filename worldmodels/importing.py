"""`worldmodels import SRC --out STORE`: copy any readable source (an HDF5 file, a Minari dataset, a LeRobot
folder, a video folder, another store: worldmodels/sources.py) into an episode store, one episode at a time.

Episode ``i`` of the source becomes the store file ``<i, 6 digits>-<T>.npz`` (worldmodels/store.py: key
``000012``), in the toolkit's step convention, its frames at the source's ``size`` and from its ``camera``. The
store's ``metadata.json`` records ``imported_from`` (the source's path, format, layout, version, camera and
size) and a ``provenance`` entry per run (worldmodels/store.py ``record_provenance``; `worldmodels info STORE`
prints them).

Resumable: each episode is written atomically, so an import stopped at any point leaves whole episodes only;
running the same command again skips the episodes already in the store and adds the rest. An ``--out`` that
holds anything else (episodes of another source, a collected store, files that are not a store) is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from worldmodels.errors import StoreError
from worldmodels.sources import Source, image_size_of, open_source
from worldmodels.store import METADATA, EpisodeStore, episode_key, is_episode_store


def describe_source(source: Source, path: str | Path) -> dict[str, Any]:
    """What identifies a source in ``imported_from`` and the provenance: path, format, layout, version, camera,
    size (a store or a video folder: path, format and size)."""
    if hasattr(source, "provenance"):
        described = source.provenance()
    else:
        kind = "episode store" if isinstance(source, EpisodeStore) else "video folder"
        described = dict(source=str(Path(path).resolve()), format=kind, size=image_size_of(source))
    return {k: v for k, v in described.items() if v is not None}


def raw_episode(source: Source, index: int) -> dict[str, np.ndarray]:
    """Episode ``index`` of ``source`` whole, as a store holds it: discrete actions as ints (-1: none)."""
    if hasattr(source, "episode"):
        episode = source.episode(index)
        return {k: episode[k] for k in ("image", "action", "reward", "is_first", "is_last", "is_terminal")}
    window = source.read(index, 0, source.lengths()[index])
    if source.discrete:  # one-hot rows back to indices; an all-zero row (no action) to -1
        action = window["action"]
        window["action"] = np.where(action.any(-1), action.argmax(-1), -1).astype(np.int64)
    return window


def _store_metadata(source: Source, described: dict[str, Any]) -> dict[str, Any]:
    size = image_size_of(source)
    metadata: dict[str, Any] = dict(
        size=size,
        image_shape=[size, size, 3],
        discrete=bool(source.discrete),
        rewards=bool(getattr(source, "rewards", True)),
        imported_from=described,
    )
    metadata["action_n" if source.discrete else "action_dim"] = int(source.action_dim)
    return metadata


def _check_out(out: Path, described: dict[str, Any]) -> None:
    """Refuse an --out that holds anything but episodes imported from this same source."""
    if out.exists() and not out.is_dir():
        raise StoreError(f"{out}: exists and is not a directory; give a new folder as --out")
    if not out.exists() or not any(p for p in out.iterdir() if not p.name.startswith(".")):
        return
    if not is_episode_store(out):
        raise StoreError(f"{out}: not empty and not an episode store; give a new folder as --out")
    before = EpisodeStore(out).metadata.get("imported_from")
    if not before:
        raise StoreError(
            f"{out}: holds episodes that were not imported (e.g. collected); give a new folder as --out"
        )
    if before != described:
        differ = ", ".join(
            f"{k} {before.get(k)} there, {described.get(k)} now"
            for k in sorted(set(before) | set(described))
            if before.get(k) != described.get(k)
        )
        raise StoreError(
            f"{out}: holds episodes imported from {before.get('source')} ({differ}); give a new folder as --out "
            f"(a stopped import resumes only with the same source, camera and size: {out / METADATA})"
        )


def import_source(
    src: str | Path,
    out: str | Path,
    size: int | None = None,
    camera: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Copy the episodes of source ``src`` into the episode store ``out`` (module docstring). Returns counts:
    ``episodes`` (in the source), ``added``, ``skipped`` (already there from an earlier run), ``steps`` added."""
    source = open_source(src, size=size, on_corrupt="raise", camera=camera)
    described = describe_source(source, src)
    out = Path(out)
    _check_out(out, described)
    store = EpisodeStore(out, create=True, metadata=_store_metadata(source, described))
    done = {episode_key(p.name) for p in store.paths}
    todo = [i for i in range(len(source.lengths())) if f"{i:06d}" not in done]
    if todo:  # a rerun that finds every episode there writes nothing, so it adds no provenance entry
        store.record_provenance(dict(described, adding=len(todo), skipped=len(source.lengths()) - len(todo)))
    steps = 0
    name = Path(str(src)).name or str(src)
    bar = tqdm(
        total=len(source.lengths()),
        initial=len(source.lengths()) - len(todo),
        desc=f"import {name}",
        unit="ep",
        disable=not progress,
    )
    for i in todo:
        episode = raw_episode(source, i)
        store.add(episode, key=f"{i:06d}")
        steps += len(episode["image"])
        bar.update()
    bar.close()
    return dict(
        episodes=len(source.lengths()),
        added=len(todo),
        skipped=len(source.lengths()) - len(todo),
        steps=steps,
    )
