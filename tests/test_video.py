"""Video input and output: the bundled clip, GIF and PNG folders, and every bad input."""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av", reason='video tests need PyAV: pip install -e ".[video]"')

from noisewarp.video import VideoError, content_hash, open_video, write_video  # noqa: E402

CLIP = Path(__file__).resolve().parent.parent / "noisewarp" / "data" / "bigbuckbunny.mp4"


def smooth_frames(count, height=40, width=56):
    """Colour ramps that move one pixel per frame: survive GIF's palette and JPEG."""
    rows, cols = np.mgrid[0:height, 0:width]
    return [
        np.stack(
            [(cols + 3 * k) * 4 % 256, rows * 5 % 256, np.full_like(rows, 60 * k % 256)], -1
        ).astype(np.uint8)
        for k in range(count)
    ]


def test_bundled_clip_metadata_and_size():
    reader = open_video(CLIP)
    assert (reader.frame_count, reader.size, reader.fps) == (80, (360, 640), 25.0)
    assert CLIP.stat().st_size < 1_000_000


def test_bundled_clip_start_stride_frames_resize():
    every = list(open_video(CLIP, size=128, frames=30))
    assert every[0].shape == (72, 128, 3) and every[0].dtype == np.uint8
    reader = open_video(CLIP, start=10, stride=3, frames=5, size=128)
    assert reader.frame_count == 5 and reader.fps == pytest.approx(25.0 / 3)
    picked = list(reader)
    assert len(picked) == 5
    for got, want in zip(picked, every[10::3][:5], strict=True):
        np.testing.assert_array_equal(got, want)
    # Size as (height, width), and a second iteration starts again.
    pair = open_video(CLIP, frames=2, size=(50, 60))
    assert [f.shape for f in pair] == [(50, 60, 3)] * 2 and len(list(pair)) == 2


def test_gif_round_trip(tmp_path):
    frames = smooth_frames(5)
    path = tmp_path / "clip.gif"
    assert write_video(path, frames, fps=10) == 5
    reader = open_video(path)
    assert reader.frame_count == 5 and reader.size == (40, 56)
    back = list(reader)
    assert len(back) == 5
    for got, want in zip(back, frames, strict=True):
        assert np.abs(got.astype(int) - want).mean() < 24  # rgb8: 3-3-2 bit palette


def test_png_and_jpeg_folder(tmp_path):
    from PIL import Image

    frames = smooth_frames(11)
    for k, frame in enumerate(frames):  # names sort as numbers: f2 before f10
        Image.fromarray(frame).save(tmp_path / f"f{k}.png")
    reader = open_video(tmp_path, fps=12)
    assert reader.frame_count == 11 and reader.fps == 12
    for got, want in zip(reader, frames, strict=True):
        np.testing.assert_array_equal(got, want)
    jpeg = tmp_path / "jpeg"
    jpeg.mkdir()
    for k, frame in enumerate(frames[:3]):
        Image.fromarray(frame).save(jpeg / f"f{k}.JPG", quality=95)
    back = list(open_video(jpeg, stride=2))
    assert len(back) == 2 and np.abs(back[1].astype(int) - frames[2]).mean() < 8


def test_mp4_round_trip_pads_odd_sizes(tmp_path):
    path = tmp_path / "odd.mp4"
    assert write_video(path, smooth_frames(6, 33, 47), fps=24) == 6
    reader = open_video(path)
    assert (reader.frame_count, reader.size, reader.fps) == (6, (34, 48), 24.0)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        open_video(tmp_path / "nope.mp4")


def test_truncated_mp4_names_file_and_frame(tmp_path):
    path = tmp_path / "cut.mp4"
    path.write_bytes(CLIP.read_bytes()[: CLIP.stat().st_size // 2])
    reader = open_video(path)  # the header (moov first) still says 80 frames
    with pytest.raises(VideoError, match=r"cut\.mp4.*frame") as error:
        for _ in reader:
            pass
    assert error.value.path == str(path) and 0 < error.value.frame < 80


def test_corrupt_mp4_names_file(tmp_path):
    path = tmp_path / "garbage.mp4"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(VideoError, match=r"garbage\.mp4.*frame 0"):
        open_video(path)


def test_one_frame_gif_is_too_short(tmp_path):
    path = tmp_path / "still.gif"
    write_video(path, smooth_frames(1), fps=10)
    with pytest.raises(VideoError, match=r"still\.gif.*ends after 1 frames.*frame 1") as error:
        open_video(path)
    assert error.value.frame == 1
    assert len(list(open_video(path, min_frames=1))) == 1


def test_video_shorter_than_requested(tmp_path):
    with pytest.raises(VideoError, match=r"bigbuckbunny\.mp4.*frame 80 is missing.*10 frames"):
        open_video(CLIP, start=70, stride=2, frames=10)
    # Without a frame count in the header the check happens at the end of decoding.
    for k, frame in enumerate(smooth_frames(3)):
        from PIL import Image

        Image.fromarray(frame).save(tmp_path / f"{k}.png")
    with pytest.raises(VideoError, match=r"frame 3 is missing"):
        open_video(tmp_path, frames=4)


def test_folder_of_changing_size(tmp_path):
    from PIL import Image

    frames = smooth_frames(3) + smooth_frames(1, 40, 58)
    for k, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"frame_{k:03d}.png")
    with pytest.raises(VideoError, match=r"frame 3 \('frame_003.png'\) is 40 x 58") as error:
        list(open_video(tmp_path, size=32))
    assert error.value.path.endswith("frame_003.png")


def test_content_hash(tmp_path):
    copy = tmp_path / "copy.mp4"
    shutil.copy(CLIP, copy)
    digest = content_hash(CLIP)
    assert digest == hashlib.sha256(CLIP.read_bytes()).hexdigest() == content_hash(copy)
    data = bytearray(copy.read_bytes())
    data[-1] ^= 1
    copy.write_bytes(bytes(data))
    assert content_hash(copy) != digest
