"""Episode store: a directory of finished episodes, one ``.npz`` file each, plus ``metadata.json``, and the
chunks of the episodes still being collected under ``unfinished/``.

Each episode file holds (``T`` steps, convention in ``worldmodels/__init__.py``):

    image        uint8   (T, H, W, 3)
    action       float32 (T, A)   continuous, zeros at the first step
                 int64   (T,)     discrete, -1 at the first step (no action led to it)
    reward       float32 (T,)
    is_first, is_last, is_terminal   bool (T,)
    seed         int64 ()         optional: the seed the environment was reset with (``worldmodels collect``
                                  records it, so the episode can be replayed: agents/goals.py); readers that
                                  do not need it ignore it, and stores without it load as before

Layout on disk::

    metadata.json
    <key>-<T>.npz                          a finished episode; <key> = <UTC start time>-<random>
    unfinished/<key>/<start>-<end>.npz     steps [start, end) of an episode still being collected (8-digit
                                           zero-padded numbers), same arrays, is_last and is_terminal all False

Writes are atomic: every file goes to a hidden temporary file in its own directory, is flushed to disk and
then renamed, so a crash never leaves a half-written file under a visible name. Loading validates every file;
a corrupt one is reported by name and skipped with a warning (``on_corrupt="warn"``) or raises
(``on_corrupt="raise"``), and is never used. ``refresh()`` picks up episodes and chunks written since the last
scan, so a sampler sees what a running collector adds.

An episode is written as chunks while it is collected (``write_chunk``) and, when it ends, once more as one
finished file named by the same key (``add(episode, key)``); the rename of that file is the moment the episode
finishes. The writer then renames ``unfinished/<key>`` to a hidden name and deletes it. A reader scans finished
files before chunks and ignores the chunks of any key that has a finished file, so it sees each step once: in
the chunks before the rename, in the finished file after it.

What a reader sees: ``len(store)``, ``lengths()``, ``episode(i)`` and ``read(i, ...)`` are about finished
episodes only, as before chunks existed (``worldmodels info`` reports those); ``unfinished()`` maps the key of
each episode still being collected to its written steps, and ``read_unfinished(key, start, length)`` reads a
window of them. If that episode finishes meanwhile, the window is read from its finished file, whose first steps
are the same.

After a crash (kill -9) the writer's next start calls ``close_unfinished()``: the written chunks of each episode
left unfinished become one finished episode, cut short there (``is_last`` at its last written step,
``is_terminal`` False, as an episode truncated by a time limit). So no step that was written is lost and none is
stored twice; steps the collector held in memory and had not yet written are not on disk and were never counted.
Stores from before chunks existed (finished files only) load as they are. One writer per store.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tempfile
import time
import uuid
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from worldmodels import notices
from worldmodels.errors import CorruptEpisodeError, StoreError

METADATA = "metadata.json"
UNFINISHED = "unfinished"  # the subdirectory holding the chunks of episodes still being collected
KEYS = ("image", "action", "reward", "is_first", "is_last", "is_terminal")
OPTIONAL_KEYS = ("seed",)  # per-episode scalars, written when present (module docstring)
FLAGS = ("is_first", "is_last", "is_terminal")
Episode = dict[str, np.ndarray]


def is_episode_store(path: str | Path) -> bool:
    """True if ``path`` is a directory holding ``metadata.json`` or episode files at its top level."""
    path = Path(path)
    return path.is_dir() and ((path / METADATA).exists() or any(path.glob("*.npz")))


def validate_episode(
    episode: Episode, name: str = "<episode>", image_shape: tuple | None = None, first: bool = True
) -> int:
    """Check keys, dtypes, shapes and finiteness; return the length T. Raises CorruptEpisodeError.
    ``first``: the arrays start an episode (``is_first[0]`` must be True); False for a later chunk."""

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
    if first and not episode["is_first"][0]:
        raise fail("is_first[0] must be True")
    if "seed" in episode:
        seed = np.asarray(episode["seed"])
        if seed.ndim != 0 or not np.issubdtype(seed.dtype, np.integer):
            raise fail(f"seed must be an integer scalar, got {seed.dtype} {seed.shape}")
    return length


def new_key() -> str:
    """A unique, time-ordered episode key: ``<UTC time>-<random>``."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


