"""Video datasets: a folder of video files and frame folders, read as frame sequences at the model's size.

``VideoFolder(root, size)`` searches ``root`` recursively for

* video files (``VIDEO_SUFFIXES``): mp4 / webm / avi / mov decoded by ffmpeg (imageio-ffmpeg), gif by Pillow;
* frame folders: a directory holding image frames (``FRAME_SUFFIXES``), ordered by the natural order of the
  file names (``frame2.png`` before ``frame10.png``).

Names starting with ``.`` are ignored. Each video file or frame folder is one *item*, an episode of frames.

Frames become ``(size, size, 3)`` uint8: **center-crop to a square** (the largest one, so the long side loses
equal margins), then **resize to size x size** with Pillow's antialiased bicubic filter. Every frame is
converted on its own, so frames of odd sizes within one frame folder are fine. Pixel formats: grayscale is
repeated to RGB, RGBA / LA are composited onto black (a transparent pixel becomes black), palette images go
through their palette, 16-bit images are scaled to 8 bits by 255/65535, CMYK / YCbCr use Pillow's conversion;
anything else (e.g. float images) raises ``VideoError``. Video files are converted to RGB by ffmpeg, which
drops an alpha channel.

Optional *sidecar* ``<stem>.npz`` next to a video file (``<folder>.npz`` next to a frame folder) labels the
frames, one row per frame, following the convention in ``worldmodels/__init__.py`` (``action[t]`` led to
frame ``t``):

    action       float (T, A) continuous, or int (T,) discrete (-1: no action, e.g. at t = 0)
    reward       float (T,)
    num_actions  int scalar, optional: the number of discrete actions (default: largest action + 1)
    continuous   bool scalar, optional: True says a float (T, A) action of 0s and 1s is continuous; without it
                 such an array, each row one-hot or all zero, is rejected as a likely one-hot encoding of
                 discrete actions (store those as int (T,) indices instead)

Actions inferred by an inverse-dynamics model (``worldmodels label``, worldmodels/inverse.py) say so, so that
they are never taken for recorded ones (``INFERRED_KEYS``):

    inferred          bool scalar: True, the actions were inferred from the frames, not recorded
    inferred_model    str scalar: the checkpoint that inferred them
    inferred_n        int scalar: its step gap n (it read frames t - 1 and t - 1 + n for action[t])
    inferred_history  int scalar: the frames before frame t - 1 it read too

Either every item has a sidecar with the same arrays (action, reward) or none has one; the scalars above may
differ between items (a folder can mix recorded and inferred actions: ``VideoFolder.inferred`` counts the
items whose actions are inferred). Without sidecars actions are ``(T, 0)`` and rewards zeros. Discrete actions
are served one-hot.

Memory stays bounded: the scan decodes each item once to count and validate its frames (so a broken file
fails at construction, not mid-training) without keeping frames, and ``read`` decodes only the frames of
the window (ffmpeg streams from the start of the file up to the window end and hands over only the window's
frames), so the dataset can be far larger than RAM. Streaming is exact where seeking by timestamp is not,
but a window late in a long video costs decoding all frames before it: cut long or high-resolution videos
into short clips at a small size first, e.g.
``ffmpeg -i long.mp4 -vf scale=-2:128 -f segment -segment_time 60 -reset_timestamps 1 clip%03d.mp4``.
Counts are cached in memory per file size and mtime, so ``refresh()`` decodes only new or changed files.
"""

from __future__ import annotations

import os
import re
import subprocess
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from worldmodels import notices
from worldmodels.errors import SidecarError, VideoError

VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mov", ".gif")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
INFERRED_KEYS = ("inferred", "inferred_model", "inferred_n", "inferred_history")  # module docstring
SIDECAR_KEYS = ("action", "reward", "num_actions", "continuous", *INFERRED_KEYS)
SIDECAR_SCALARS = ("num_actions", "continuous", *INFERRED_KEYS)  # about the arrays; may differ between items
EPISODE_STORE_METADATA = "metadata.json"  # worldmodels/store.py


