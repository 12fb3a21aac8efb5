"""HDF5 episode files read with h5py, lazily: a window reads its rows of the file, nothing more.

``HDF5Episodes(path)`` takes one HDF5 file (``.h5`` / ``.hdf5`` / ``.he5``, or any file with the HDF5
signature) or a folder of them (their episodes follow each other, files in natural order of their names). Three
layouts are recognised, in this order (exact arrays in docs/datasets.md):

* **robomimic** (also what robosuite / MimicGen conversions write): ``data/demo_N`` groups, each with
  ``obs/<camera>`` images (T, H, W, 3) uint8 (the cameras are the obs datasets of that shape, e.g.
  ``agentview_image``), ``actions`` (T, A), optional ``rewards`` (T,) and ``dones`` (T,), optional
  ``next_obs/<camera>``. Row t is (frame t, the action taken there, the reward and done that followed).
* **stable-worldmodel** (``World.collect(..., format="hdf5")``, its ``HDF5Writer``): one dataset per column
  over all steps of all episodes, ``ep_len`` (episodes,) and ``ep_offset`` (episodes,) giving each episode's
  rows; image columns ``pixels`` (or ``pixels.<view>``), ``action`` (N, A) with NaN on each episode's last row,
  ``reward`` (N,) with NaN on each episode's first row, ``terminated`` (N,). Row t is (frame t, the action taken
  there, the reward that led to frame t, terminated on arriving at frame t): its writer moves the actions one
  row up (``ep['action'].append(ep['action'].pop(0))`` in stable_worldmodel/world/world.py).
* **episode groups**: every top-level group is one episode holding ``image`` (T, H, W, 3) uint8 (or another
  image dataset named by ``camera``) and optionally ``action`` (T, A) float or (T,) int (discrete, -1: none),
  ``reward`` (T,) and ``is_terminal`` (T,), in the toolkit's convention (worldmodels/__init__.py: ``action[t]``
  led to frame ``t``), the arrays of an episode-store file.

Conversion to the toolkit's convention: robomimic frame t's action, reward and terminal flag are row t-1's
``actions``, ``rewards``, ``dones``; with ``next_obs/<camera>`` the episode gains its final frame (the one the
last action led to), so no transition is lost; without it the last row's action and reward lead past the
stored frames and are dropped, and its done marks the last frame terminal. stable-worldmodel: frame t's action
is row t-1's (the last row's NaN is dropped), rewards and ``terminated`` stay on their rows (the first row's NaN
reward becomes 0). Images may be (T, H, W, C) or (T, C, H, W) with C = 1 (gray, repeated) or 3. Integer
actions (T,) are discrete, one-hot in windows, over ``num_actions`` (a file attribute) or the largest action
+ 1. A layout that is not understood raises FormatError naming the file and the dataset.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from worldmodels.errors import FormatError
from worldmodels.formats import (
    HDF5_SUFFIXES,
    FormatSource,
    Labels,
    brief,
    fit_frames,
    frame_shape,
    image_layout,
    needs,
    shifted,
    to_rgb_frames,
)
from worldmodels.videos import natural_key

LAYOUTS = ("robomimic", "stable-worldmodel", "episode groups")


def _image_datasets(group: Any) -> list[str]:
    """Names of the uint8 image datasets (T, H, W, C) / (T, C, H, W) directly in ``group``, sorted."""
    import h5py

    return sorted(
        name
        for name, item in group.items()
        if isinstance(item, h5py.Dataset) and item.dtype == np.uint8 and image_layout(item.shape)
    )


def _pick_camera(where: str, cameras: list[str], camera: str | None, preferred: tuple[str, ...]) -> str:
    if camera is not None:
        if camera not in cameras:
            raise FormatError(
                f"{where}: no image dataset {camera!r}; the image datasets are {cameras or 'none'} "
                "(pick one with --camera)"
            )
        return camera
    if not cameras:
        raise FormatError(
            f"{where}: no image dataset (uint8, (T, H, W, 3) or (T, 3, H, W)); docs/datasets.md lists the "
            "HDF5 layouts"
        )
    return next((c for c in preferred if c in cameras), cameras[0])


def _action_kind(dataset: Any, where: str) -> tuple[str, int]:
    """("float", A) for (T, A) / (T,) float actions, ("int", 0) for (T,) integer ones; FormatError otherwise."""
    kind, shape = dataset.dtype.kind, dataset.shape
    if kind == "f" and len(shape) in (1, 2):
        return "float", int(shape[1]) if len(shape) == 2 else 1
    if kind in "iu" and (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        return "int", 0
    raise FormatError(
        f"{where}: actions are {dataset.dtype} {shape}; expected float (T, A) or integer (T,) (discrete)"
    )


def _rows(dataset: Any, start: int, stop: int) -> np.ndarray:
    """Rows start..stop-1; integer (T, 1) actions flattened to (T,)."""
    rows = dataset[start:stop]
    return rows.reshape(len(rows)) if rows.ndim == 2 and rows.dtype.kind in "iu" else rows


class _Layout(ABC):
    """One file's episodes in one of LAYOUTS: ``episodes`` [(name, frames)], camera, action kind, rewards."""

    name: str
    path: Path
    camera: str
    cameras: list[str]
    native: tuple[int, int]
    action: tuple[str, int] | None  # ("float", A) / ("int", number of actions) / None
    rewards: bool
    episodes: list[tuple[str, int]]

    @abstractmethod
    def frames(self, f: Any, index: int, start: int, stop: int) -> np.ndarray:
        """Frames start..stop-1 of episode ``index`` of open file ``f``: (L, H, W, 3) uint8 at their size."""

    @abstractmethod
    def labels(self, f: Any, index: int) -> Labels:
        """action / reward / is_terminal of episode ``index`` in the toolkit's convention."""

    def _image_info(self, dataset: Any) -> None:
        """The image order ("hwc" / "chw") and (H, W) of the first episode's camera dataset."""
        self.order = image_layout(dataset.shape)
        self.native = frame_shape(dataset.shape, self.order)

    def _check_image(self, dataset: Any, where: str) -> None:
        if dataset.dtype != np.uint8 or image_layout(dataset.shape) != self.order:
            raise FormatError(
                f"{where}: images are {dataset.dtype} {dataset.shape}, the first episode's are "
                f"uint8 {self.order.upper()} ({self.native[0]}x{self.native[1]})"
            )
        if frame_shape(dataset.shape, self.order) != self.native:
            raise FormatError(
                f"{where}: frames are {frame_shape(dataset.shape, self.order)}, the first episode's are "
                f"{self.native}; every episode needs frames of one size"
            )

    def _count_actions(self, arrays: list[np.ndarray], f: Any) -> None:
        """The number of discrete actions: the file's ``num_actions`` attribute, else the largest action + 1."""
        largest = max((int(a.max(initial=-1)) for a in arrays), default=-1)
        n = int(f.attrs.get("num_actions", largest + 1))
        if n <= largest or n < 1:
            raise FormatError(
                f"{self.path}: num_actions: {n}, but an action is {largest}; fix the attribute or drop it"
            )
        self.action = ("int", n)


