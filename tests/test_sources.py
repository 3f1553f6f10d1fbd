"""Decoding, sampling, rotation, broken files and the reader thread's buffer policies."""

from __future__ import annotations

import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from detector.sources import (
    BufferPolicy,
    EndOfStream,
    Frame,
    FrameReader,
    Sampler,
    SourceDecodeError,
    SourceOpenError,
    VideoFileSource,
)
from detector.synthetic import moving_pattern, write_video
from tests.conftest import marker_frames


@pytest.fixture
def clip(tmp_path) -> Path:
    """Ten seconds at 30 fps, 320x240."""
    return write_video(tmp_path / "clip.mp4", marker_frames(10, 30, []), fps=30)


def truncate(source: Path, destination: Path, fraction: float) -> Path:
    data = source.read_bytes()
    destination.write_bytes(data[: int(len(data) * fraction)])
    return destination


def test_sampler_keeps_five_per_second_of_thirty():
    sampler = Sampler(5.0)
    kept = [index for index in range(60) if sampler.keep(index / 30)]
    assert kept == list(range(0, 60, 6))


def test_sampler_every_frame_when_rate_is_none():
    sampler = Sampler(None)
    assert all(sampler.keep(index / 30) for index in range(10))


def test_sampler_handles_irregular_timestamps():
    sampler = Sampler(1.0)
    timestamps = [0.0, 0.4, 0.95, 1.02, 1.5, 3.7, 3.9, 4.01]
    assert [t for t in timestamps if sampler.keep(t)] == [0.0, 1.02, 3.7, 4.01]


def test_sampler_rejects_non_positive_rate():
    with pytest.raises(ValueError, match="sample rate"):
        Sampler(0)


def test_file_source_timestamps_and_sampling(clip):
    source = VideoFileSource(clip, sample_fps=5)
    frames = list(source.frames())
    assert source.info.fps == pytest.approx(30)
    assert source.info.frames_expected == 300
    assert len(frames) == 50
    assert [frame.index for frame in frames[:3]] == [0, 6, 12]
    assert frames[1].timestamp == pytest.approx(0.2, abs=1e-3)
    assert frames[-1].timestamp == pytest.approx(9.8, abs=1e-3)
    assert source.stats.frames_decoded == 300
    assert source.stats.error is None


def test_file_source_delivers_all_frames_when_asked(clip):
    source = VideoFileSource(clip, sample_fps=5, deliver_all=True)
    frames = list(source.frames())
    assert len(frames) == 300
    assert sum(frame.sampled for frame in frames) == 50


def test_rotated_video_is_turned_upright(tmp_path):
    width, height = 160, 96
    frames = []
    for _ in range(15):
        frame = np.zeros((height, width, 3), dtype=np.uint8)
        frame[:20, :20] = 255  # A white block in the top-left corner of the stored frame.
        frames.append(frame)
    path = write_video(tmp_path / "portrait.mp4", frames, fps=30, rotation=90)

    source = VideoFileSource(path, sample_fps=None)
    decoded = list(source.frames())
    image = decoded[0].image
    assert source.info.rotation == 90
    assert image.shape[:2] == (width, height)
    # Turned 90 degrees counterclockwise, the top-left corner ends up bottom-left.
    assert image[-10, 10].mean() > 200
    assert image[10, 10].mean() < 50


def test_missing_file_raises_open_error(tmp_path):
    with pytest.raises(SourceOpenError, match="not found"):
        VideoFileSource(tmp_path / "absent.mp4")


def test_empty_file_raises_open_error(tmp_path):
    path = tmp_path / "empty.mp4"
    path.touch()
    with pytest.raises(SourceOpenError, match="empty"):
        VideoFileSource(path)


def test_text_file_raises_open_error(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    with pytest.raises(SourceOpenError, match="not a readable video"):
        VideoFileSource(path)


def test_still_image_is_rejected(tmp_path):
    import cv2

    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), moving_pattern(64, 64, 0))
    with pytest.raises(SourceOpenError, match="still image"):
        VideoFileSource(path)


def test_damaged_middle_skips_only_bad_packets(tmp_path):
    path = write_video(tmp_path / "clip.mp4", (moving_pattern(320, 240, index) for index in range(120)), fps=30)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for offset in range(middle, middle + 4096, 7):
        data[offset] ^= 0xFF
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))

    source = VideoFileSource(damaged, sample_fps=None)
    frames = list(source.frames())
    # Decoding goes on after the damage: the last frames of the file still come out.
    assert frames[-1].timestamp > 3.5
    assert len(frames) > 60
    assert source.stats.error is None