def natural_key(name: str) -> list:
    """Sort key: digit runs compare as numbers, so ``frame2`` < ``frame10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _visible(names: list[str]) -> list[str]:
    return [n for n in names if not n.startswith(".")]


def _suffix(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def sidecar_path(item: Path) -> Path:
    """``clip.mp4`` -> ``clip.npz``; frame folder ``ep1/`` -> ``ep1.npz`` next to it."""
    return item.parent / (item.name + ".npz") if item.is_dir() else item.with_suffix(".npz")


def find_items(root: Path) -> dict[Path, list[str] | None]:
    """Every video file (-> None) and frame folder (-> its frame names in natural order) under ``root``."""
    found: dict[Path, list[str] | None] = {}
    for folder, dirnames, filenames in os.walk(root):
        dirnames[:] = _visible(dirnames)
        names = _visible(filenames)
        frames = sorted((n for n in names if _suffix(n) in FRAME_SUFFIXES), key=natural_key)
        if frames:
            found[Path(folder)] = frames
        found.update((Path(folder, n), None) for n in names if _suffix(n) in VIDEO_SUFFIXES)
    order = sorted(found, key=lambda p: natural_key(p.relative_to(root).as_posix()))
    return {p: found[p] for p in order}


def is_video_folder(path: str | Path) -> bool:
    """True if ``path`` is a directory holding (at any depth) a video file or a frame folder, and no
    episode-store files at its top level (``metadata.json``, or ``*.npz`` files that are not sidecars)."""
    path = Path(path)
    if not path.is_dir() or (path / EPISODE_STORE_METADATA).exists():
        return False
    names = {n.lower() for n in os.listdir(path)}
    for npz in (n for n in names if n.endswith(".npz")):
        stem = npz[: -len(".npz")]
        if stem not in names and not any(stem + s in names for s in VIDEO_SUFFIXES):
            return False  # an episode file, not a sidecar
    for _, dirnames, filenames in os.walk(path):
        dirnames[:] = _visible(dirnames)
        if any(_suffix(n) in VIDEO_SUFFIXES + FRAME_SUFFIXES for n in _visible(filenames)):
            return True
    return False


# --- frames -------------------------------------------------------------------------------------------


def to_rgb(image: Image.Image, path: Path) -> Image.Image:
    """Any well-defined Pillow image mode -> 8-bit RGB (see the module docstring). Raises VideoError."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("L", "1", "CMYK", "YCbCr"):
        return image.convert("RGB")  # grayscale: the value repeated in all three channels
    if mode == "P" and "transparency" not in image.info:
        return image.convert("RGB")  # through the palette
    if mode in ("P", "PA"):
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "RGBa", "LA", "La"):
        black = Image.new("RGBA", image.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, image.convert("RGBA")).convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        gray = np.asarray(image).astype(np.float64)  # (H, W)
        if gray.min() >= 0 and gray.max() <= 65535:
            gray8 = np.round(gray * (255 / 65535)).astype(np.uint8)
            return Image.fromarray(np.repeat(gray8[..., None], 3, axis=-1))
    raise VideoError(
        f"{path}: pixel mode {mode!r} has no defined conversion to 8-bit RGB; "
        "save the frames as 8- or 16-bit RGB / grayscale PNG or JPEG"
    )


def square(image: Image.Image, size: int) -> np.ndarray:
    """Center-crop to the largest square, resize with antialiasing -> (size, size, 3) uint8."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC))


def _open_image(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except (OSError, UnidentifiedImageError) as e:
        raise VideoError(f"{path}: not a readable image ({e}); remove or replace it") from e


def load_frame(path: Path) -> Image.Image:
    """One frame file, decoded, EXIF-rotated and converted to RGB."""
    with _open_image(path) as image:
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as e:
            raise VideoError(f"{path}: truncated or corrupt image ({e}); remove or replace it") from e
        return to_rgb(ImageOps.exif_transpose(image), path)


def _decode_gif(path: Path, start: int, stop: int) -> Iterator[Image.Image]:
    """RGB frames start..stop-1 of a gif (Pillow composites gif frames onto the previous ones)."""
    with _open_image(path) as gif:
        try:
            for i in range(start, min(stop, getattr(gif, "n_frames", 1))):
                gif.seek(i)
                gif.load()
                yield to_rgb(gif, path)
        except (OSError, EOFError, SyntaxError, ValueError) as e:
            raise VideoError(f"{path}: truncated or corrupt gif ({e}); re-export it or remove it") from e


# --- ffmpeg -------------------------------------------------------------------------------------------

# Every decoded frame once, frame numbers as decoded (no duplication or dropping by timestamps).
_FFMPEG_OUT = ["-map", "0:v:0", "-fps_mode", "passthrough"]


def _ffmpeg_fix(path: Path) -> str:
    return (
        f"the file may be truncated or corrupt: re-encode it (ffmpeg -i {path} -c:v libx264 fixed.mp4), "
        "remove it, or pass on_error='skip'"
    )


def count_video_frames(path: Path) -> int:
    """Decode every frame of a video with ffmpeg (nothing kept) and count them. Raises VideoError."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-nostats", "-progress", "pipe:1"]
    cmd += ["-i", str(path), *_FFMPEG_OUT, "-f", "null", "-"]
    run = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    errors = [line for line in run.stderr.splitlines() if line.strip()]
    if run.returncode != 0 or errors:
        if any("matches no streams" in line for line in errors):
            raise VideoError(
                f"{path}: holds no video stream (zero frames); remove it or pass on_error='skip'"
            )
        raise VideoError(f"{path}: ffmpeg cannot decode it ({'; '.join(errors[-3:])}); {_ffmpeg_fix(path)}")
    counts = [int(line[len("frame=") :]) for line in run.stdout.splitlines() if line.startswith("frame=")]
    if not counts or counts[-1] == 0:
        raise VideoError(f"{path}: the video has zero frames; remove it or pass on_error='skip'")
    return counts[-1]