class _Robomimic(_Layout):
    name = "robomimic"

    def __init__(self, path: Path, f: Any, camera: str | None) -> None:
        import h5py

        self.path = path
        data = f["data"]
        demos = sorted((k for k in data if isinstance(data[k], h5py.Group)), key=natural_key)
        if not demos:
            raise FormatError(
                f"{path}: data: holds no demo groups (robomimic: data/demo_0, data/demo_1, ...)"
            )
        self.groups = [f"data/{d}" for d in demos]
        first = f[self.groups[0]]
        if "obs" not in first or not isinstance(first["obs"], h5py.Group):
            raise FormatError(
                f"{path}: {self.groups[0]}/obs: missing; a robomimic demo holds obs/<camera>_image"
            )
        self.cameras = _image_datasets(first["obs"])
        self.camera = _pick_camera(f"{path}: {self.groups[0]}/obs", self.cameras, camera, ())
        self._image_info(first["obs"][self.camera])
        if "actions" not in first:
            raise FormatError(
                f"{path}: {self.groups[0]}/actions: missing; a robomimic demo holds actions (T, A)"
            )
        self.action = _action_kind(first["actions"], f"{path}: {self.groups[0]}/actions")
        self.rewards = "rewards" in first
        self.episodes, self.next_frame, ints = [], [], []
        for group in self.groups:
            demo = f[group]
            where = f"{path}: {group}"
            if f"obs/{self.camera}" not in demo:
                raise FormatError(f"{where}/obs/{self.camera}: missing (the first demo has it)")
            image = demo["obs"][self.camera]
            self._check_image(image, f"{where}/obs/{self.camera}")
            rows = len(image)
            for key in ("actions", *(("rewards",) if self.rewards else ()), "dones"):
                if key == "dones" and key not in demo:
                    continue
                if key not in demo:
                    raise FormatError(f"{where}/{key}: missing (the first demo has it)")
                if len(demo[key]) != rows:
                    raise FormatError(f"{where}/{key}: {len(demo[key])} rows, obs/{self.camera} has {rows}")
            if _action_kind(demo["actions"], f"{where}/actions") != self.action:
                raise FormatError(f"{where}/actions: {demo['actions'].shape}, the first demo's differ")
            if self.action[0] == "int":
                ints.append(_rows(demo["actions"], 0, rows))
            nxt = f"next_obs/{self.camera}" in demo and len(demo["next_obs"][self.camera]) == rows
            self.next_frame.append(nxt)
            self.episodes.append((group, rows + int(nxt)))
        if self.action[0] == "int":
            self._count_actions(ints, f)

    def frames(self, f: Any, index: int, start: int, stop: int) -> np.ndarray:
        demo = f[self.groups[index]]
        image = demo["obs"][self.camera]
        rows = len(image)
        frames = image[start : min(stop, rows)]
        if stop > rows:  # the final frame, from next_obs
            frames = np.concatenate([frames, demo["next_obs"][self.camera][rows - 1 : rows]])
        return to_rgb_frames(frames, self.order)

    def labels(self, f: Any, index: int) -> Labels:
        demo, (_, length) = f[self.groups[index]], self.episodes[index]
        rows = len(demo["actions"])
        action = _rows(demo["actions"], 0, rows)
        out = dict(
            action=shifted(action, length, -1 if self.action[0] == "int" else 0),
            reward=shifted(demo["rewards"][:].astype(np.float32), length)
            if self.rewards
            else np.zeros(length, np.float32),
        )
        dones = demo["dones"][:].astype(bool) if "dones" in demo else np.zeros(rows, bool)
        terminal = shifted(dones, length, False)
        if not self.next_frame[index]:
            terminal[-1] |= dones[-1]  # the done after the last stored frame marks that frame
        out["is_terminal"] = terminal
        return out


