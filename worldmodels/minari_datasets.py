"""Minari datasets (Farama's offline RL format) read through the ``minari`` package.

``MinariEpisodes(path)`` takes a Minari dataset folder (``<root>/<dataset id>``, holding ``data/metadata.json``)
or its ``data/`` folder, in any storage Minari reads (``hdf5``, the default, or ``arrow`` / ``parquet``) and
any dataset version the installed Minari supports (``minari.supported_dataset_versions``: 0.4.0 to 0.5.4 with
minari 0.5.4). A dataset named ``minari:<dataset id>`` is looked up among the local datasets
(``MINARI_DATASETS_PATH``, default ``~/.minari/datasets``); nothing is downloaded.

Frames: the observations must be pixels: an image ``Box`` (uint8, (H, W, 3), (H, W, 1) or (H, W)), or a
``Dict`` observation with such entries, e.g. the frames gymnasium's ``AddRenderObservation`` wrapper stores
beside the state (``{"state": ..., "pixels": ...}``); ``camera`` names the entry (default ``pixels`` if present,
else the first image entry). Minari JPEG-encodes image observations of 32x32 and larger by default
(``jpeg_encoding``): those frames come back decoded, as lossy as stored. Actions: ``Box`` (flattened to
(A,)) or ``Discrete`` (one-hot in windows); other action spaces raise FormatError.

Convention: a Minari episode of T steps holds T + 1 observations (the reset one and one per step) and T actions,
rewards, terminations and truncations; it becomes T + 1 frames: frame 0 the reset observation with no action
and reward 0, frame t the observation after step t - 1 with that step's action and reward, and
``is_terminal`` at frame t from ``terminations[t - 1]`` (a truncation ends the episode without it).

Memory: Minari decodes whole episodes (``storage.get_episodes``), so an episode is the unit kept in the frame
cache (worldmodels/formats.py); for the ``hdf5`` storage the labels are read from ``main_data.hdf5`` alone
(``episode_<id>/actions``, ``rewards``, ``terminations``), without decoding frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from worldmodels.errors import FormatError
from worldmodels.formats import FormatSource, Labels, brief, fit_frames, needs, shifted, to_rgb_frames

PREFIX = "minari:"  # minari:<dataset id> names a local Minari dataset


def resolve(path: str | Path) -> Path:
    """``minari:<id>`` -> that local dataset's folder; any other path as it is."""
    text = str(path)
    if not text.startswith(PREFIX):
        return Path(path)
    from minari.storage.datasets_root_dir import get_dataset_path

    folder = Path(get_dataset_path(text[len(PREFIX) :]))
    if not (folder / "data" / "metadata.json").is_file():
        raise FormatError(
            f"{text}: no local Minari dataset at {folder} (set MINARI_DATASETS_PATH, or give the dataset's folder; "
            "downloading is up to you: `minari download ID`)"
        )
    return folder


def _image_space(space: Any) -> bool:
    from gymnasium import spaces

    return (
        isinstance(space, spaces.Box)
        and space.dtype == np.uint8
        and (len(space.shape) == 2 or (len(space.shape) == 3 and space.shape[-1] in (1, 3)))
    )


