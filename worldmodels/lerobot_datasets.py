"""LeRobot dataset folders read with pyarrow (the parquet tables) and ffmpeg (the mp4 videos), without the
``lerobot`` package.

Versions (``codebase_version`` in ``meta/info.json``) and their layouts, as LeRobot writes them:

* **v2.0 / v2.1**: ``meta/info.json``, ``meta/episodes.jsonl`` (one line per episode: ``episode_index``,
  ``length``), ``data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet`` (one table per episode)
  and ``videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4`` (one video per episode
  and camera), ``episode_chunk = episode_index // chunks_size``; the paths come from info.json's ``data_path``
  and ``video_path`` templates. v2.1 adds ``meta/episodes_stats.jsonl``, which is not needed here.
* **v3.0**: ``meta/info.json``, ``meta/episodes/chunk-XXX/file-XXX.parquet`` (one row per episode:
  ``episode_index``, ``length``, ``data/chunk_index``, ``data/file_index``, and per camera
  ``videos/{video_key}/chunk_index``, ``file_index``, ``from_timestamp``), ``data/chunk-XXX/file-XXX.parquet``
  (many episodes per table, told apart by ``episode_index``) and ``videos/{video_key}/chunk-XXX/file-XXX.mp4``
  (many episodes per video, one after the other: an episode starts at frame ``round(from_timestamp * fps)``).

Cameras are the features of dtype ``video`` (mp4, decoded by ffmpeg as video folders are: any codec it has,
AV1 included) or ``image`` (PNG/JPEG bytes in the parquet table); ``camera`` picks one (default: the first in
info.json's ``features``). Per frame the table gives ``action`` (float (A,), or an integer: discrete),
``next.reward`` and ``next.done`` (optional), ``episode_index`` and ``frame_index``.

Convention: LeRobot's row t is (frame t, the action taken there, ``next.reward`` / ``next.done`` after it).
Frame t's action, reward and terminal flag become row t-1's; the last row's action and reward lead past the
stored frames and are dropped, and its ``next.done`` marks the last frame terminal (the frame after it is not
stored). Without ``next.reward`` rewards are zeros (``describe()`` says so); without ``action`` actions are
zero-width. ``is_first`` is each episode's first frame: a table row whose ``episode_index`` or ``frame_index``
disagrees with ``meta/episodes`` raises FormatError naming the file and the column.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from worldmodels.errors import FormatError
from worldmodels.formats import FormatSource, Labels, brief, fit_frames, needs, shifted

VERSIONS = ("v2.0", "v2.1", "v3.0")
CAMERA_DTYPES = ("video", "image")


def _column(table: Any, name: str, where: str) -> np.ndarray:
    """A parquet column as numpy: scalars (T,), lists / fixed-size lists (T, A)."""
    import pyarrow as pa

    if name not in table.column_names:
        raise FormatError(f"{where}: column {name!r} missing (info.json's features list it)")
    column = table.column(name).combine_chunks()
    if (
        pa.types.is_list(column.type)
        or pa.types.is_fixed_size_list(column.type)
        or pa.types.is_large_list(column.type)
    ):
        values = column.flatten().to_numpy(zero_copy_only=False)
        if len(column) and len(values) % len(column):
            raise FormatError(f"{where}: column {name!r} has rows of different lengths")
        return values.reshape(len(column), -1)
    return column.to_numpy(zero_copy_only=False)


class LeRobotEpisodes(FormatSource):
    """The episodes of a LeRobot dataset folder, v2.0, v2.1 or v3.0 (module docstring)."""

    format = "lerobot"

    def __init__(
        self, path: str | Path, size: int | None = None, camera: str | None = None, cache_bytes: int = 2 << 30
    ) -> None:
        self.path = Path(path)
        self._pq = needs("pyarrow.parquet", self.path)
        self.info_path = self.path / "meta" / "info.json"
        try:
            info = json.loads(self.info_path.read_text())
        except (OSError, ValueError) as e:
            raise FormatError(f"{self.info_path}: not readable JSON ({brief(e)})") from e
        self.version = info.get("codebase_version")
        if self.version not in VERSIONS:
            raise FormatError(
                f"{self.info_path}: codebase_version: {self.version!r}; LeRobot datasets {', '.join(VERSIONS)} "
                "are read (convert older ones with lerobot's conversion scripts)"
            )
        self.layout = "lerobot"
        for key in ("features", "fps", "data_path"):
            if key not in info:
                raise FormatError(f"{self.info_path}: {key}: missing")
        self.info, self.fps, self.features = info, float(info["fps"]), info["features"]
        self.cameras = [k for k, ft in self.features.items() if ft.get("dtype") in CAMERA_DTYPES]
        if not self.cameras:
            raise FormatError(
                f"{self.info_path}: features: no feature of dtype 'video' or 'image' (a camera); found "
                f"{sorted(self.features)}"
            )
        if camera is not None and camera not in self.cameras:
            raise FormatError(
                f"{self.info_path}: features: no camera {camera!r}; the cameras are {self.cameras}"
            )
        self.camera = camera or self.cameras[0]
        self.camera_dtype = self.features[self.camera]["dtype"]
        if self.camera_dtype == "video" and not info.get("video_path"):
            raise FormatError(
                f"{self.info_path}: video_path: missing, but {self.camera!r} is a video feature"
            )
        self.native = self._frame_size(self.features[self.camera])
        action = self.features.get("action")
        if action is None:
            self.action_dim, self.discrete = 0, False
        elif str(action.get("dtype", "")).startswith("float"):
            self.action_dim, self.discrete = int(np.prod(action.get("shape", [1]))), False
        elif str(action.get("dtype", "")).startswith(("int", "uint")) and list(action.get("shape", [1])) == [
            1
        ]:
            self.discrete = True
            n = action.get("names")
            self.action_dim = len(n) if isinstance(n, list) and len(n) > 1 else 0  # else: counted below
        else:
            raise FormatError(
                f"{self.info_path}: features.action: dtype {action.get('dtype')} shape {action.get('shape')}; "
                "expected float (A,) or an integer (1,) (discrete)"
            )
        self.rewards = "next.reward" in self.features
        self.done = "next.done" in self.features
        self.episodes = self._episodes_v2() if self.version.startswith("v2") else self._episodes_v3()
        self._lengths = [e["length"] for e in self.episodes]
        self._names = [f"episode_{e['episode_index']:06d}" for e in self.episodes]
        for e in self.episodes:
            for file in (e["data"], e.get("video")):
                if file is not None and not file.is_file():
                    raise FormatError(f"{file}: missing; meta/ lists episode {e['episode_index']} there")
        if self.discrete and self.action_dim == 0:
            largest = max(
                int(self.labels_raw(i)["action"].max(initial=-1)) for i in range(len(self.episodes))
            )
            self.action_dim = largest + 1
        self._setup(size, cache_bytes, camera)

    def _frame_size(self, feature: dict[str, Any]) -> tuple[int, int]:
        shape, names = list(feature.get("shape", [])), feature.get("names") or []
        if len(shape) != 3:
            raise FormatError(f"{self.info_path}: features.{self.camera}.shape: {shape}, expected 3 numbers")
        if list(names)[:1] in (["channels"], ["channel"]) or (shape[0] in (1, 3) and shape[-1] not in (1, 3)):
            return int(shape[1]), int(shape[2])
        return int(shape[0]), int(shape[1])

    def _episodes_v2(self) -> list[dict[str, Any]]:
        listing = self.path / "meta" / "episodes.jsonl"
        try:
            rows = [json.loads(line) for line in listing.read_text().splitlines() if line.strip()]
        except (OSError, ValueError) as e:
            raise FormatError(f"{listing}: not readable JSON lines ({brief(e)})") from e
        chunks = int(self.info.get("chunks_size", 1000))
        episodes = []
        for row in sorted(rows, key=lambda r: r.get("episode_index", -1)):
            if "episode_index" not in row or "length" not in row:
                raise FormatError(f"{listing}: a line lacks episode_index or length: {row}")
            index = int(row["episode_index"])
            keys = dict(episode_chunk=index // chunks, episode_index=index)
            episode = dict(
                episode_index=index,
                length=int(row["length"]),
                data=self.path / self.info["data_path"].format(**keys),
            )
            if self.camera_dtype == "video":
                video = self.info["video_path"].format(video_key=self.camera, **keys)
                episode.update(video=self.path / video, offset=0)
            episodes.append(episode)
        return episodes

    def _episodes_v3(self) -> list[dict[str, Any]]:
        files = sorted((self.path / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise FormatError(
                f"{self.path / 'meta' / 'episodes'}: no chunk-XXX/file-XXX.parquet (v3.0 episodes)"
            )
        video = [f"videos/{self.camera}/{k}" for k in ("chunk_index", "file_index", "from_timestamp")]
        columns = ["episode_index", "length", "data/chunk_index", "data/file_index"]
        columns += video if self.camera_dtype == "video" else []
        episodes = []
        for file in files:
            table = self._pq.read_table(
                file, columns=[c for c in columns if c in self._pq.read_schema(file).names]
            )
            values = {c: _column(table, c, str(file)) for c in columns}
            for row in range(table.num_rows):
                index = int(values["episode_index"][row])
                data = self.info["data_path"].format(
                    chunk_index=int(values["data/chunk_index"][row]),
                    file_index=int(values["data/file_index"][row]),
                )
                episode = dict(episode_index=index, length=int(values["length"][row]), data=self.path / data)
                if self.camera_dtype == "video":
                    path = self.info["video_path"].format(
                        video_key=self.camera,
                        chunk_index=int(values[video[0]][row]),
                        file_index=int(values[video[1]][row]),
                    )
                    start = float(values[video[2]][row])
                    episode.update(video=self.path / path, offset=int(round(start * self.fps)))
                episodes.append(episode)
        return sorted(episodes, key=lambda e: e["episode_index"])

    def where(self, index: int) -> str:
        return f"{self.episodes[index]['data']} (episode {self.episodes[index]['episode_index']})"

    def _table(self, index: int, columns: list[str]) -> Any:
        """The parquet rows of episode ``index``, checked against meta/ (length, episode_index, frame_index)."""
        episode = self.episodes[index]
        file, where = episode["data"], str(episode["data"])
        try:
            names = self._pq.read_schema(file).names
            missing = [c for c in ("episode_index", *columns) if c not in names]
            if missing:
                raise FormatError(f"{file}: column {missing[0]!r} missing (info.json's features list it)")
            wanted = [c for c in ("episode_index", "frame_index", *columns) if c in names]
            table = self._pq.read_table(
                file, columns=wanted, filters=[("episode_index", "=", episode["episode_index"])]
            )
        except FormatError:
            raise
        except Exception as e:  # pyarrow raises its own error types for a broken or foreign file
            raise FormatError(f"{file}: not a readable parquet table ({brief(e)})") from e
        if table.num_rows != episode["length"]:
            raise FormatError(
                f"{where}: episode_index: {table.num_rows} rows of episode {episode['episode_index']}, meta/ says "
                f"{episode['length']}"
            )
        if "frame_index" in table.column_names:
            frames = _column(table, "frame_index", where)
            if not np.array_equal(frames, np.arange(len(frames))):
                raise FormatError(f"{where}: frame_index: not 0, 1, 2, ... in the order of the rows")
        return table

    def labels_raw(self, index: int) -> Labels:
        """The table's action (T, A) / (T,), next.reward (T,), next.done (T,) of episode ``index``, as stored."""
        columns = [c for c in ("action", "next.reward", "next.done") if c in self.features]
        table, where = self._table(index, columns), str(self.episodes[index]["data"])
        raw = {c: _column(table, c, where) for c in columns}
        if "action" in raw and self.discrete:
            raw["action"] = raw["action"].reshape(-1).astype(np.int64)
        return raw

    def _load_labels(self, index: int) -> Labels:
        raw, length = self.labels_raw(index), self._lengths[index]
        if "action" in raw and not self.discrete:
            action = shifted(raw["action"].astype(np.float32).reshape(length, self.action_dim), length)
        elif "action" in raw:
            action = shifted(raw["action"], length, -1)
        else:
            action = np.zeros((length, 0), np.float32)
        reward = raw.get("next.reward")
        done = raw["next.done"].reshape(length).astype(bool) if "next.done" in raw else np.zeros(length, bool)
        terminal = shifted(done, length, False)
        terminal[-1] |= done[-1]  # the step out of the last stored frame ended the episode
        return dict(
            action=action,
            reward=np.zeros(length, np.float32)
            if reward is None
            else shifted(reward.astype(np.float32).reshape(length), length),
            is_terminal=terminal,
        )

    def _load_frames(self, index: int, start: int, stop: int) -> np.ndarray:
        episode = self.episodes[index]
        if self.camera_dtype == "video":
            from worldmodels.videos import decode_frames

            offset = episode["offset"]
            return decode_frames(episode["video"], self.size, offset + start, offset + stop)
        import io

        from PIL import Image

        from worldmodels.videos import to_rgb

        cells = self._table(index, [self.camera]).column(self.camera).to_pylist()[start:stop]
        frames = []
        for cell in cells:
            data = cell.get("bytes") if isinstance(cell, dict) else None
            if not data:
                raise FormatError(
                    f"{self.where(index)}: column {self.camera!r}: an image cell holds no bytes (images stored "
                    "as paths outside the table are not read)"
                )
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                frames.append(np.asarray(to_rgb(image, episode["data"])))
        return fit_frames(np.stack(frames), self.size)

    def describe(self) -> dict[str, Any]:
        return dict(super().describe(), fps=self.fps, robot_type=self.info.get("robot_type"))