class _StableWorldModel(_Layout):
    name = "stable-worldmodel"

    def __init__(self, path: Path, f: Any, camera: str | None) -> None:
        import h5py

        self.path = path
        lengths, offsets = f["ep_len"], f["ep_offset"]
        if lengths.ndim != 1 or offsets.shape != lengths.shape or lengths.dtype.kind not in "iu":
            raise FormatError(
                f"{path}: ep_len / ep_offset: shapes {lengths.shape} / {offsets.shape}; stable-worldmodel files "
                "hold one integer of each per episode"
            )
        self.lengths, self.offsets = lengths[:].astype(np.int64), offsets[:].astype(np.int64)
        columns = {
            k: v for k, v in f.items() if isinstance(v, h5py.Dataset) and k not in ("ep_len", "ep_offset")
        }
        self.cameras = _image_datasets(f)
        self.camera = _pick_camera(str(path), self.cameras, camera, ("pixels",))
        self._image_info(f[self.camera])
        rows = int((self.offsets + self.lengths).max(initial=0))
        for name, column in columns.items():
            if len(column) < rows:
                raise FormatError(f"{path}: {name}: {len(column)} rows, but ep_offset + ep_len reach {rows}")
        if (self.lengths < 1).any() or (self.offsets < 0).any():
            raise FormatError(f"{path}: ep_len / ep_offset: an episode has no rows or starts before row 0")
        self.action = _action_kind(f["action"], f"{path}: action") if "action" in f else None
        self.rewards = "reward" in columns
        self.terminal = "terminated" in columns
        self.episodes = [(f"episode_{i}", int(n)) for i, n in enumerate(self.lengths)]
        if self.action is not None and self.action[0] == "int":
            column = _rows(f["action"], 0, len(f["action"]))
            # each episode's last row holds no action (stable-worldmodel writes a placeholder there)
            self._count_actions([column[o : o + n - 1] for o, n in zip(self.offsets, self.lengths)], f)

    def frames(self, f: Any, index: int, start: int, stop: int) -> np.ndarray:
        offset = int(self.offsets[index])
        return to_rgb_frames(f[self.camera][offset + start : offset + stop], self.order)

    def labels(self, f: Any, index: int) -> Labels:
        offset, length = int(self.offsets[index]), int(self.lengths[index])
        out: Labels = {}
        if self.action is None:
            out["action"] = np.zeros((length, 0), np.float32)
        else:
            taken = _rows(f["action"], offset, offset + length)
            if taken.ndim == 1 and self.action[0] == "float":
                taken = taken[:, None]  # a 1-D action space, its length-1 axis squeezed by the writer
            out["action"] = shifted(taken[: length - 1], length, -1 if self.action[0] == "int" else 0)
        if self.rewards:
            reward = f["reward"][offset : offset + length].astype(np.float32)
            reward[0] = 0.0 if np.isnan(reward[0]) else reward[0]  # no reward led to the first frame
            out["reward"] = reward
        else:
            out["reward"] = np.zeros(length, np.float32)
        terminal = f["terminated"][offset : offset + length] if self.terminal else np.zeros(length)
        out["is_terminal"] = np.asarray(terminal).astype(bool).reshape(length)
        return out


