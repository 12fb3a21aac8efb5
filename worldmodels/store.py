"""Episode store: a directory with one ``.npz`` file per finished episode plus ``metadata.json``.

Each episode file holds (``T`` steps, convention in ``worldmodels/__init__.py``):

    image        uint8   (T, H, W, 3)
    action       float32 (T, A)   continuous, zeros at the first step
                 int64   (T,)     discrete, -1 at the first step (no action led to it)
    reward       float32 (T,)
    is_first, is_last, is_terminal   bool (T,)

Writes are atomic: the episode goes to a hidden temporary file in the same directory, is flushed to disk and
then renamed, so a crash never leaves a half-written episode under a visible name. Loading validates every
file; a corrupt one is reported by name and skipped with a warning (``on_corrupt="warn"``) or raises
(``on_corrupt="raise"``), and is never used. ``refresh()`` picks up episodes written since the last scan, so a
sampler sees what a running collector adds.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from worldmodels.errors import CorruptEpisodeError, StoreError

METADATA = "metadata.json"
KEYS = ("image", "action", "reward", "is_first", "is_last", "is_terminal")
FLAGS = ("is_first", "is_last", "is_terminal")
Episode = dict[str, np.ndarray]


def is_episode_store(path: str | Path) -> bool:
    """True if ``path`` is a directory holding ``metadata.json`` or episode files at its top level."""
    path = Path(path)
    return path.is_dir() and ((path / METADATA).exists() or any(path.glob("*.npz")))


def validate_episode(episode: Episode, name: str = "<episode>", image_shape: tuple | None = None) -> int:
    """Check keys, dtypes, shapes and finiteness; return the length T. Raises CorruptEpisodeError."""

    def fail(why: str) -> CorruptEpisodeError:
        return CorruptEpisodeError(f"{name}: {why}")

    missing = [k for k in KEYS if k not in episode]
    if missing:
        raise fail(f"missing arrays {missing}; an episode needs {list(KEYS)}")
    image = episode["image"]
    if image.dtype != np.uint8 or image.ndim != 4 or image.shape[-1] != 3:
        raise fail(f"image must be uint8 (T, H, W, 3), got {image.dtype} {image.shape}")
    length = len(image)
    if length < 1:
        raise fail("episode has no steps")
    if image_shape is not None and tuple(image.shape[1:]) != tuple(image_shape):
        raise fail(f"image shape {image.shape[1:]} differs from the store's {tuple(image_shape)}")
    action = episode["action"]
    if action.ndim == 1 and np.issubdtype(action.dtype, np.integer):
        pass
    elif action.ndim == 2 and np.issubdtype(action.dtype, np.floating):
        if not np.isfinite(action).all():
            raise fail("action contains NaN or inf")
    else:
        raise fail(f"action must be float (T, A) or int (T,), got {action.dtype} {action.shape}")
    if not np.issubdtype(episode["reward"].dtype, np.floating) or episode["reward"].shape != (length,):
        raise fail(f"reward must be float (T,), got {episode['reward'].dtype} {episode['reward'].shape}")
    if not np.isfinite(episode["reward"]).all():
        raise fail("reward contains NaN or inf")
    for key in ("action", *FLAGS):
        if len(episode[key]) != length:
            raise fail(f"{key} has {len(episode[key])} steps, image has {length}")
    for key in FLAGS:
        if episode[key].dtype != bool:
            raise fail(f"{key} must be bool, got {episode[key].dtype}")
    if not episode["is_first"][0]:
        raise fail("is_first[0] must be True")
    return length


def episode_name(length: int) -> str:
    """A unique, time-ordered file name: ``<UTC time>-<random>-<length>.npz``."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return f"{stamp}-{uuid.uuid4().hex[:8]}-{length}.npz"