class MinariEpisodes(FormatSource):
    """The episodes of a Minari dataset (module docstring)."""

    format = "minari"

    def __init__(
        self, path: str | Path, size: int | None = None, camera: str | None = None, cache_bytes: int = 2 << 30
    ) -> None:
        self.path = resolve(path)
        needs("minari", self.path, extra="minari")
        from gymnasium import spaces
        from minari import MinariDataset

        self.data_path = self.path / "data" if (self.path / "data" / "metadata.json").is_file() else self.path
        meta = self.data_path / "metadata.json"
        try:
            self.dataset = MinariDataset(self.data_path)
        except (ValueError, KeyError, AssertionError, TypeError) as e:
            raise FormatError(f"{meta}: Minari cannot open the dataset ({brief(e)})") from e
        self.storage = self.dataset.storage
        raw = self.storage.read_raw_metadata(self.data_path)
        self.data_format = raw.get("data_format")
        self.layout, self.version = f"minari {self.data_format} storage", raw.get("minari_version")
        self.dataset_id = raw.get("dataset_id")
        observation = self.dataset.observation_space
        if isinstance(observation, spaces.Dict):
            self.cameras = [k for k, s in observation.spaces.items() if _image_space(s)]
        else:
            self.cameras = ["observation"] if _image_space(observation) else []
        if not self.cameras:
            raise FormatError(
                f"{meta}: observation_space: {observation} holds no image (a uint8 Box of shape (H, W, 3)); "
                "world models need pixel observations, e.g. recorded through gymnasium's AddRenderObservation"
            )
        if camera is not None and camera not in self.cameras:
            raise FormatError(
                f"{meta}: observation_space has no image entry {camera!r}; its image entries are {self.cameras}"
            )
        self.camera = camera or ("pixels" if "pixels" in self.cameras else self.cameras[0])
        image = observation[self.camera] if isinstance(observation, spaces.Dict) else observation
        self.native = (int(image.shape[0]), int(image.shape[1]))
        action = self.dataset.action_space
        if isinstance(action, spaces.Discrete):
            self.action_dim, self.discrete, self.start = int(action.n), True, int(action.start)
        elif isinstance(action, spaces.Box):
            self.action_dim, self.discrete = int(np.prod(action.shape)), False
        else:
            raise FormatError(
                f"{meta}: action_space: {action} is neither a Box nor a Discrete space; those are the ones read"
            )
        self.rewards = True
        self.ids = [int(i) for i in self.dataset.episode_indices]
        try:
            steps = [int(m["total_steps"]) for m in self.storage.get_episode_metadata(self.ids)]
        except (KeyError, OSError, ValueError) as e:
            raise FormatError(
                f"{self.data_path}: episode metadata total_steps unreadable ({brief(e)})"
            ) from e
        self._lengths = [n + 1 for n in steps]  # T steps: T + 1 observations
        self._names = [f"episode_{i}" for i in self.ids]
        self._pending: dict[int, np.ndarray] = {}  # frames decoded alongside labels (non-hdf5 storages)
        self._setup(size, cache_bytes, camera)

    def where(self, index: int) -> str:
        return f"{self.data_path} (episode_{self.ids[index]})"

    def _decoded(self, index: int) -> dict[str, Any]:
        try:
            return list(self.storage.get_episodes([self.ids[index]]))[0]  # list: the file closes
        except (KeyError, OSError, ValueError) as e:
            raise FormatError(f"{self.where(index)}: Minari cannot read the episode ({brief(e)})") from e

    def _camera_frames(self, episode: dict[str, Any], index: int) -> np.ndarray:
        observations = episode["observations"]
        frames = observations[self.camera] if isinstance(observations, dict) else observations
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or len(frames) != self._lengths[index]:
            raise FormatError(
                f"{self.where(index)}: observations/{self.camera} are {frames.dtype} {frames.shape}; expected "
                f"{self._lengths[index]} uint8 frames"
            )
        return fit_frames(to_rgb_frames(frames), self.size)

    def _load_frames(self, index: int, start: int, stop: int) -> np.ndarray:
        frames = self._pending.pop(index, None)
        if frames is None:
            frames = self._camera_frames(self._decoded(index), index)
        return frames[start:stop]

    def _load_labels(self, index: int) -> Labels:
        length = self._lengths[index]
        if self.data_format == "hdf5":
            import h5py

            with h5py.File(self.data_path / "main_data.hdf5", "r") as f:
                group = f"episode_{self.ids[index]}"
                if group not in f:
                    raise FormatError(f"{self.data_path / 'main_data.hdf5'}: {group}: missing")
                raw = {k: f[group][k][:] for k in ("actions", "rewards", "terminations") if k in f[group]}
        else:
            episode = self._decoded(index)
            raw = {k: np.asarray(episode[k]) for k in ("actions", "rewards", "terminations")}
            if index not in self._frames_cache:
                self._pending = {index: self._camera_frames(episode, index)}  # read() asks for them next
        missing = [k for k in ("actions", "rewards", "terminations") if k not in raw]
        if missing:
            raise FormatError(f"{self.where(index)}: {missing[0]}: missing")
        for key, value in raw.items():
            if len(value) != length - 1:
                raise FormatError(
                    f"{self.where(index)}: {key}: {len(value)} rows where total_steps is {length - 1}"
                )
        if self.discrete:
            action = shifted(raw["actions"].astype(np.int64).reshape(length - 1) - self.start, length, -1)
        else:
            action = shifted(raw["actions"].astype(np.float32).reshape(length - 1, self.action_dim), length)
        return dict(
            action=action,
            reward=shifted(raw["rewards"].astype(np.float32).reshape(length - 1), length),
            is_terminal=shifted(raw["terminations"].astype(bool).reshape(length - 1), length, False),
        )

    def describe(self) -> dict[str, Any]:
        return dict(super().describe(), dataset_id=self.dataset_id)

    def provenance(self) -> dict[str, Any]:
        return dict(super().provenance(), dataset_id=self.dataset_id)