class _EpisodeGroups(_Layout):
    name = "episode groups"

    def __init__(self, path: Path, f: Any, camera: str | None) -> None:
        import h5py

        self.path = path
        self.groups = sorted((k for k, v in f.items() if isinstance(v, h5py.Group)), key=natural_key)
        if not self.groups:
            raise FormatError(
                f"{path}: holds {sorted(f.keys()) or 'nothing'} at its top level: no episode groups, no robomimic "
                "data/demo_N groups, no stable-worldmodel ep_len/ep_offset; docs/datasets.md lists the layouts"
            )
        first = f[self.groups[0]]
        self.cameras = _image_datasets(first)
        self.camera = _pick_camera(f"{path}: {self.groups[0]}", self.cameras, camera, ("image",))
        self._image_info(first[self.camera])
        where0 = f"{path}: {self.groups[0]}"
        self.action = _action_kind(first["action"], f"{where0}/action") if "action" in first else None
        self.rewards = "reward" in first
        self.episodes, ints = [], []
        for group in self.groups:
            episode, where = f[group], f"{path}: {group}"
            if self.camera not in episode:
                raise FormatError(f"{where}/{self.camera}: missing (the first episode group has it)")
            self._check_image(episode[self.camera], f"{where}/{self.camera}")
            rows = len(episode[self.camera])
            for key in ("action", "reward", "is_terminal"):
                present = key in episode
                expected = {"action": self.action is not None, "reward": self.rewards}.get(key, present)
                if present != expected:
                    raise FormatError(
                        f"{where}/{key}: {'present' if present else 'missing'}, unlike in {self.groups[0]}; "
                        "every episode group needs the same datasets"
                    )
                if present and len(episode[key]) != rows:
                    raise FormatError(f"{where}/{key}: {len(episode[key])} rows, {self.camera} has {rows}")
            if self.action is not None:
                if _action_kind(episode["action"], f"{where}/action") != self.action:
                    raise FormatError(f"{where}/action: {episode['action'].shape}, the first group's differ")
                if self.action[0] == "int":
                    ints.append(_rows(episode["action"], 1, rows))  # row 0: no action led to frame 0
            self.episodes.append((group, rows))
        if self.action is not None and self.action[0] == "int":
            self._count_actions(ints, f)

    def frames(self, f: Any, index: int, start: int, stop: int) -> np.ndarray:
        return to_rgb_frames(f[self.groups[index]][self.camera][start:stop], self.order)

    def labels(self, f: Any, index: int) -> Labels:
        episode, (_, length) = f[self.groups[index]], self.episodes[index]
        if self.action is None:
            action = np.zeros((length, 0), np.float32)
        else:
            action = _rows(episode["action"], 0, length)
            action = action[:, None] if action.ndim == 1 and self.action[0] == "float" else action
        return dict(
            action=action,
            reward=episode["reward"][:].astype(np.float32) if self.rewards else np.zeros(length, np.float32),
            is_terminal=episode["is_terminal"][:].astype(bool)
            if "is_terminal" in episode
            else np.zeros(length, bool),
        )


