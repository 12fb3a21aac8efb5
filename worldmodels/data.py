"""Sequence sampling over episode stores and video folders, and the LightningDataModule that serves it.

A *source* is an ``EpisodeStore`` (worldmodels/store.py) or a ``VideoFolder`` (worldmodels/videos.py); both
answer ``lengths()``, ``read(index, start, length)``, ``refresh()``, ``action_dim`` and ``discrete``. A store
also answers ``unfinished()`` and ``read_unfinished(key, start, length)``: the written steps of episodes still
being collected.

Sampling is uniform over time steps: a window of ``T`` steps starts at a step drawn uniformly from all steps
of all finished episodes and videos, and when it runs past the end of an episode it continues with the next
finished one, whose first step carries ``is_first=True``. Models reset their state there, so no step is wasted
and short episodes (shorter than ``T``) are usable.

Unfinished episodes add their windows too: each of the ``n - T + 1`` windows that lie inside the ``n`` steps
written so far is drawn with the weight of one step. Such a window never runs past the written steps (they are
followed by steps not yet on disk, not by an episode start) and never continues into another episode; an
unfinished episode with fewer than ``T`` written steps gives no window yet. When the episode finishes, its steps
are sampled like any finished episode's.

Held-out episodes (``val_fraction > 0``): each finished episode or video goes to validation when a hash of its
name (a store's episode key, a video's path relative to its folder; ``item_names``) falls below
``val_fraction``, so the split is deterministic, the same in every process and run, and an episode keeps its
side as a store grows. A source set too small for the hash to pick any holds out the one episode of smallest
hash, and one that the hash would hold out entirely keeps the largest-hash episode for training
(``held_out``): so a split needs two or more episodes. An unfinished episode goes by the hash of its key alone.
Training windows are drawn from the training episodes only and validation windows from the held-out ones, each
with the sampling above (a window crossing an episode end continues with the next episode of its side).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from worldmodels.errors import StoreError
from worldmodels.sources import Source, image_size_of, open_source
from worldmodels.store import EpisodeGone, EpisodeStore, episode_key

__all__ = [
    "SPLITS",
    "SequenceDataModule",
    "SequenceDataset",
    "SequenceSampler",
    "Source",
    "held_out",
    "image_size_of",
    "item_names",
    "open_source",
]

SPLITS = ("all", "train", "val")  # which episodes a sampler draws from (module docstring)


def item_names(source: Source) -> list[str]:
    """A stable name for each finished item of ``source``, by index: an episode store's episode key (the file
    name without its length), a video folder's item path relative to the folder, a dataset's own episode names
    (worldmodels/formats.py)."""
    if hasattr(source, "item_names"):
        return source.item_names()
    if isinstance(source, EpisodeStore):
        return [episode_key(p.name) for p in source.paths]
    root = Path(source.root)
    return [Path(item).relative_to(root).as_posix() for item in source.items]


def unit_hash(name: str) -> float:
    """``name`` -> a number in [0, 1), the same on every machine and run (SHA-256, not Python's salted hash)."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 2**32


def held_out(names: list[str], fraction: float) -> set[str]:
    """The names of the finished items that validation holds out: those whose ``unit_hash`` is below
    ``fraction``; at least one (the smallest hash) and never all (the largest hash stays for training).
    Raises StoreError for fewer than two distinct names when ``fraction > 0``."""
    if fraction <= 0:
        return set()
    unique = sorted(set(names), key=unit_hash)
    if len(unique) < 2:
        raise StoreError(
            f"val_fraction={fraction}: holding out episodes for validation needs two or more episodes or videos, "
            f"found {len(unique)}; add episodes or set data.val_fraction 0"
        )
    out = {n for n in unique if unit_hash(n) < fraction} or {unique[0]}
    return out - {unique[-1]} if len(out) == len(unique) else out


class SequenceSampler:
    """Draws windows of ``length`` steps, uniform over the time steps of all ``sources``."""

    def __init__(
        self,
        sources: list[Source],
        length: int,
        seed: int | np.random.SeedSequence = 0,
        refresh_every: float = 5.0,
        contiguous: bool = False,
        split: str = "all",
        val_fraction: float = 0.0,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split {split!r}: use one of {SPLITS}")
        self.split, self.val_fraction = split, val_fraction  # "train" / "val": module docstring
        self.sources = sources
        self.length = length
        self.contiguous = contiguous  # windows never cross an episode boundary (for dreams and evaluation)
        self.rng = np.random.default_rng(seed)
        self.refresh_every = refresh_every
        self._last_refresh = time.monotonic()
        self._index()

    def _index(self) -> None:
        self._seen = [getattr(s, "generation", None) for s in self.sources]
        finished = [(s, i, n) for s in self.sources for i, n in enumerate(s.lengths())]
        unfinished = [(s, k, n) for s in self.sources for k, n in getattr(s, "unfinished", dict)().items()]
        if self.split != "all":
            names = [name for s in self.sources for name in item_names(s)]
            val, want = held_out(names, self.val_fraction), self.split == "val"
            finished = [f for f, name in zip(finished, names) if (name in val) == want]
            unfinished = [u for u in unfinished if (unit_hash(u[1]) < self.val_fraction) == want]
        self.items = [(s, i) for s, i, _ in finished]
        self.item_lengths = np.array([n for _, _, n in finished], np.int64)
        self.open_items = [(s, key) for s, key, _ in unfinished]
        self.open_lengths = np.array([n for _, _, n in unfinished], np.int64)
        self.open_starts = np.maximum(self.open_lengths - self.length + 1, 0)  # windows inside written steps
        self.open_ends = np.cumsum(self.open_starts)
        if self.item_lengths.sum() + self.open_starts.sum() == 0:
            where = "" if self.split == "all" else f" in the {self.split} episodes"
            raise StoreError(f"no steps to sample{where}: every source is empty")
        self.ends = np.cumsum(self.item_lengths)
        self.starts = np.maximum(self.item_lengths - self.length + 1, 0)  # contiguous windows per item
        if self.contiguous and self.starts.sum() + self.open_starts.sum() == 0:
            raise StoreError(
                f"no episode or video has {self.length} steps; longest has "
                f"{max(self.item_lengths.max(initial=0), self.open_lengths.max(initial=0))}: "
                "ask for shorter sequences"
            )

    def maybe_refresh(self) -> None:
        """Pick up episodes and chunks a running collector has written since the last look."""
        changed = False
        if time.monotonic() - self._last_refresh >= self.refresh_every:
            self._last_refresh = time.monotonic()
            changed = sum(bool(s.refresh()) for s in self.sources) > 0
        if changed or [getattr(s, "generation", None) for s in self.sources] != self._seen:
            self._index()  # a store also changes when it reads an episode that finished after indexing

    def sample(self) -> dict[str, np.ndarray]:
        """One window: image (T, H, W, 3) uint8, action (T, A), reward (T,), is_first/is_last/is_terminal (T,)."""
        self.maybe_refresh()
        try:
            if self.contiguous:
                weights = np.concatenate([self.starts, self.open_starts])
                item = int(self.rng.choice(len(weights), p=weights / weights.sum()))
                if item >= len(self.items):
                    return self._read_open(item - len(self.items), int(self.rng.integers(weights[item])))
                source, index = self.items[item]
                return source.read(index, int(self.rng.integers(self.starts[item])), self.length)
            finished = int(self.ends[-1]) if len(self.ends) else 0
            step = int(self.rng.integers(finished + int(self.open_starts.sum())))
            if step >= finished:
                item = int(np.searchsorted(self.open_ends, step - finished, side="right"))
                return self._read_open(
                    item, step - finished - int(self.open_ends[item] - self.open_starts[item])
                )
        except EpisodeGone:  # it was closed while this sampler looked elsewhere: index again and redraw
            self._index()
            return self.sample()
        item = int(np.searchsorted(self.ends, step, side="right"))
        offset = step - (self.ends[item] - self.item_lengths[item])
        parts, need = [], self.length
        while need > 0:
            source, index = self.items[item]
            take = min(need, int(self.item_lengths[item] - offset))
            parts.append(source.read(index, int(offset), take))
            need -= take
            item, offset = (item + 1) % len(self.items), 0
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _read_open(self, item: int, start: int) -> dict[str, np.ndarray]:
        """The window at ``start`` of unfinished episode ``item``; it ends inside the written steps."""
        source, key = self.open_items[item]
        return source.read_unfinished(key, start, self.length)


class SequenceDataset(IterableDataset):
    """An endless stream of windows. Each dataloader worker and each DDP rank draws from its own seed,
    so all of them see different samples.

    ``split`` and ``val_fraction`` pick the training or held-out episodes (module docstring). ``limit`` makes
    the stream finite and the same on every pass: ``limit`` windows drawn from ``seed`` alone (for validation,
    so that each evaluation sees the same windows; use it without dataloader workers)."""

    def __init__(
        self,
        paths: list[str],
        length: int,
        size: int | None,
        seed: int,
        on_corrupt: str,
        start_step: int = 0,
        replay_budget_mb: int = 2048,
        split: str = "all",
        val_fraction: float = 0.0,
        limit: int | None = None,
        camera: str | None = None,
    ) -> None:
        self.paths, self.length, self.size, self.seed, self.on_corrupt = paths, length, size, seed, on_corrupt
        self.camera = camera  # the image stream of an HDF5 / Minari / LeRobot dataset (None: its first)
        self.replay_budget_mb = replay_budget_mb
        self.start_step = start_step  # a resumed run draws a fresh stream instead of replaying the first one
        self.split, self.val_fraction, self.limit = split, val_fraction, limit

    def __iter__(self):
        worker = get_worker_info()
        worker_id = worker.id if worker else 0
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        if self.limit is None:
            seed = np.random.SeedSequence([self.seed, self.start_step, rank, worker_id])
        else:
            # the same windows on every pass
            seed = np.random.SeedSequence([self.seed, SPLITS.index(self.split)])
        sources = [
            open_source(p, self.size, self.on_corrupt, self.replay_budget_mb, self.camera) for p in self.paths
        ]
        sampler = SequenceSampler(
            sources, self.length, seed=seed, split=self.split, val_fraction=self.val_fraction
        )
        count = 0
        while self.limit is None or count < self.limit:
            count += 1
            yield sampler.sample()


class SequenceDataModule(L.LightningDataModule):
    """Batches of windows from episode stores and/or video folders.

    Batch (batch-major): image uint8 (B, T, H, W, 3), action float32 (B, T, A) (A = 0 for video without
    actions), reward float32 (B, T), is_first / is_last / is_terminal bool (B, T).

    ``val_fraction > 0`` holds out episodes (module docstring: by a hash of their names, deterministic) for a
    validation loader of ``val_batches`` batches, the same windows at every evaluation; training then draws from
    the other episodes only. 0 (the default): no validation, every episode trains. Lightning runs validation
    every ``trainer.val_check_interval`` training steps (with ``check_val_every_n_epoch: null``: the training
    stream is endless, so it has no epochs).

    ``camera`` picks the image stream of an HDF5 file, a Minari dataset or a LeRobot folder (docs/datasets.md;
    default: the dataset's first, which `worldmodels info` names); stores and video folders have one.
    """

    def __init__(
        self,
        path: str | list[str],
        batch_size: int = 16,
        length: int = 64,
        size: int | None = None,
        workers: int = 0,
        seed: int = 0,
        on_corrupt: str = "warn",
        replay_budget_mb: int = 2048,
        val_fraction: float = 0.0,
        val_batches: int = 8,
        camera: str | None = None,
    ) -> None:
        super().__init__()
        self.camera = camera
        if not 0 <= val_fraction < 1 or val_batches < 1:
            raise StoreError(
                f"val_fraction={val_fraction}, val_batches={val_batches}: use a fraction in [0, 1) of episodes to "
                "hold out (0: no validation) and one or more validation batches"
            )
        self.val_fraction, self.val_batches = val_fraction, val_batches
        self.replay_budget_mb = replay_budget_mb  # per dataloader worker: decoded episodes kept in memory
        self.paths = [str(p) for p in ([path] if isinstance(path, str | Path) else path)]
        self.batch_size, self.length, self.workers, self.seed = batch_size, length, workers, seed
        self.on_corrupt = on_corrupt
        sources = [open_source(p, size, on_corrupt, camera=camera) for p in self.paths]
        sizes = {image_size_of(s) for s in sources}
        dims = {(s.action_dim, s.discrete) for s in sources}
        if len(sizes) > 1 or len(dims) > 1:
            raise StoreError(
                f"{self.paths}: sources disagree on image size {sizes} or action space (dim, discrete) {dims}"
            )
        self.image_size = sizes.pop()
        self.action_dim, self.discrete = dims.pop()
        self.size = self.image_size
        self.steps = sum(sum(s.lengths()) for s in sources)
        if val_fraction > 0:  # the split, checked now: a store too small to split fails before training
            names = [name for s in sources for name in item_names(s)]
            self.val_names = sorted(held_out(names, val_fraction))  # the held-out episodes' names

    @property
    def _train_split(self) -> str:
        return "train" if self.val_fraction > 0 else "all"

    def _dataset(self, split: str, start_step: int = 0, limit: int | None = None) -> SequenceDataset:
        """The windows of one split of this module's sources (``SequenceDataset``)."""
        return SequenceDataset(
            self.paths,
            self.length,
            self.size,
            self.seed,
            self.on_corrupt,
            start_step,
            self.replay_budget_mb,
            split=split,
            val_fraction=self.val_fraction,
            limit=limit,
            camera=self.camera,
        )

    def train_dataloader(self) -> DataLoader:
        step = self.trainer.global_step if self.trainer is not None else 0  # restored before this is called
        dataset = self._dataset(self._train_split, step)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.workers,
            persistent_workers=self.workers > 0,
            multiprocessing_context="spawn" if self.workers > 0 else None,
            pin_memory=torch.cuda.is_available(),
        )

    def val_dataloader(self) -> DataLoader | list:
        """``val_batches`` batches of windows from the held-out episodes, the same ones every time; an empty
        list (Lightning skips validation) when ``val_fraction`` is 0."""
        if self.val_fraction <= 0:
            return []
        dataset = self._dataset("val", limit=self.val_batches * self.batch_size)
        return DataLoader(dataset, batch_size=self.batch_size, pin_memory=torch.cuda.is_available())

    def sample_batch(
        self,
        batch_size: int | None = None,
        seed: int | None = None,
        contiguous: bool = False,
        split: str | None = None,
    ) -> dict[str, torch.Tensor]:
        """A batch drawn in this process (for dreams, evaluation and tests); ``contiguous`` keeps every
        window inside one episode; ``split`` "train" / "val" draws from the training / held-out episodes
        (default: the training side when there is a split, else all)."""
        sources = [open_source(p, self.size, self.on_corrupt, camera=self.camera) for p in self.paths]
        sampler = SequenceSampler(
            sources,
            self.length,
            self.seed if seed is None else seed,
            contiguous=contiguous,
            split=split or self._train_split,
            val_fraction=self.val_fraction,
        )
        samples = [sampler.sample() for _ in range(batch_size or self.batch_size)]
        return {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in samples[0]}