def write_episode(directory: str | Path, episode: Episode) -> Path:
    """Validate and atomically write one episode into ``directory``; returns the final path."""
    directory = Path(directory)
    length = validate_episode(episode)
    path = directory / episode_name(length)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".npz.tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **{k: episode[k] for k in KEYS})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # e.g. ENOSPC: the disk filled up while writing
        Path(tmp).unlink(missing_ok=True)
        raise StoreError(
            f"{directory}: cannot write an episode ({e.strerror or e}); free disk space or pick another --out. "
            "The episodes already stored are intact."
        ) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_episode(path: str | Path) -> Episode:
    """Read one episode file; raises CorruptEpisodeError (naming the file) if it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise CorruptEpisodeError(f"{path}: cannot read episode ({e}); delete or re-collect it") from e


class EpisodeStore:
    """A directory of episodes. Read side: ``lengths()`` and ``read(i, start, length)``; write side: ``add``.

    ``on_corrupt``: "warn" skips unreadable or invalid files with a warning naming them; "raise" fails.
    ``cache_bytes`` bounds the memory held by decoded episodes (least recently used are dropped).
    """

    def __init__(
        self,
        root: str | Path,
        create: bool = False,
        metadata: dict[str, Any] | None = None,
        on_corrupt: str = "warn",
        cache_bytes: int = 2 << 30,
    ) -> None:
        if on_corrupt not in ("warn", "raise"):
            raise ValueError(f"on_corrupt must be 'warn' or 'raise', got {on_corrupt!r}")
        self.root = Path(root)
        self.on_corrupt = on_corrupt
        self.cache_bytes = cache_bytes
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
            if metadata is not None:
                self._merge_metadata(metadata)
        elif not self.root.is_dir():
            raise StoreError(f"{self.root}: no such episode store; create one with `worldmodels collect`")
        self.metadata: dict[str, Any] = self._read_metadata()
        self.paths: list[Path] = []
        self._lengths: list[int] = []
        self._known: set[str] = set()
        self._bad: set[str] = set()
        self._cache: OrderedDict[int, Episode] = OrderedDict()
        self._cached_bytes = 0
        self.refresh()

    # -- metadata ---------------------------------------------------------------------------------------

    def _read_metadata(self) -> dict[str, Any]:
        path = self.root / METADATA
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise StoreError(f"{path}: not valid JSON ({e}); fix or delete the file") from e

    def _merge_metadata(self, metadata: dict[str, Any]) -> None:
        path = self.root / METADATA
        old = json.loads(path.read_text()) if path.exists() else {}
        for key in ("env", "size", "action_space"):
            if key in old and key in metadata and old[key] != metadata[key]:
                raise StoreError(
                    f"{path}: store holds {key}={old[key]!r}, new episodes have {metadata[key]!r}; "
                    "use another --out directory"
                )
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".json.tmp", dir=self.root)
        with os.fdopen(fd, "w") as f:
            json.dump({**old, **metadata}, f, indent=2)
        os.replace(tmp, path)

    # -- scanning ---------------------------------------------------------------------------------------

    def refresh(self) -> int:
        """Scan for episodes written since the last scan; validate them. Returns how many were added."""
        new = sorted(
            p for p in self.root.glob("*.npz") if p.name not in self._known and p.name not in self._bad
        )
        added = 0
        for path in new:
            try:
                episode = load_episode(path)
                length = validate_episode(episode, str(path), self.image_shape)
            except CorruptEpisodeError as e:
                if self.on_corrupt == "raise":
                    raise
                warnings.warn(f"skipping corrupt episode {e}", stacklevel=2)
                self._bad.add(path.name)
                continue
            if not self.metadata.get("image_shape"):
                self.metadata["image_shape"] = list(episode["image"].shape[1:])
                self.metadata.setdefault("discrete", bool(episode["action"].ndim == 1))
                if episode["action"].ndim == 2:
                    self.metadata.setdefault("action_dim", int(episode["action"].shape[1]))
            if episode["action"].ndim == 1 and "action_space" not in self.metadata:
                n = int(episode["action"].max()) + 1
                self.metadata["action_n"] = max(n, self.metadata.get("action_n", 0))
            self._known.add(path.name)
            self.paths.append(path)
            self._lengths.append(length)
            self._put(len(self.paths) - 1, episode)
            added += 1
        return added

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        shape = self.metadata.get("image_shape")
        return tuple(shape) if shape else None

    @property
    def discrete(self) -> bool:
        space = self.metadata.get("action_space") or {}
        return space.get("type") == "Discrete" or bool(self.metadata.get("discrete", False))

    @property
    def action_dim(self) -> int:
        """Width of the (one-hot for discrete) action vector in batches."""
        space = self.metadata.get("action_space") or {}
        if space.get("type") == "Discrete":
            return int(space["n"])
        if space.get("type") == "Box":
            return int(np.prod(space["shape"]))
        if self.metadata.get("discrete"):
            return int(self.metadata.get("action_n", 0))
        return int(self.metadata.get("action_dim", 0))

    def __len__(self) -> int:
        return len(self.paths)

    def lengths(self) -> list[int]:
        return list(self._lengths)

    # -- reading ----------------------------------------------------------------------------------------

    def _put(self, index: int, episode: Episode) -> None:
        size = sum(v.nbytes for v in episode.values())
        self._cache[index] = episode
        self._cached_bytes += size
        while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= sum(v.nbytes for v in old.values())

    def episode(self, index: int) -> Episode:
        """The raw arrays of episode ``index`` as stored (discrete actions as ints)."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        episode = load_episode(self.paths[index])
        validate_episode(episode, str(self.paths[index]), self.image_shape)
        self._put(index, episode)
        return episode

    def read(self, index: int, start: int, length: int) -> Episode:
        """Window of episode ``index``: image (L, H, W, 3) uint8, action (L, A) float32 (one-hot if
        discrete, zeros where no action led to the step), reward (L,), is_first/is_last/is_terminal (L,)."""
        episode = self.episode(index)
        window = {k: episode[k][start : start + length] for k in KEYS}
        if window["action"].ndim == 1:
            window["action"] = one_hot(window["action"], self.action_dim)
        window["action"] = window["action"].astype(np.float32, copy=False)
        window["reward"] = window["reward"].astype(np.float32, copy=False)
        return window

    # -- writing ----------------------------------------------------------------------------------------

    def add(self, episode: Episode) -> Path:
        """Atomically write a finished episode; it becomes visible to readers on their next refresh."""
        validate_episode(episode, "<new episode>", self.image_shape)
        return write_episode(self.root, episode)


def one_hot(actions: np.ndarray, n: int) -> np.ndarray:
    """int (T,) -> float32 (T, n); negative entries (no action) become all-zero rows."""
    out = np.zeros((len(actions), n), np.float32)
    valid = actions >= 0
    out[np.nonzero(valid)[0], actions[valid]] = 1.0
    return out