def read_layout(path: Path, f: Any, camera: str | None) -> _Layout:
    """The layout of open file ``f`` (module docstring), or FormatError naming the file and the dataset."""
    import h5py

    if "data" in f and isinstance(f["data"], h5py.Group):
        return _Robomimic(path, f, camera)
    if "ep_len" in f and "ep_offset" in f:
        return _StableWorldModel(path, f, camera)
    return _EpisodeGroups(path, f, camera)


class HDF5Episodes(FormatSource):
    """The episodes of an HDF5 file, or of a folder of HDF5 files, in one of LAYOUTS (module docstring)."""

    format = "hdf5"

    def __init__(
        self, path: str | Path, size: int | None = None, camera: str | None = None, cache_bytes: int = 2 << 30
    ) -> None:
        self.path = Path(path)
        self._h5py = needs("h5py", self.path)
        if self.path.is_dir():
            self.files = sorted(
                (
                    p
                    for p in self.path.iterdir()
                    if p.suffix.lower() in HDF5_SUFFIXES and not p.name.startswith(".")
                ),
                key=lambda p: natural_key(p.name),
            )
        else:
            self.files = [self.path]
        self._handles: dict[int, Any] = {}
        self._layouts: list[_Layout] = []
        self._index: list[tuple[int, int]] = []  # episode -> (file, episode within the file)
        self._lengths, self._names = [], []
        for i, file in enumerate(self.files):
            layout = read_layout(file, self._file(i), camera)
            if self._layouts:
                self._check_same(layout)
            self._layouts.append(layout)
            for j, (name, length) in enumerate(layout.episodes):
                self._index.append((i, j))
                self._lengths.append(length)
                self._names.append(name if len(self.files) == 1 else f"{file.name}/{name}")
        first = self._layouts[0]
        self.layout, self.cameras, self.camera, self.native = (
            first.name,
            first.cameras,
            first.camera,
            first.native,
        )
        self.rewards = first.rewards
        actions = [layout.action for layout in self._layouts]
        if first.action is None:
            self.action_dim, self.discrete = 0, False
        elif first.action[0] == "int":
            self.action_dim, self.discrete = max(a[1] for a in actions), True
        else:
            self.action_dim, self.discrete = first.action[1], False
        self._setup(size, cache_bytes, camera)

    def _check_same(self, layout: _Layout) -> None:
        first, where = self._layouts[0], f"{layout.path} and {self._layouts[0].path}"
        for what in ("name", "camera", "native", "rewards"):
            if getattr(layout, what) != getattr(first, what):
                raise FormatError(
                    f"{where}: {what} differs ({getattr(layout, what)!r} vs {getattr(first, what)!r}); the "
                    "files of one folder need the same layout, camera, frame size and datasets"
                )
        kinds = [a if a is None else a[0] for a in (layout.action, first.action)]
        if kinds[0] != kinds[1] or (kinds[0] == "float" and layout.action != first.action):
            raise FormatError(f"{where}: actions differ ({layout.action} vs {first.action})")

    def _file(self, i: int) -> Any:
        """File ``i`` open for reading (kept open: each read is a slice of it)."""
        if i not in self._handles:
            try:
                self._handles[i] = self._h5py.File(self.files[i], "r")
            except OSError as e:
                raise FormatError(f"{self.files[i]}: not a readable HDF5 file ({brief(e)})") from e
        return self._handles[i]

    def where(self, index: int) -> str:
        file, j = self._index[index]
        return f"{self.files[file]}: {self._layouts[file].episodes[j][0]}"

    def _load_frames(self, index: int, start: int, stop: int) -> np.ndarray:
        file, j = self._index[index]
        return fit_frames(self._layouts[file].frames(self._file(file), j, start, stop), self.size)

    def _load_labels(self, index: int) -> Labels:
        file, j = self._index[index]
        return self._layouts[file].labels(self._file(file), j)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def __getstate__(self) -> dict[str, Any]:  # open h5py files do not pickle: reopen them where unpickled
        state = dict(self.__dict__, _handles={})
        del state["_h5py"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        import h5py

        self.__dict__.update(state, _h5py=h5py)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if len(self.files) > 1:
            info["files"] = len(self.files)
        return info

    def provenance(self) -> dict[str, Any]:
        return dict(super().provenance(), files=len(self.files))