def test_truncated_mp4_without_index_fails_to_open(clip, tmp_path):
    # PyAV writes the moov index at the end, so cutting the file loses it.
    broken = truncate(clip, tmp_path / "cut.mp4", 0.5)
    with pytest.raises(SourceOpenError, match="cut.mp4"):
        VideoFileSource(broken)


def test_truncated_faststart_mp4_decodes_in_part(tmp_path):
    frames = (moving_pattern(320, 240, index) for index in range(300))
    path = write_video(tmp_path / "faststart.mp4", frames, fps=30, faststart=True)

    broken = truncate(path, tmp_path / "faststart-cut.mp4", 0.5)
    source = VideoFileSource(broken, sample_fps=None)
    frames = list(source.frames())
    assert source.info.frames_expected == 300
    assert 0 < len(frames) < 300
    assert source.stats.last_timestamp < 10


def test_video_without_frames_fails(tmp_path):
    frames = (moving_pattern(320, 240, index) for index in range(60))
    path = write_video(tmp_path / "faststart.mp4", frames, fps=30, faststart=True)
    # Keep the header and index but drop every byte of frame data.
    data = bytearray(path.read_bytes())
    mdat = data.find(b"mdat")
    broken = tmp_path / "no-frames.mp4"
    broken.write_bytes(bytes(data[: mdat + 4]))

    with pytest.raises((SourceDecodeError, SourceOpenError), match="no-frames.mp4"):
        list(VideoFileSource(broken).frames())


def test_absurd_frame_rate_metadata_uses_timestamps(tmp_path):
    path = tmp_path / "fast.mkv"
    container = av.open(str(path), mode="w")
    stream = container.add_stream("libx264", rate=1000)
    stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
    stream.time_base = Fraction(1, 1000)
    for index in range(30):
        frame = av.VideoFrame.from_ndarray(moving_pattern(64, 64, index), format="bgr24")
        frame.pts, frame.time_base = index, Fraction(1, 1000)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    container.close()

    source = VideoFileSource(path, sample_fps=None)
    assert not source.info.fps_from_metadata
    frames = list(source.frames())
    assert len(frames) == 30
    assert frames[-1].timestamp == pytest.approx(0.029, abs=1e-3)
    assert source.info.fps == pytest.approx(1000, rel=0.01)


class ListSource:
    def __init__(self, count: int, fail_after: int | None = None, delay: float = 0.0):
        self.count = count
        self.fail_after = fail_after
        self.delay = delay

    def frames(self):
        for index in range(self.count):
            if self.fail_after is not None and index == self.fail_after:
                raise OSError("camera unplugged")
            time.sleep(self.delay)
            yield Frame(index=index, timestamp=index / 30, image=np.zeros((2, 2, 3), dtype=np.uint8))


def test_reader_keep_all_loses_nothing():
    reader = FrameReader(ListSource(200), BufferPolicy.KEEP_ALL, capacity=4).start()
    received = []
    for frame in reader:
        received.append(frame.index)
        if frame.index % 50 == 0:
            time.sleep(0.05)  # A slow consumer: the decoder must wait, not drop.
    assert received == list(range(200))
    assert reader.dropped == 0


def test_reader_keep_latest_drops_oldest():
    reader = FrameReader(ListSource(200), BufferPolicy.KEEP_LATEST, capacity=2).start()
    time.sleep(0.5)  # Let the source run far ahead of the consumer.
    received = [frame.index for frame in reader]
    assert received[-1] == 199
    assert reader.dropped > 0
    assert len(received) + reader.dropped == 200


def test_reader_sends_error_with_end_marker():
    reader = FrameReader(ListSource(10, fail_after=5), BufferPolicy.KEEP_ALL, capacity=2).start()
    received = []
    with pytest.raises(OSError, match="camera unplugged"):
        for frame in reader:
            received.append(frame.index)
    assert received == [0, 1, 2, 3, 4]


def test_reader_stop_unblocks_full_buffer():
    reader = FrameReader(ListSource(10_000), BufferPolicy.KEEP_ALL, capacity=2).start()
    time.sleep(0.1)
    stopper = threading.Thread(target=reader.stop)
    stopper.start()
    stopper.join(timeout=10)
    assert not stopper.is_alive()
    assert not reader._thread.is_alive()


def test_reader_end_marker_for_empty_source():
    reader = FrameReader(ListSource(0)).start()
    assert isinstance(reader.get(timeout=5), EndOfStream)