def episode_name(length: int, key: str | None = None) -> str:
    """The file name of a finished episode: ``<key>-<length>.npz`` (a new key if none is given)."""
    return f"{key or new_key()}-{length}.npz"


def episode_key(name: str) -> str:
    """The key in a finished episode's file name (``<key>-<length>.npz``); the stem for other names."""
    stem = name[: -len(".npz")] if name.endswith(".npz") else name
    head, _, tail = stem.rpartition("-")
    return head if head and tail.isdigit() else stem


def chunk_name(start: int, end: int) -> str:
    """File name of the chunk holding steps [start, end) of an unfinished episode."""
    return f"{start:08d}-{end:08d}.npz"


def chunk_range(name: str) -> tuple[int, int] | None:
    """(start, end) from a chunk's file name, or None if the name is not one."""
    parts = name[: -len(".npz")].split("-") if name.endswith(".npz") else []
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or int(parts[0]) >= int(parts[1]):
        return None
    return int(parts[0]), int(parts[1])


def write_episode(
    directory: str | Path, episode: Episode, name: str | None = None, first: bool = True
) -> Path:
    """Validate and atomically write one episode (or, with ``first=False``, a later chunk of one) into
    ``directory`` as ``name`` (default: a new ``episode_name``); returns the final path."""
    directory = Path(directory)
    length = validate_episode(episode, first=first)
    path = directory / (name or episode_name(length))
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".npz.tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **{k: episode[k] for k in (*KEYS, *OPTIONAL_KEYS) if k in episode})
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


def remove_dir(path: Path) -> None:
    """Delete a directory so that readers see it whole or not at all: rename it to a hidden name, then delete."""
    hidden = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.deleting")
    try:
        os.rename(path, hidden)
    except FileNotFoundError:
        return
    shutil.rmtree(hidden, ignore_errors=True)


def load_episode(path: str | Path, missing_ok: bool = False) -> Episode:
    """Read one episode file; raises CorruptEpisodeError (naming the file) if it cannot be read.
    ``missing_ok``: a file that does not exist (any more) raises FileNotFoundError instead."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        if missing_ok and isinstance(e, FileNotFoundError):
            raise
        raise CorruptEpisodeError(f"{path}: cannot read episode ({e}); delete or re-collect it") from e


class EpisodeGone(StoreError):
    """An unfinished episode a reader had indexed has neither chunks nor a finished file any more."""


class _Unfinished:
    """A reader's view of one unfinished episode: its contiguous chunks from step 0 (path, start, end)."""

    def __init__(self) -> None:
        self.chunks: list[tuple[Path, int, int]] = []

    @property
    def length(self) -> int:
        return self.chunks[-1][2] if self.chunks else 0


