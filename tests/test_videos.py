"""Video folders: decoding, cropping/resizing, sidecars, pixel formats, broken files."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from worldmodels import videos
from worldmodels.errors import SidecarError, VideoError
from worldmodels.videos import VideoFolder, is_video_folder, to_rgb

T, H, W, SIZE = 12, 48, 64, 32  # non-square frames: 16 columns are cropped, 8 on each side


def moving_pattern(length: int = T) -> np.ndarray:
    """(T, H, W, 3) uint8 with few colours (exact in a gif): stripes and a square moving right."""
    frames = np.zeros((length, H, W, 3), np.uint8)
    frames[:, :, ::8] = (40, 40, 200)
    for t in range(length):
        frames[t, 12:28, 8 + 3 * t : 24 + 3 * t] = (250, 200, 30)
    return frames


def expected(frames: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Center square crop, then antialiased resize: what every frame should become."""
    h, w = frames.shape[1:3]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = frames[:, top : top + side, left : left + side]
    return np.stack(
        [np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.BICUBIC)) for f in crop]
    )


def write(path: Path, frames: np.ndarray) -> Path:
    """Write frames as a video file (by suffix) or, for a suffix-less path, a folder of png frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == "":
        path.mkdir()
        for t, frame in enumerate(frames):
            iio.imwrite(path / f"frame{t}.png", frame)
    elif path.suffix == ".gif":
        iio.imwrite(path, frames, duration=100, loop=0)
    else:  # the default codec (libx264) cannot go into webm
        codec = "libvpx" if path.suffix == ".webm" else "libx264"
        iio.imwrite(path, frames, codec=codec, macro_block_size=1, quality=8)
    return path


@pytest.mark.parametrize(
    "name,tolerance", [("frames", 0), ("clip.gif", 0), ("clip.mp4", 6), ("clip.webm", 8)]
)
def test_round_trip(tmp_path, name, tolerance):
    frames = moving_pattern()
    write(tmp_path / name, frames)
    folder = VideoFolder(tmp_path, size=SIZE)
    assert len(folder) == 1 and folder.lengths() == [T]
    assert folder.action_dim == 0 and not folder.discrete
    want = expected(frames).astype(int)
    whole = folder.read(0, 0, T)["image"]
    assert whole.shape == (T, SIZE, SIZE, 3) and whole.dtype == np.uint8
    assert np.abs(whole - want).mean() <= tolerance
    window = folder.read(0, 5, 4)["image"]
    np.testing.assert_array_equal(window, whole[5:9])  # a window is the same frames, not the first ones
    if tolerance == 0:
        np.testing.assert_array_equal(whole, want)
    else:  # the moving square is where it should be in every frame of the lossy codecs
        error = np.abs(whole - want).mean(axis=(1, 2, 3))
        shifted = np.abs(whole[1:] - want[:-1]).mean(axis=(1, 2, 3))
        assert (error[1:] < shifted).all()


def test_window_flags_and_bounds(tmp_path):
    write(tmp_path / "clip.mp4", moving_pattern())
    folder = VideoFolder(tmp_path, size=16)
    head, tail, middle = folder.read(0, 0, 4), folder.read(0, T - 4, 4), folder.read(0, 4, 4)
    assert head["is_first"].tolist() == [True, False, False, False] and not head["is_last"].any()
    assert tail["is_last"].tolist() == [False, False, False, True] and not tail["is_first"].any()
    assert not middle["is_first"].any() and not middle["is_last"].any()
    for window in (head, tail, middle):
        assert window["action"].shape == (4, 0) and window["action"].dtype == np.float32
        assert window["reward"].dtype == np.float32 and not window["reward"].any()
        assert window["is_terminal"].dtype == bool and not window["is_terminal"].any()
    with pytest.raises(ValueError):
        folder.read(0, T - 2, 4)


def test_nested_folders_natural_order_and_odd_frame_sizes(tmp_path):
    write(tmp_path / "b" / "deep" / "clip.mp4", moving_pattern(7))
    frames = tmp_path / "a" / "episode"
    frames.mkdir(parents=True)
    shapes = [(30, 50), (50, 30), (17, 17), (8, 40)] * 3  # 12 frames of odd sizes
    for t, shape in enumerate(shapes):
        iio.imwrite(frames / f"f{t}.png", np.full((*shape, 3), 20 * t, np.uint8))
    (tmp_path / "b" / ".hidden.mp4").write_bytes(b"not a video")  # hidden files are ignored
    folder = VideoFolder(tmp_path, size=SIZE)
    assert folder.items == [frames, tmp_path / "b" / "deep" / "clip.mp4"]
    assert folder.lengths() == [12, 7]
    image = folder.read(0, 0, 12)["image"]
    assert image.shape == (12, SIZE, SIZE, 3)
    np.testing.assert_array_equal(image[:, 5, 5, 0], 20 * np.arange(12))  # f2 before f10


def test_sidecar_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    action, reward = rng.normal(size=(T, 2)).astype(np.float32), rng.normal(size=T).astype(np.float32)
    write(tmp_path / "clip.mp4", moving_pattern())
    np.savez(tmp_path / "clip.npz", action=action, reward=reward)
    write(tmp_path / "ep", moving_pattern())  # a frame folder's sidecar sits next to it
    np.savez(tmp_path / "ep.npz", action=action[::-1], reward=reward[::-1])
    assert is_video_folder(tmp_path)
    folder = VideoFolder(tmp_path, size=SIZE)
    assert folder.action_dim == 2 and not folder.discrete
    window = folder.read(folder.items.index(tmp_path / "clip.mp4"), 3, 6)
    np.testing.assert_array_equal(window["action"], action[3:9])
    np.testing.assert_array_equal(window["reward"], reward[3:9])
    window = folder.read(folder.items.index(tmp_path / "ep"), 0, 2)
    np.testing.assert_array_equal(window["action"], action[::-1][:2])


def test_discrete_sidecar_is_one_hot(tmp_path):
    write(tmp_path / "clip.gif", moving_pattern())
    action = np.array([-1, 0, 2, 1] * 3)  # -1: no action led to the first frame
    np.savez(tmp_path / "clip.npz", action=action)
    folder = VideoFolder(tmp_path, size=SIZE)
    assert folder.discrete and folder.action_dim == 3
    window = folder.read(0, 0, 4)
    np.testing.assert_array_equal(window["action"], [[0, 0, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0]])
    assert not window["reward"].any()
    np.savez(tmp_path / "clip.npz", action=action, num_actions=5)  # more actions than the data shows
    assert VideoFolder(tmp_path, size=SIZE).action_dim == 5


def test_one_hot_float_actions_in_a_sidecar_are_rejected_unless_marked_continuous(tmp_path):
    write(tmp_path / "clip.mp4", moving_pattern())
    one_hot = np.eye(3, dtype=np.float32)[np.arange(T) % 3]  # (T, 3) rows one-hot
    one_hot[0] = 0  # no action led to the first frame
    np.savez(tmp_path / "clip.npz", action=one_hot)
    with pytest.raises(SidecarError, match=r"clip\.npz.*one-hot or zero.*int \(T,\) indices"):
        VideoFolder(tmp_path, size=SIZE)
    np.savez(tmp_path / "clip.npz", action=one_hot, continuous=True)  # two buttons really are 0/1 values
    folder = VideoFolder(tmp_path, size=SIZE)
    assert not folder.discrete and folder.action_dim == 3
    np.testing.assert_array_equal(folder.read(0, 0, T)["action"], one_hot)
    np.savez(tmp_path / "clip.npz", action=np.full((T, 2), 0.5, np.float32))  # continuous values pass
    assert VideoFolder(tmp_path, size=SIZE).action_dim == 2


def test_bad_sidecars(tmp_path):
    write(tmp_path / "clip.mp4", moving_pattern())
    np.savez(tmp_path / "clip.npz", action=np.zeros((T - 2, 2), np.float32))
    with pytest.raises(SidecarError, match=rf"clip\.npz.*length {T - 2}.*clip\.mp4 has {T} frames"):
        VideoFolder(tmp_path)
    np.savez(tmp_path / "clip.npz", reward=np.full(T, np.nan, np.float32))
    with pytest.raises(SidecarError, match="NaN"):
        VideoFolder(tmp_path)
    np.savez(tmp_path / "clip.npz", action=np.zeros((T, 2), np.float32))
    write(tmp_path / "other.gif", moving_pattern())  # no sidecar next to a labelled video: ambiguous
    with pytest.raises(SidecarError, match="other"):
        VideoFolder(tmp_path)
    np.savez(tmp_path / "other.npz", action=np.zeros((T, 3), np.float32))
    with pytest.raises(SidecarError, match="width"):
        VideoFolder(tmp_path)


def test_pixel_formats_are_converted(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    iio.imwrite(frames / "0.png", np.full((40, 40), 77, np.uint8))  # grayscale
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[:] = (200, 100, 50, 128)
    iio.imwrite(frames / "1.png", rgba)
    iio.imwrite(frames / "2.png", np.full((40, 40), 60000, np.uint16))  # 16-bit grayscale
    palette = Image.new("P", (40, 40), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.save(frames / "3.png")
    Image.fromarray(np.full((40, 40, 3), (90, 60, 30), np.uint8)).save(frames / "4.jpg", quality=100)
    image = VideoFolder(tmp_path, size=8).read(0, 0, 5)["image"]
    assert image.shape == (5, 8, 8, 3)
    np.testing.assert_array_equal(image[0], np.full((8, 8, 3), 77))
    np.testing.assert_array_equal(
        image[1], np.full((8, 8, 3), np.round(np.array([200, 100, 50]) * 128 / 255))
    )
    np.testing.assert_array_equal(image[2], np.full((8, 8, 3), 233))  # 60000 * 255 / 65535; high byte: 234
    np.testing.assert_array_equal(image[3], np.full((8, 8, 3), (10, 20, 30)))
    assert np.abs(image[4].astype(int) - (90, 60, 30)).max() <= 2
    with pytest.raises(VideoError, match="odd.tif"):
        to_rgb(Image.new("F", (4, 4)), Path("odd.tif"))  # 32-bit float has no defined conversion


def test_broken_files_raise_naming_the_file(tmp_path):
    data = write(tmp_path / "ok" / "full.mp4", moving_pattern(40)).read_bytes()
    (tmp_path / "truncated").mkdir()
    (tmp_path / "truncated" / "half.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "zero.mp4").write_bytes(b"")
    (tmp_path / "noframes").mkdir()
    writer = imageio_ffmpeg.write_frames(str(tmp_path / "noframes" / "none.mp4"), (W, H), macro_block_size=1)
    writer.send(None)
    writer.close()  # ffmpeg writes a container without a single frame
    (tmp_path / "badframe" / "ep").mkdir(parents=True)
    iio.imwrite(tmp_path / "badframe" / "ep" / "0.png", moving_pattern(1)[0])
    good = (tmp_path / "badframe" / "ep" / "0.png").read_bytes()
    (tmp_path / "badframe" / "ep" / "1.png").write_bytes(good[: len(good) // 2])
    for folder, name in [("truncated", "half.mp4"), ("empty", "zero.mp4"), ("noframes", "none.mp4")]:
        with pytest.raises(VideoError, match=name):
            VideoFolder(tmp_path / folder)
    with pytest.raises(VideoError, match=r"1\.png"):
        VideoFolder(tmp_path / "badframe")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(VideoError, match="no video files"):
        VideoFolder(tmp_path / "nothing")


def test_skip_broken_files_with_a_notice(tmp_path, caplog):
    write(tmp_path / "good.mp4", moving_pattern())
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(VideoError, match="bad.mp4"):
        VideoFolder(tmp_path)
    folder = VideoFolder(tmp_path, on_error="skip")
    assert "skipping" in caplog.text and "bad.mp4" in caplog.text  # the worldmodels logger (notices.py)
    assert folder.items == [tmp_path / "good.mp4"] and folder.lengths() == [T]
    (tmp_path / "good.mp4").unlink()
    with pytest.raises(VideoError, match="none of its 1 videos"):
        VideoFolder(tmp_path, on_error="skip")


def test_refresh_decodes_only_new_files(tmp_path, monkeypatch, caplog):
    write(tmp_path / "a.mp4", moving_pattern())
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    folder = VideoFolder(tmp_path, size=SIZE, on_error="skip")
    assert "broken.mp4" in caplog.text
    calls = []
    count = videos.count_video_frames
    monkeypatch.setattr(videos, "count_video_frames", lambda path: calls.append(path.name) or count(path))
    write(tmp_path / "b.mp4", moving_pattern(9))
    caplog.clear()
    assert folder.refresh() == 1 and calls == ["b.mp4"]
    assert folder.refresh() == 0 and calls == ["b.mp4"]
    assert "broken.mp4" not in caplog.text  # the broken file was reported once, at construction
    assert folder.lengths() == [T, 9] and len(folder) == 2


def test_is_video_folder(tmp_path):
    write(tmp_path / "videos" / "sub" / "clip.webm", moving_pattern(2))
    np.savez(tmp_path / "videos" / "sub" / "clip.npz", reward=np.zeros(2))
    assert is_video_folder(tmp_path / "videos")
    write(tmp_path / "frames" / "ep", moving_pattern(2))
    assert is_video_folder(tmp_path / "frames") and is_video_folder(tmp_path / "frames" / "ep")
    store = tmp_path / "store"
    write(store / "clip.mp4", moving_pattern(2))
    np.savez(store / "20240101-episode-2.npz", image=np.zeros((2, 4, 4, 3), np.uint8))
    assert not is_video_folder(store)  # an episode file that is no video's sidecar
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "metadata.json").write_text("{}")
    write(tmp_path / "meta" / "clip.mp4", moving_pattern(2))
    assert not is_video_folder(tmp_path / "meta")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert not is_video_folder(tmp_path / "empty")
    assert not is_video_folder(tmp_path / "videos" / "sub" / "clip.webm")


def test_a_video_is_decoded_once_then_served_from_the_cache_within_its_budget(tmp_path, monkeypatch):
    import worldmodels.videos as videos

    for name in ("a.mp4", "b.mp4"):
        write(tmp_path / name, moving_pattern())
    decoded = []
    real = videos._decode_video
    monkeypatch.setattr(
        videos, "_decode_video", lambda p, a, b: decoded.append((p.name, a, b)) or real(p, a, b)
    )
    one = T * SIZE * SIZE * 3  # bytes of one decoded clip
    folder = VideoFolder(tmp_path, size=SIZE, cache_bytes=one)  # room for one clip
    first = folder.read(0, 2, 4)["image"]
    np.testing.assert_array_equal(folder.read(0, 2, 4)["image"], first)  # the same frames, from the cache
    np.testing.assert_array_equal(folder.read(0, 0, T)["image"][2:6], first)
    assert decoded == [("a.mp4", 0, T)]  # one whole decode for three windows
    folder.read(1, 0, 3)  # b.mp4 takes the budget: a.mp4 leaves
    folder.read(0, 0, 3)
    assert decoded == [("a.mp4", 0, T), ("b.mp4", 0, T), ("a.mp4", 0, T)]
    streaming = VideoFolder(tmp_path, size=SIZE, cache_bytes=0)
    decoded.clear()
    np.testing.assert_array_equal(streaming.read(0, 2, 4)["image"], first)
    streaming.read(0, 2, 4)
    assert decoded == [("a.mp4", 2, 6), ("a.mp4", 2, 6)]  # no budget: every window streams
