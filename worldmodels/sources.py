"""Data sources without Lightning or torch: an episode store or a video folder at a path, for the commands that
only read (``worldmodels info``) and start in a second. worldmodels/data.py samples training windows from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from worldmodels.errors import StoreError
from worldmodels.store import EpisodeStore, is_episode_store


class Source(Protocol):
    action_dim: int
    discrete: bool

    def lengths(self) -> list[int]: ...

    def read(self, index: int, start: int, length: int) -> dict[str, np.ndarray]: ...

    def refresh(self) -> Any: ...


def open_source(
    path: str | Path, size: int | None = None, on_corrupt: str = "warn", replay_budget_mb: int = 2048
) -> Source:
    """An episode store or a video folder at ``path``; ``size`` resizes videos (stores keep their size).
    ``replay_budget_mb`` bounds the memory of decoded episodes (a store's) or decoded videos (a folder's) kept
    between reads; the rest is re-read from disk."""
    from worldmodels.videos import VideoFolder, is_video_folder

    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such file or directory; give an episode store or a folder of videos")
    if is_video_folder(path):
        on_error = "skip" if on_corrupt == "warn" else "raise"
        return VideoFolder(path, size=size or 64, on_error=on_error, cache_bytes=replay_budget_mb << 20)
    if is_episode_store(path):
        store = EpisodeStore(path, on_corrupt=on_corrupt, cache_bytes=replay_budget_mb << 20)
        if len(store) == 0:  # finished episodes: `worldmodels info` and the data module's checks need one
            raise StoreError(
                f"{path}: the episode store holds no episodes; run `worldmodels collect --out {path}`"
            )
        if size is not None and store.image_shape[0] != size:
            raise StoreError(
                f"{path}: episodes are {store.image_shape[0]}px but size {size} was asked for; "
                f"drop the size option or re-collect with --size {size}"
            )
        return store
    raise StoreError(
        f"{path}: neither an episode store (*.npz + metadata.json) nor a folder of videos "
        "(mp4/webm/avi/mov/gif or png/jpg frame folders)"
    )


def image_size_of(source: Source) -> int:
    return int(source.image_shape[0]) if isinstance(source, EpisodeStore) else int(source.size)