class EpisodeStore:
    """A directory of episodes. Read side: ``lengths()`` and ``read(i, start, length)`` (finished episodes),
    ``unfinished()`` and ``read_unfinished(key, start, length)`` (episodes still being collected); write side:
    ``add``, ``write_chunk`` and, at a writer's start, ``close_unfinished``.

    ``on_corrupt``: "warn" skips unreadable or invalid files with a warning naming them; "raise" fails.
    ``cache_bytes`` bounds the memory held by decoded episodes and chunks (least recently used are dropped).
    ``generation`` grows whenever what the store holds changes, so a sampler knows to re-index.
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
        self._keys: dict[str, int] = {}  # key of a finished episode -> its index
        self._known: set[str] = set()
        self._bad: set[str] = set()
        self._open: dict[str, _Unfinished] = {}
        self._cache: OrderedDict[int | tuple[str, int], Episode] = OrderedDict()
        self._cached_bytes = 0
        self.generation = 0
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

    def record_provenance(self, entry: dict[str, Any]) -> None:
        """Append how some of this store's episodes were made to ``metadata.json``'s ``provenance`` list: one
        JSON-serializable dict per writing command, e.g. ``{"policy": ..., "env": ..., "seed": ..., "source":
        ...}``, to which the time, the command line and the toolkit version are added (``worldmodels info``
        prints them). A store appended to by several
        commands keeps one entry each, oldest first."""
        from worldmodels import __version__

        entry = {
            "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "version": __version__,
            **entry,
        }
        path = self.root / METADATA
        old = json.loads(path.read_text()) if path.exists() else {}
        provenance = [
            *old.get("provenance", []),
            {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **entry},
        ]
        self._merge_metadata({"provenance": provenance})
        self.metadata["provenance"] = provenance

    def _learn(self, episode: Episode) -> None:
        """Fill in image shape and action space from the first episode or chunk seen."""
        if not self.metadata.get("image_shape"):
            self.metadata["image_shape"] = list(episode["image"].shape[1:])
            self.metadata.setdefault("discrete", bool(episode["action"].ndim == 1))
            if episode["action"].ndim == 2:
                self.metadata.setdefault("action_dim", int(episode["action"].shape[1]))
        if episode["action"].ndim == 1 and "action_space" not in self.metadata:
            n = int(episode["action"].max()) + 1
            self.metadata["action_n"] = max(n, self.metadata.get("action_n", 0))

    def _skip(self, error: CorruptEpisodeError, name: str) -> None:
        if self.on_corrupt == "raise":
            raise error
        notices.skipped(f"skipping corrupt episode {error}")
        self._bad.add(name)

    # -- scanning ---------------------------------------------------------------------------------------

    def refresh(self) -> int:
        """Scan for finished episodes and chunks written since the last scan; validate them. Returns how many
        changes were seen (finished episodes and chunks added, unfinished episodes gone; 0: nothing new).

        Finished files are scanned before chunks, and chunks of a key with a finished file are ignored: an
        episode that finishes during the scan is seen in its chunks or in its finished file, never in both."""
        changes = self._scan_finished() + self._scan_unfinished()
        if changes:
            self.generation += 1
        return changes

    def _scan_finished(self) -> int:
        new = sorted(
            p for p in self.root.glob("*.npz") if p.name not in self._known and p.name not in self._bad
        )
        added = 0
        for path in new:
            try:
                episode = load_episode(path)
                length = validate_episode(episode, str(path), self.image_shape)
            except CorruptEpisodeError as e:
                self._skip(e, path.name)
                continue
            self._learn(episode)
            self._known.add(path.name)
            self._keys[episode_key(path.name)] = len(self.paths)
            self.paths.append(path)
            self._lengths.append(length)
            self._put(len(self.paths) - 1, episode)
            added += 1
        return added

    def _scan_unfinished(self) -> int:
        base = self.root / UNFINISHED
        listed = base.iterdir() if base.is_dir() else []  # hidden names: folders being deleted
        folders = {p.name: p for p in listed if p.is_dir() and not p.name.startswith(".")}
        changes = 0
        for key in [k for k in self._open if k not in folders or k in self._keys]:  # finished or gone
            self._drop(key)
            changes += 1
        for key, folder in sorted(folders.items()):
            if key in self._keys:
                continue
            view = self._open.setdefault(key, _Unfinished())
            names = sorted(p.name for p in folder.glob("*.npz"))
            for name in names:
                span, label = chunk_range(name), f"{UNFINISHED}/{key}/{name}"
                if label in self._bad:
                    continue
                if span is None:
                    self._skip(
                        CorruptEpisodeError(
                            f"{folder / name}: not a chunk name <start>-<end>.npz; delete it"
                        ),
                        label,
                    )
                    continue
                if span[0] < view.length:
                    continue  # already known
                if span[0] > view.length:
                    break  # not contiguous (a chunk before it is missing or corrupt): not readable yet
                path = folder / name
                try:
                    chunk = load_episode(path, missing_ok=True)
                    validate_episode(chunk, str(path), self.image_shape, first=span[0] == 0)
                    if len(chunk["image"]) != span[1] - span[0]:
                        raise CorruptEpisodeError(
                            f"{path}: holds {len(chunk['image'])} steps, its name says "
                            f"{span[1] - span[0]}; delete it"
                        )
                except FileNotFoundError:
                    break  # the episode finished meanwhile: its finished file is seen on the next scan
                except CorruptEpisodeError as e:
                    self._skip(e, label)
                    break
                self._learn(chunk)
                view.chunks.append((path, *span))
                self._put((key, span[0]), chunk)
                changes += 1
            if not view.chunks:
                del self._open[key]
        return changes

    def _drop(self, key: str) -> None:
        for _, start, _ in self._open.pop(key).chunks:
            old = self._cache.pop((key, start), None)
            if old is not None:
                self._cached_bytes -= sum(v.nbytes for v in old.values())

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
        """Finished episodes (episodes still being collected are in ``unfinished()``)."""
        return len(self.paths)

    def lengths(self) -> list[int]:
        """Steps of each finished episode, by index."""
        return list(self._lengths)

    def unfinished(self) -> dict[str, int]:
        """Key -> steps written so far, of each episode still being collected (as of the last refresh)."""
        return {key: view.length for key, view in self._open.items()}

    # -- reading ----------------------------------------------------------------------------------------

    def _put(self, index: int | tuple[str, int], episode: Episode) -> None:
        size = sum(v.nbytes for v in episode.values())
        self._cache[index] = episode
        self._cached_bytes += size
        while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= sum(v.nbytes for v in old.values())

    def episode(self, index: int) -> Episode:
        """The raw arrays of finished episode ``index`` as stored (discrete actions as ints)."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        episode = load_episode(self.paths[index])
        validate_episode(episode, str(self.paths[index]), self.image_shape)
        self._put(index, episode)
        return episode

    def _window(self, window: Episode) -> Episode:
        if window["action"].ndim == 1:
            window["action"] = one_hot(window["action"], self.action_dim)
        window["action"] = window["action"].astype(np.float32, copy=False)
        window["reward"] = window["reward"].astype(np.float32, copy=False)
        return window

    def read(self, index: int, start: int, length: int) -> Episode:
        """Window of finished episode ``index``: image (L, H, W, 3) uint8, action (L, A) float32 (one-hot if
        discrete, zeros where no action led to the step), reward (L,), is_first/is_last/is_terminal (L,)."""
        episode = self.episode(index)
        return self._window({k: episode[k][start : start + length] for k in KEYS})

    def _chunk(self, key: str, path: Path, start: int) -> Episode:
        if (key, start) in self._cache:
            self._cache.move_to_end((key, start))
            return self._cache[(key, start)]
        chunk = load_episode(path, missing_ok=True)
        validate_episode(chunk, str(path), self.image_shape, first=start == 0)
        self._put((key, start), chunk)
        return chunk

    def _unfinished_steps(self, key: str, start: int, stop: int) -> Episode | None:
        """Raw steps [start, stop) of an unfinished episode from its chunks; None if it finished or is gone."""
        view = self._open.get(key)
        if view is None or stop > view.length:
            return None
        parts = []
        try:
            for path, begin, end in view.chunks:
                if end > start and begin < stop:
                    chunk = self._chunk(key, path, begin)
                    parts.append({k: chunk[k][max(start - begin, 0) : stop - begin] for k in KEYS})
        except FileNotFoundError:
            return None
        return {k: np.concatenate([p[k] for p in parts]) for k in KEYS}

    def _finished_instead(self, key: str, start: int, stop: int) -> Episode:
        """The same steps from the finished file of an episode that finished after the reader indexed it."""
        self.refresh()
        index = self._keys.get(key)
        if key in self._open:
            raise StoreError(
                f"{self.root / UNFINISHED / key}: steps {start}..{stop} are past the {self._open[key].length} "
                "written so far; read inside the written steps (see unfinished())"
            )
        if index is None or stop > self._lengths[index]:
            raise EpisodeGone(
                f"{self.root / UNFINISHED / key}: the unfinished episode is gone and no finished file holds its "
                f"steps {start}..{stop}; refresh the store and sample again"
            )
        episode = self.episode(index)
        return {k: episode[k][start:stop] for k in KEYS}

    def unfinished_episode(self, key: str) -> Episode:
        """The raw arrays of all written steps of unfinished episode ``key`` (discrete actions as ints)."""
        view = self._open.get(key)
        stop = view.length if view is not None else 0
        steps = self._unfinished_steps(key, 0, stop) if stop else None
        return steps if steps is not None else self._finished_instead(key, 0, stop)

    def read_unfinished(self, key: str, start: int, length: int) -> Episode:
        """Window of steps [start, start + length) of unfinished episode ``key``, inside its written steps;
        arrays as in ``read``. If the episode has finished since, the window comes from its finished file."""
        steps = self._unfinished_steps(key, start, start + length)
        return self._window(
            steps if steps is not None else self._finished_instead(key, start, start + length)
        )

    # -- writing ----------------------------------------------------------------------------------------

    def add(self, episode: Episode, key: str | None = None) -> Path:
        """Atomically write a finished episode; it becomes visible to readers on their next refresh.
        With the ``key`` its chunks were written under, the chunks are deleted after the finished file exists."""
        validate_episode(episode, "<new episode>", self.image_shape)
        path = write_episode(self.root, episode, episode_name(len(episode["image"]), key))
        if key is not None:
            remove_dir(self.root / UNFINISHED / key)
        return path

    def write_chunk(self, key: str, start: int, chunk: Episode) -> Path:
        """Atomically write steps [start, start + len(chunk)) of the episode ``key`` being collected; chunks
        of an episode are written in order, each starting where the previous one ended (the first at 0)."""
        validate_episode(chunk, f"<chunk {start} of {key}>", self.image_shape, first=start == 0)
        folder = self.root / UNFINISHED / key
        folder.mkdir(parents=True, exist_ok=True)
        return write_episode(folder, chunk, chunk_name(start, start + len(chunk["image"])), first=start == 0)

    def close_unfinished(self) -> list[Path]:
        """For a writer at its start: turn every episode left unfinished (its writer was killed) into a
        finished episode of its written steps, truncated there (``is_last`` at the end, ``is_terminal`` False),
        and delete leftovers (chunks of episodes already finished, folders without a readable first chunk,
        temporary files). Returns the finished files written. Never call it while another writer collects
        into this store: its episode in progress would be cut."""
        self.refresh()
        written = []
        for key in list(self._open):
            episode = {k: v.copy() for k, v in self.unfinished_episode(key).items()}
            episode["is_last"][-1], episode["is_terminal"][-1] = True, False
            written.append(self.add(episode, key))
        base = self.root / UNFINISHED
        for folder in sorted(base.iterdir()) if base.is_dir() else []:
            if folder.name.startswith("."):
                shutil.rmtree(folder, ignore_errors=True)  # a deletion a kill interrupted
            elif folder.is_dir():
                remove_dir(folder)  # finished already, or nothing readable in it
        self.refresh()
        return written


def one_hot(actions: np.ndarray, n: int) -> np.ndarray:
    """int (T,) -> float32 (T, n); negative entries (no action) become all-zero rows."""
    out = np.zeros((len(actions), n), np.float32)
    valid = actions >= 0
    out[np.nonzero(valid)[0], actions[valid]] = 1.0
    return out
