"""Data sources without Lightning or torch: an episode store, a video folder, or a dataset of another toolkit (an
HDF5 file, a Minari dataset, a LeRobot folder: worldmodels/formats.py) at a path, for the commands that only read
(``worldmodels info``) and start in a second. worldmodels/data.py samples training windows from them."""

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
    path: str | Path,
    size: int | None = None,
    on_corrupt: str = "warn",
    replay_budget_mb: int = 2048,
    camera: str | None = None,
) -> Source:
    """An episode store, a video folder, an HDF5 file (or folder of them), a Minari dataset (also
    ``minari:<dataset id>``) or a LeRobot folder at ``path`` (worldmodels/formats.py, docs/datasets.md).
    ``size`` resizes videos and the other toolkits' frames (stores keep their size); ``camera`` picks the image
    stream of an HDF5, Minari or LeRobot dataset (default: its first). ``replay_budget_mb`` bounds the memory of
    decoded episodes (a store's, a dataset's) or decoded videos (a folder's) kept between reads; the rest is
    re-read from disk."""
    from worldmodels.formats import open_format
    from worldmodels.videos import VideoFolder, is_video_folder

    if str(path).startswith("minari:"):
        from worldmodels.minari_datasets import MinariEpisodes

        return MinariEpisodes(path, size=size, camera=camera, cache_bytes=replay_budget_mb << 20)
    path = Path(path)
    if not path.exists():
        raise StoreError(
            f"{path}: no such file or directory; give an episode store, a folder of videos, an HDF5 file, a Minari "
            "dataset or a LeRobot dataset folder"
        )
    dataset = open_format(path, size=size, camera=camera, cache_bytes=replay_budget_mb << 20)
    if dataset is not None:
        return dataset
    if camera is not None:
        raise StoreError(
            f"{path}: camera {camera!r} picks an image stream of an HDF5, Minari or LeRobot dataset; an episode "
            "store or a video folder has one: drop the camera option"
        )
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
        "(mp4/webm/avi/mov/gif or png/jpg frame folders), an HDF5 file, a Minari dataset (data/metadata.json) or "
        "a LeRobot dataset (meta/info.json)"
    )


def image_size_of(source: Source) -> int:
    return int(source.image_shape[0]) if isinstance(source, EpisodeStore) else int(source.size)
