"""Generated videos for tests, benchmarks and demos: no footage is shipped with the project."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class Segment:
    """Images shown one after another for ``seconds`` in total, each for an equal share."""

    images: Sequence[np.ndarray]
    seconds: float


def moving_pattern(width: int, height: int, index: int) -> np.ndarray:
    """Return a textured BGR frame that changes every frame, so the encoder does real work."""
    y, x = np.mgrid[0:height, 0:width]
    base = ((x + 3 * index) ^ (y + 2 * index)) & 0xFF
    frame = np.dstack([base, (base * 3 + index) & 0xFF, (255 - base)]).astype(np.uint8)
    cv2.circle(frame, ((index * 7) % width, height // 2), max(8, height // 12), (0, 255, 255), -1)
    return frame


def write_video(
    path: Path,
    frames: Iterable[np.ndarray],
    fps: float = 30.0,
    codec: str = "libx264",
    rotation: int = 0,
    faststart: bool = False,
) -> Path:
    """Encode BGR frames to a video file with PyAV.

    ``rotation`` sets display-matrix metadata in degrees. ``faststart`` puts the MP4
    index before the frame data, as streaming encoders do, so a truncated copy still opens.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    container = av.open(str(path), mode="w", options={"movflags": "+faststart"} if faststart else {})
    stream = None
    try:
        for frame in frames:
            if stream is None:
                stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                stream.height, stream.width = frame.shape[0] - frame.shape[0] % 2, frame.shape[1] - frame.shape[1] % 2
                stream.pix_fmt = "yuv420p"
                if codec == "libx264":
                    stream.options = {"preset": "veryfast", "crf": "23"}
            video_frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(frame[: stream.height, : stream.width]), format="bgr24"
            )
            for packet in stream.encode(video_frame):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode(None):
                container.mux(packet)
    finally:
        container.close()
    if rotation:
        _set_display_rotation(path, rotation)
    return path


def _set_display_rotation(path: Path, rotation: int) -> None:
    """Rewrite the file with a display-matrix rotation, as phones record portrait video."""
    import subprocess

    import imageio_ffmpeg

    temporary = path.with_name(f"{path.stem}.rotated{path.suffix}")
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-loglevel",
        "error",
        "-y",
        "-display_rotation",
        str(rotation),
        "-i",
        str(path),
        "-c",
        "copy",
        str(temporary),
    ]
    subprocess.run(command, check=True, capture_output=True)
    temporary.replace(path)


def letterbox(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Fit an image inside width x height on a grey background, keeping its aspect ratio."""
    scale = min(width / image.shape[1], height / image.shape[0])
    resized = cv2.resize(image, (int(image.shape[1] * scale), int(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    canvas = np.full((height, width, 3), 114, dtype=np.uint8)
    top = (height - resized.shape[0]) // 2
    left = (width - resized.shape[1]) // 2
    canvas[top : top + resized.shape[0], left : left + resized.shape[1]] = resized
    return canvas


def slideshow_frames(segments: Sequence[Segment], fps: float, width: int, height: int) -> Iterable[np.ndarray]:
    """Yield the frames of a slideshow, each segment's images sharing its duration evenly."""
    for segment in segments:
        total = int(round(segment.seconds * fps))
        fitted = [letterbox(image, width, height) for image in segment.images]
        for index in range(total):
            yield fitted[min(index * len(fitted) // total, len(fitted) - 1)]
