"""Datasets of other toolkits read as sources, lazily: HDF5 episode files (worldmodels/hdf5_episodes.py), Minari
datasets (worldmodels/minari_datasets.py) and LeRobot dataset folders (worldmodels/lerobot_datasets.py). The
layouts and versions each reader understands are in docs/datasets.md.

Every reader answers what an episode store does (worldmodels/store.py, worldmodels/data.py): ``len``,
``lengths()``, ``read(index, start, length)``, ``episode(index)``, ``action_dim``, ``discrete``, ``refresh()``,
plus ``size`` (the side of the square frames it serves), ``item_names()`` (a stable name per episode) and
``describe()`` (what `worldmodels info` prints). A window follows the toolkit's step convention
(worldmodels/__init__.py: ``action[t]`` led to frame ``t``, zeros at an episode's first frame); each reader
turns its source's convention into this one and says how in its docstring.

Frames: an image stream (``camera``: a LeRobot camera, an HDF5 image dataset, a Minari observation key; default
the first one, which ``describe()`` names) becomes ``(size, size, 3)`` uint8. ``size`` defaults to the stream's
own side when its frames are square, else ``DEFAULT_SIZE``; frames of another shape are center-cropped to a
square and resized with ``worldmodels.videos.square`` (antialiased bicubic), as video folders are.

Memory stays bounded: opening reads metadata only (shapes, episode lengths); ``read`` decodes the frames of one
episode, keeps whole decoded episodes in a least-recently-used cache of at most ``cache_bytes`` (the frames at
``size``), and streams the window alone from an episode larger than that. Labels (actions, rewards, flags) of
the ``LABEL_CACHE`` most recently read episodes are kept. Nothing loads the whole dataset.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from worldmodels.errors import FormatError
from worldmodels.store import one_hot

DEFAULT_SIZE = 64  # frames that are not square are cropped and resized to this side unless a size is given
LABEL_CACHE = 1024  # episodes whose labels (actions, rewards, flags) stay in memory
HDF5_SUFFIXES = (".h5", ".hdf5", ".he5")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
Labels = dict[str, np.ndarray]


def is_hdf5_file(path: Path) -> bool:
    """An HDF5 file by its suffix or its first 8 bytes."""
    if not path.is_file():
        return False
    if path.suffix.lower() in HDF5_SUFFIXES:
        return True
    with open(path, "rb") as f:
        return f.read(8) == HDF5_SIGNATURE


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def detect_format(path: str | Path) -> str | None:
    """ "hdf5" (an HDF5 file, or a folder holding HDF5 files and no episode-store files), "lerobot" (a folder with
    meta/info.json), "minari" (a Minari dataset folder, or its data/ folder), or None."""
    path = Path(path)
    if path.is_file():
        return "hdf5" if is_hdf5_file(path) else None
    if not path.is_dir():
        return None
    if (path / "meta" / "info.json").is_file():
        return "lerobot"
    for meta in (path / "data" / "metadata.json", path / "metadata.json"):
        data = _json(meta) if meta.is_file() else None
        if data is not None and "data_format" in data and ("minari_version" in data or "dataset_id" in data):
            return "minari"
    names = [p for p in path.iterdir() if not p.name.startswith(".")]
    if any(p.suffix == ".npz" or p.name == "metadata.json" for p in names):
        return None  # an episode store
    suffixes = {p.suffix.lower() for p in names if p.is_file()}
    if suffixes & set(HDF5_SUFFIXES) and not suffixes & {".mp4", ".webm", ".avi", ".mov", ".gif"}:
        return "hdf5"
    return None


def open_format(
    path: str | Path, size: int | None = None, camera: str | None = None, cache_bytes: int = 2 << 30
) -> FormatSource | None:
    """The reader for the dataset at ``path``, or None when it is none of the formats (``detect_format``)."""
    kind = detect_format(path)
    if kind == "hdf5":
        from worldmodels.hdf5_episodes import HDF5Episodes

        return HDF5Episodes(path, size=size, camera=camera, cache_bytes=cache_bytes)
    if kind == "minari":
        from worldmodels.minari_datasets import MinariEpisodes

        return MinariEpisodes(path, size=size, camera=camera, cache_bytes=cache_bytes)
    if kind == "lerobot":
        from worldmodels.lerobot_datasets import LeRobotEpisodes

        return LeRobotEpisodes(path, size=size, camera=camera, cache_bytes=cache_bytes)
    return None


def brief(error: BaseException, limit: int = 300) -> str:
    """A library's error message on one line, cut to ``limit`` characters (the CLI prints errors in one line)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def needs(module: str, path: Path, extra: str | None = None) -> Any:
    """Import a dependency of one format, or fail in one line saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        how = f"pip install -e '.[{extra}]'" if extra else "pip install -e ."
        raise FormatError(
            f"{path}: reading it needs the {module!r} package ({brief(e)}); install it with `{how}` (or "
            f"`pip install {module.split('.')[0]}`)"
        ) from e


# --- frames -------------------------------------------------------------------------------------------


def image_layout(shape: tuple[int, ...]) -> str | None:
    """ "hwc" for (T, H, W, C) and "chw" for (T, C, H, W) image arrays (C: 1 or 3 channels), else None."""
    if len(shape) != 4:
        return None
    if shape[-1] in (1, 3):
        return "hwc"
    if shape[1] in (1, 3):
        return "chw"
    return None


def frame_shape(shape: tuple[int, ...], layout: str) -> tuple[int, int]:
    """(H, W) of an image array of ``shape`` in ``layout``."""
    return (shape[1], shape[2]) if layout == "hwc" else (shape[2], shape[3])


def to_rgb_frames(frames: np.ndarray, layout: str = "hwc") -> np.ndarray:
    """(L, H, W, C) or (L, C, H, W) uint8 with C in {1, 3} -> (L, H, W, 3) uint8 (gray repeated)."""
    if layout == "chw":
        frames = frames.transpose(0, 2, 3, 1)
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    return np.ascontiguousarray(frames)


def fit_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """(L, H, W, 3) uint8 -> (L, size, size, 3): as they are when already that size, else center-cropped to a
    square and resized (``worldmodels.videos.square``)."""
    if frames.shape[1:3] == (size, size):
        return frames
    from PIL import Image

    from worldmodels.videos import square

    out = np.empty((len(frames), size, size, 3), np.uint8)
    for i, frame in enumerate(frames):
        out[i] = square(Image.fromarray(frame), size)
    return out


# --- labels -------------------------------------------------------------------------------------------


def shifted(taken: np.ndarray | None, length: int, fill: float | int = 0) -> np.ndarray | None:
    """Values recorded *after* frame t (an action taken at t, the reward and done that followed it) moved to the
    frame they led to: out[t] = taken[t - 1] for t = 1..length-1, out[0] = ``fill``. ``taken`` has at least
    ``length - 1`` rows; rows past that lead to frames the source does not hold and are dropped."""
    if taken is None:
        return None
    out = np.full((length, *taken.shape[1:]), fill, dtype=taken.dtype)
    out[1:] = taken[: length - 1]
    return out


def check_labels(labels: Labels, length: int, where: str) -> Labels:
    """Shapes, dtypes and finiteness of an episode's labels in the toolkit's convention; raises FormatError."""
    action, reward, terminal = labels["action"], labels["reward"], labels["is_terminal"]
    for key, value in (("action", action), ("reward", reward), ("is_terminal", terminal)):
        if len(value) != length:
            raise FormatError(f"{where}: {key} has {len(value)} steps where the frames have {length}")
    if action.dtype.kind == "f" and not np.isfinite(action).all():
        raise FormatError(f"{where}: action holds NaN or inf inside the episode")
    if not np.isfinite(reward).all():
        raise FormatError(f"{where}: reward holds NaN or inf inside the episode")
    return labels


class FormatSource(ABC):
    """The part every reader shares: windows, the frame and label caches, one-hot actions, ``describe()``.

    A subclass sets, in its ``__init__`` before calling ``_setup(size, cache_bytes, camera)``: ``path``, ``layout`` (what was
    recognised, e.g. "robomimic"), ``version``, ``cameras`` and ``camera``, ``native`` (H, W) of the camera's
    frames, ``_lengths`` and ``_names`` (one per episode), ``action_dim`` / ``discrete``, ``rewards`` (the source
    stores them), and implements ``_load_frames(index, start, stop)`` -> (L, size, size, 3) uint8 and
    ``_load_labels(index)`` -> action (T, A) float32 or (T,) int64 (-1: no action), reward (T,) float32,
    is_terminal (T,) bool, in the toolkit's convention."""

    format = "format"
    path: Path
    layout: str
    version: str | None = None
    cameras: list[str]
    camera: str
    native: tuple[int, int]
    action_dim: int = 0
    discrete: bool = False
    rewards: bool = False
    _lengths: list[int]
    _names: list[str]

    def _setup(self, size: int | None, cache_bytes: int, camera: str | None = None) -> None:
        """Checks and caches, once a subclass has set what the class docstring lists; ``camera``: the one asked
        for (None: the reader picked its default, which ``describe()`` says)."""
        self.camera_asked = camera
        height, width = self.native
        self.size = int(size or (height if height == width else DEFAULT_SIZE))
        if self.size < 1:
            raise FormatError(f"{self.path}: size must be a positive number of pixels, got {size}")
        self.cache_bytes = cache_bytes
        self._frames_cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._labels_cache: OrderedDict[int, Labels] = OrderedDict()
        if not self._lengths:
            raise FormatError(f"{self.path}: the dataset holds no episodes")
        short = [n for n, length in zip(self._names, self._lengths) if length < 1]
        if short:
            raise FormatError(f"{self.path}: episode {short[0]} has no frames")

    # -- the source protocol -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._lengths)

    def lengths(self) -> list[int]:
        """Frames of each episode, by index."""
        return list(self._lengths)

    def item_names(self) -> list[str]:
        """A stable name per episode (worldmodels/data.py splits held-out episodes by them)."""
        return list(self._names)

    def refresh(self) -> int:
        """Datasets of these formats are read as they were when opened: nothing new to pick up."""
        return 0

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, 3)

    @abstractmethod
    def _load_frames(self, index: int, start: int, stop: int) -> np.ndarray:
        """Frames start..stop-1 of episode ``index`` at ``size``: (L, size, size, 3) uint8."""

    @abstractmethod
    def _load_labels(self, index: int) -> Labels:
        """action / reward / is_terminal of the whole episode ``index`` in the toolkit's convention."""

    def labels(self, index: int) -> Labels:
        """Labels of episode ``index`` (toolkit convention, discrete actions as ints), kept for the most recently
        read ``LABEL_CACHE`` episodes."""
        if index in self._labels_cache:
            self._labels_cache.move_to_end(index)
            return self._labels_cache[index]
        labels = check_labels(self._load_labels(index), self._lengths[index], self.where(index))
        self._labels_cache[index] = labels
        while len(self._labels_cache) > LABEL_CACHE:
            self._labels_cache.popitem(last=False)
        return labels

    def where(self, index: int) -> str:
        """The file and episode that a message about episode ``index`` names."""
        return f"{self.path} (episode {self._names[index]})"

    def frames(self, index: int, start: int, stop: int) -> np.ndarray:
        """Frames start..stop-1 of episode ``index``, (L, size, size, 3) uint8, through the cache of whole
        decoded episodes (module docstring)."""
        if index in self._frames_cache:
            self._frames_cache.move_to_end(index)
            return self._frames_cache[index][start:stop].copy()
        total = self._lengths[index]
        whole = total * self.size * self.size * 3 <= self.cache_bytes
        first, last = (0, total) if whole else (start, stop)
        frames = self._load_frames(index, first, last)
        if frames.shape != (last - first, self.size, self.size, 3) or frames.dtype != np.uint8:
            raise FormatError(
                f"{self.where(index)}: frames {first}..{last} of camera {self.camera!r} came out "
                f"{frames.dtype} {frames.shape}, expected {last - first} frames; the file may be truncated or "
                "its metadata may disagree with its contents"
            )
        if not whole:
            return frames
        self._frames_cache[index] = frames
        while sum(v.nbytes for v in self._frames_cache.values()) > self.cache_bytes:
            self._frames_cache.popitem(last=False)
        return frames[start:stop].copy()

    def read(self, index: int, start: int, length: int) -> dict[str, np.ndarray]:
        """Window of episode ``index`` (L = length): image (L, size, size, 3) uint8, action (L, A) float32
        (one-hot if discrete, zeros at the first frame), reward (L,) float32, is_first / is_last / is_terminal
        (L,) bool."""
        total, stop = self._lengths[index], start + length
        if start < 0 or length < 1 or stop > total:
            raise ValueError(f"window [{start}, {stop}) is outside the {total} frames of {self.where(index)}")
        labels = self.labels(index)
        action = labels["action"][start:stop]
        action = one_hot(action, self.action_dim) if self.discrete else action.astype(np.float32, copy=True)
        steps = np.arange(start, stop)
        return dict(
            image=self.frames(index, start, stop),
            action=action,
            reward=labels["reward"][start:stop].astype(np.float32, copy=True),
            is_first=steps == 0,
            is_last=steps == total - 1,
            is_terminal=labels["is_terminal"][start:stop].copy(),
        )

    def episode(self, index: int) -> dict[str, np.ndarray]:
        """Episode ``index`` whole, as an episode store holds it (worldmodels/store.py: discrete actions as ints,
        -1 at the first frame)."""
        total = self._lengths[index]
        labels = self.labels(index)
        steps = np.arange(total)
        return dict(
            image=self.frames(index, 0, total),
            action=labels["action"].astype(np.int64 if self.discrete else np.float32),
            reward=labels["reward"].astype(np.float32),
            is_first=steps == 0,
            is_last=steps == total - 1,
            is_terminal=labels["is_terminal"].astype(bool),
        )

    # -- what `worldmodels info` and `worldmodels import` say about it -----------------------------------

    def describe(self) -> dict[str, Any]:
        """What `worldmodels info` prints (kind, layout, camera, shapes, action space, rewards)."""
        height, width = self.native
        others = [c for c in self.cameras if c != self.camera]
        how = "asked for" if self.camera_asked else "the default"
        if others:
            how += f"; others: {', '.join(others)}, pick one with --camera"
        return dict(
            kind=f"{self.format} dataset",
            layout=self.layout + (f" {self.version}" if self.version else ""),
            camera=f"{self.camera} ({how})",
            source_frames=f"{height}x{width}",
            image_shape=list(self.image_shape),
            action_space={"discrete": self.discrete, "dim": self.action_dim}
            if self.action_dim
            else "none in the source (zero-width actions)",
            rewards="stored" if self.rewards else "none in the source: zeros",
        )

    def provenance(self) -> dict[str, Any]:
        """How `worldmodels import` names this source in the store's provenance."""
        return dict(
            source=str(Path(self.path).resolve()),
            format=self.format,
            layout=self.layout,
            format_version=self.version,
            camera=self.camera,
            size=self.size,
        )