def _decode_video(path: Path, start: int, stop: int) -> Iterator[Image.Image]:
    """RGB frames start..stop-1, streamed by ffmpeg; the ``select`` filter passes on only the window."""
    select = ["-vf", f"select=gte(n\\,{start})", "-frames:v", str(stop - start)]
    frames = imageio_ffmpeg.read_frames(str(path), output_params=_FFMPEG_OUT + select)
    try:
        width, height = next(frames)["size"]
        for data in frames:
            yield Image.fromarray(np.frombuffer(data, np.uint8).reshape(height, width, 3))
    except (OSError, RuntimeError) as e:
        raise VideoError(f"{path}: ffmpeg failed while reading ({e}); {_ffmpeg_fix(path)}") from e
    finally:
        frames.close()  # stops ffmpeg


# --- sidecars -----------------------------------------------------------------------------------------


def looks_one_hot(action: np.ndarray) -> bool:
    """action (T, A), A >= 2: every value 0 or 1, every row summing to 1 or 0, and some row to 1."""
    if action.ndim != 2 or action.shape[1] < 2 or not np.isin(action, (0, 1)).all():
        return False
    sums = action.sum(-1)
    return bool(np.isin(sums, (0, 1)).all() and (sums == 1).any())


def load_sidecar(path: Path, item: Path, frames: int) -> dict[str, np.ndarray]:
    """The checked arrays of sidecar ``path`` for ``item`` of ``frames`` frames. Raises SidecarError."""
    try:
        with np.load(path) as npz:
            data = {k: npz[k] for k in npz.files if k in SIDECAR_KEYS}
            found = list(npz.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise SidecarError(f"{path}: unreadable sidecar of {item} ({e}); rewrite it with np.savez") from e
    if "action" not in data and "reward" not in data:
        raise SidecarError(f"{path}: sidecar of {item} holds {found}, expected 'action' and/or 'reward'")
    action = data.get("action")
    if action is not None:
        discrete = action.ndim == 1 and action.dtype.kind in "iu"
        if not discrete and not (action.ndim == 2 and action.dtype.kind in "fiu"):
            raise SidecarError(
                f"{path}: 'action' is {action.dtype} {action.shape}; use float (T, A) for continuous "
                "actions (a single one as (T, 1)) or int (T,) for discrete ones"
            )
        if discrete and action.min(initial=0) < -1:
            raise SidecarError(f"{path}: discrete actions must be >= 0 (or -1 for no action)")
        if not discrete and not bool(data.get("continuous", False)) and looks_one_hot(action):
            raise SidecarError(
                f"{path}: 'action' is float {action.shape} with rows one-hot or zero, which reads as continuous; "
                "store discrete actions as int (T,) indices (np.argmax(action, -1), -1 where a row is zero), "
                "or add continuous=True to the sidecar if they are continuous"
            )
    if "num_actions" in data:
        n = data["num_actions"]
        if action is None or action.ndim != 1 or n.ndim != 0 or n.dtype.kind not in "iu":
            raise SidecarError(f"{path}: 'num_actions' must be an int scalar next to int (T,) actions")
        if int(n) <= action.max(initial=-1):
            raise SidecarError(f"{path}: num_actions={int(n)} but an action is {int(action.max())}")
    _check_inferred(path, data)
    reward = data.get("reward")
    if reward is not None and (reward.ndim != 1 or reward.dtype.kind not in "fiu"):
        raise SidecarError(f"{path}: 'reward' is {reward.dtype} {reward.shape}; expected float (T,)")
    for key in ("action", "reward"):
        if key not in data:
            continue
        if len(data[key]) != frames:
            raise SidecarError(
                f"{path}: '{key}' has length {len(data[key])} but {item} has {frames} frames; "
                "a sidecar needs one row per frame"
            )
        if not np.isfinite(data[key]).all():
            raise SidecarError(f"{path}: '{key}' holds NaN or inf; sidecar values must be finite")
    return data


def _check_inferred(path: Path, data: dict[str, np.ndarray]) -> None:
    """The INFERRED_KEYS of a sidecar: scalars of their types, and ``inferred`` only next to actions."""
    kinds = {"inferred": "b", "inferred_model": "U", "inferred_n": "iu", "inferred_history": "iu"}
    for key, kind in kinds.items():
        if key in data and (data[key].ndim != 0 or data[key].dtype.kind not in kind):
            raise SidecarError(
                f"{path}: '{key}' is {data[key].dtype} {data[key].shape}; expected a scalar of kind {kind!r} "
                "(worldmodels label writes it: relabel with `worldmodels label --overwrite`)"
            )
    if bool(data.get("inferred", False)) and "action" not in data:
        raise SidecarError(f"{path}: says inferred=True but holds no 'action'; relabel it or remove it")
    if int(data.get("inferred_n", 1)) < 1 or int(data.get("inferred_history", 0)) < 0:
        raise SidecarError(f"{path}: inferred_n must be >= 1 and inferred_history >= 0; relabel it")


def is_inferred(sidecar: dict[str, np.ndarray]) -> bool:
    """Whether the arrays of a sidecar (``load_sidecar``) hold actions inferred by a model, not recorded."""
    return bool(sidecar.get("inferred", False))


def decode_frames(
    item: Path, size: int, start: int = 0, stop: int | None = None, names: list[str] | None = None
) -> np.ndarray:
    """Frames start..stop-1 (all to the end when ``stop`` is None) of a video file or frame folder, squared
    and resized as every frame is (module docstring) -> (L, size, size, 3) uint8. ``names``: a frame folder's
    frame files in order (default: listed now). Raises VideoError."""
    item = Path(item)
    if item.is_dir():
        if names is None:
            names = sorted(
                (n for n in _visible(os.listdir(item)) if _suffix(n) in FRAME_SUFFIXES), key=natural_key
            )
        frames: Iterator[Image.Image] = (load_frame(item / name) for name in names[start:stop])
    elif _suffix(item.name) == ".gif":
        frames = _decode_gif(item, start, 2**62 if stop is None else stop)
    else:
        frames = _decode_video(item, start, 2**62 if stop is None else stop)
    images = [square(frame, size) for frame in frames]
    if not images:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack(images)


# --- the dataset --------------------------------------------------------------------------------------


class VideoFolder:
    """Video files and frame folders under ``root`` as episodes of ``(size, size, 3)`` frames.

    ``on_error="raise"`` raises ``VideoError`` for the first broken item; ``"skip"`` leaves broken items
    out with a warning naming each (the folder still raises if nothing readable is left). Folder-wide
    sidecar disagreements (labelled next to unlabelled items, different action widths) always raise.

    ``cache_bytes`` bounds a cache of decoded items at the model's size: the first window read from an item
    that fits decodes the whole item once, later windows are slices of it, so that training on a folder costs
    about what training on an episode store of the same frames does (a store keeps decoded episodes the same
    way); the least recently read items leave first. Items larger than the budget stream every window.
    """

    def __init__(
        self, root: str | Path, size: int = 64, on_error: str = "raise", cache_bytes: int = 1 << 30
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        self.root = Path(root)
        self.cache_bytes = cache_bytes  # decoded items kept, least recently read dropped first (0: none)
        self._decoded: OrderedDict[tuple[Path, tuple], np.ndarray] = (
            OrderedDict()
        )  # (item, signature) -> frames
        self.size = size
        self.on_error = on_error
        self.items: list[Path] = []
        self.action_dim = 0
        self.discrete = False
        self._lengths: list[int] = []
        self._frames: dict[Path, list[str]] = {}  # frame folder -> frame names in order
        self._scans: dict[Path, tuple[tuple, int | VideoError]] = {}  # item -> (signature, count or error)
        self._sidecars: dict[Path, tuple[tuple, dict[str, np.ndarray]]] = {}  # path -> (signature, arrays)
        self._labels: frozenset[str] = frozenset()  # the sidecar arrays every item has
        self.inferred = 0  # items whose actions a model inferred (sidecar inferred=True), not recorded
        self.inferred_models: list[str] = []  # the checkpoints that inferred them
        if not self.root.is_dir():
            raise VideoError(f"{self.root}: not a directory; give the folder that holds the videos")
        self.refresh()

    def __len__(self) -> int:
        return len(self.items)

    def lengths(self) -> list[int]:
        """Frame count of each item."""
        return list(self._lengths)

    # -- scanning ------------------------------------------------------------------------------------

    def _scan(self, item: Path, frames: list[str] | None) -> tuple[tuple, int | VideoError]:
        """(signature, frame count or the error), decoding the whole item once unless it is unchanged.
        A frame folder's signature changes when a frame is added, removed or renamed."""
        try:
            stat = os.stat(item)
        except OSError as e:  # vanished or unreadable since the listing
            return (), VideoError(f"{item}: cannot read it ({e}); check that it exists and is readable")
        signature = (stat.st_size, stat.st_mtime_ns, len(frames or ()), hash(tuple(frames or ())))
        if item in self._scans and self._scans[item][0] == signature:
            return self._scans[item]
        try:
            if frames is not None:
                for name in frames:
                    load_frame(item / name)
                return signature, len(frames)
            if _suffix(item.name) != ".gif":
                return signature, count_video_frames(item)
            count = sum(1 for _ in _decode_gif(item, 0, 2**62))
            return signature, count or VideoError(f"{item}: the gif has zero frames; remove it")
        except VideoError as e:
            return signature, e

    def _skip(self, error: VideoError) -> None:
        if self.on_error == "raise":
            raise error
        notices.skipped(f"skipping {error}")

    def _sidecar(self, item: Path, frames: int) -> dict[str, np.ndarray]:
        """The checked sidecar arrays of ``item`` ({} without a sidecar), kept while the file is unchanged."""
        path = sidecar_path(item)
        if not path.is_file():
            return {}
        stat = path.stat()
        signature = (stat.st_size, stat.st_mtime_ns, frames)
        if path not in self._sidecars or self._sidecars[path][0] != signature:
            self._sidecars[path] = (signature, load_sidecar(path, item, frames))
        return self._sidecars[path][1]

    def _check_sidecars(self, items: list[Path], lengths: list[int]) -> list[int]:
        """Validate each item's sidecar and their agreement; sets action_dim and discrete.
        Returns the positions of the items kept (a bad sidecar skips its item when asked to)."""
        keep, sidecars = [], []
        for i, (item, n) in enumerate(zip(items, lengths)):
            try:
                sidecars.append(self._sidecar(item, n))
                keep.append(i)
            except SidecarError as e:
                self._skip(e)
        paths = [sidecar_path(items[i]) for i in keep]
        self._sidecars = {p: self._sidecars[p] for p in paths if p in self._sidecars}  # forget removed ones
        if not keep:
            return keep
        labels = [frozenset(d) - set(SIDECAR_SCALARS) for d in sidecars]
        self.inferred = sum(is_inferred(d) for d in sidecars)
        self.inferred_models = sorted({str(d["inferred_model"]) for d in sidecars if "inferred_model" in d})
        if any(lab != labels[0] for lab in labels):
            j = next(j for j, lab in enumerate(labels) if lab != labels[0])
            raise SidecarError(
                f"{paths[j]} labels {sorted(labels[j]) or 'nothing (no such file)'} but {paths[0]} labels "
                f"{sorted(labels[0]) or 'nothing (no such file)'}: mixing labelled and unlabelled items is "
                "ambiguous; give every video a sidecar with the same arrays, or none"
            )
        self._labels = labels[0]
        actions = [d["action"] for d in sidecars if "action" in d]
        if any(a.ndim != actions[0].ndim for a in actions):
            j = next(j for j, a in enumerate(actions) if a.ndim != actions[0].ndim)
            raise SidecarError(
                f"{paths[j]} and {paths[0]}: one holds discrete (int) actions, the other continuous (float) "
                "ones; use one kind for the whole folder"
            )
        self.discrete = bool(actions) and actions[0].ndim == 1
        if self.discrete:
            self.action_dim = max(
                int(d.get("num_actions", d["action"].max(initial=-1) + 1)) for d in sidecars
            )
        elif actions:
            if any(a.shape[1] != actions[0].shape[1] for a in actions):
                j = next(j for j, a in enumerate(actions) if a.shape[1] != actions[0].shape[1])
                raise SidecarError(
                    f"{paths[j]} has {actions[j].shape[1]} action dimensions but {paths[0]} has "
                    f"{actions[0].shape[1]}; all sidecars need the same width"
                )
            self.action_dim = actions[0].shape[1]
        else:
            self.action_dim = 0
        return keep

    def refresh(self) -> int:
        """Rescan ``root``: new or changed files are decoded once to count their frames.

        Returns how many items were added, removed or changed length (0: nothing new), so that a
        sampler knows to re-index."""
        found = find_items(self.root)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            scans = dict(zip(found, pool.map(self._scan, found, found.values())))
        items, lengths = [], []
        for item, (_, count) in scans.items():
            if isinstance(count, VideoError):
                if not (self.on_error == "skip" and self._scans.get(item) == scans[item]):  # not yet reported
                    self._skip(count)
                continue
            items.append(item)
            lengths.append(count)
        keep = self._check_sidecars(items, lengths)
        items, lengths = [items[i] for i in keep], [lengths[i] for i in keep]
        if not items and found:
            raise VideoError(
                f"{self.root}: none of its {len(found)} videos is readable (see the skipped files above)"
            )
        if not items:
            raise VideoError(
                f"{self.root}: no video files ({' '.join(VIDEO_SUFFIXES)}) and no frame folders "
                f"({' '.join(FRAME_SUFFIXES)}) in it; give the folder that holds your videos"
            )
        changed = len(set(zip(items, lengths)) ^ set(zip(self.items, self._lengths)))
        self.items, self._lengths, self._scans = items, lengths, scans
        self._frames = {item: frames for item, frames in found.items() if frames is not None}
        current = {(item, scans[item][0]) for item in items}
        for key in [k for k in self._decoded if k not in current]:  # removed or changed on disk
            del self._decoded[key]
        return changed

    # -- reading -------------------------------------------------------------------------------------

    def _frames_of(self, item: Path, start: int, stop: int, total: int) -> np.ndarray:
        """Frames start..stop-1 (L, size, size, 3) uint8 of ``item``, through the cache of decoded items."""
        key = (item, self._scans[item][0])
        if key in self._decoded:
            self._decoded.move_to_end(key)
            return self._decoded[key][start:stop].copy()
        whole = total * self.size * self.size * 3 <= self.cache_bytes
        first, last = (0, total) if whole else (start, stop)
        frames = decode_frames(item, self.size, first, last, self._frames.get(item))
        if len(frames) != last - first:
            raise VideoError(
                f"{item}: gave {len(frames)} frames where {last - first} were expected; it changed on disk since "
                "the scan: call refresh()"
            )
        if whole:
            self._decoded[key] = frames
            while sum(v.nbytes for v in self._decoded.values()) > self.cache_bytes:
                self._decoded.popitem(last=False)
            return frames[start:stop].copy()
        return frames

    def read(self, index: int, start: int, length: int) -> dict[str, np.ndarray]:
        """Frames start..start+length-1 of item ``index`` and their labels (L = length):

        image (L, size, size, 3) uint8, action (L, A) float32 (one-hot if discrete; A = 0 without
        sidecars), reward (L,) float32, is_first / is_last / is_terminal (L,) bool."""
        item, total = self.items[index], self._lengths[index]
        stop = start + length
        if start < 0 or length < 1 or stop > total:
            raise ValueError(f"window [{start}, {stop}) is outside the {total} frames of {item}")
        images = self._frames_of(item, start, stop, total)
        labels = self._sidecars[sidecar_path(item)][1] if self._labels else {}
        action = np.zeros((length, self.action_dim), np.float32)  # (L, A)
        if "action" in labels and self.discrete:
            window = labels["action"][start:stop]
            action[np.nonzero(window >= 0)[0], window[window >= 0]] = 1.0  # -1: no action, a zero row
        elif "action" in labels:
            action[:] = labels["action"][start:stop]
        reward = np.zeros(length, np.float32)
        if "reward" in labels:
            reward[:] = labels["reward"][start:stop]
        steps = np.arange(start, stop)
        return dict(
            image=images,  # (L, size, size, 3) uint8
            action=action,
            reward=reward,
            is_first=steps == 0,
            is_last=steps == total - 1,
            is_terminal=np.zeros(length, bool),
        )
