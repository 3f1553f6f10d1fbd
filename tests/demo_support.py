"""Test images picked by running the shipped model, and generated clips for the demo's tests.

The shipped weights are weak (test mAP50 about 0.19), so the tests do not trust
the labels alone. A positive is a labelled test image on which the model finds a
cigarette at the model card's threshold. A negative is an unlabelled one on which
it finds nothing, even at a low threshold.
"""

from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from detector.model import DEFAULT_CONFIDENCE
from detector.synthetic import Segment, slideshow_frames, write_video

DATASET_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cigarettes"
NEGATIVE_PROBE_CONFIDENCE = 0.05  # A negative must show nothing even at this threshold.
MAX_IMAGES_TRIED = 120


@dataclass(frozen=True)
class PickedImages:
    positives: list[Path]
    negatives: list[Path]


@functools.lru_cache(maxsize=1)
def shared_detector():
    from detector.demo import SharedDetector

    return SharedDetector()


@functools.lru_cache(maxsize=1)
def pick_images(count: int = 3) -> PickedImages:
    """Return ``count`` positive and negative test images, chosen by running the shipped model."""
    detector = shared_detector()
    positives: list[Path] = []
    negatives: list[Path] = []
    for image_path in sorted((DATASET_DIR / "test" / "images").glob("*.webp"))[:MAX_IMAGES_TRIED]:
        if len(positives) >= count and len(negatives) >= count:
            break
        label_path = DATASET_DIR / "test" / "labels" / f"{image_path.stem}.txt"
        labelled = label_path.exists() and label_path.read_text().strip() != ""
        if labelled and len(positives) >= count or not labelled and len(negatives) >= count:
            continue
        detections = detector.detect([cv2.imread(str(image_path))], confidence=NEGATIVE_PROBE_CONFIDENCE)[0]
        top = float(detections.confidence.max()) if len(detections) else 0.0
        if labelled and top >= DEFAULT_CONFIDENCE:
            positives.append(image_path)
        elif not labelled and len(detections) == 0:
            negatives.append(image_path)
    return PickedImages(positives, negatives)


def write_slideshow(
    path: Path,
    positives: list[Path],
    negatives: list[Path],
    fps: float = 10.0,
    size=(416, 320),
    positive_seconds: float = 2.0,
) -> Path:
    """Write a clip: a negative for 1 s, positives for ``positive_seconds``, negatives for 2 s."""
    def load(paths):
        return [cv2.imread(str(item)) for item in paths]

    segments = [
        Segment(load(negatives[:1]), 1.0),
        Segment(load(positives), positive_seconds),
        Segment(load(negatives), 2.0),
    ]
    return write_video(path, slideshow_frames(segments, fps, *size), fps=fps)


def write_y4m(source: Path, target: Path) -> Path:
    """Convert a clip to the raw Y4M that Chromium's fake camera reads, with the bundled ffmpeg."""
    import imageio_ffmpeg

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-i", str(source), "-pix_fmt", "yuv420p", str(target)]
    subprocess.run(command, check=True, capture_output=True)
    return target


def solid_image(width: int, height: int, colour=(120, 120, 120)) -> np.ndarray:
    return np.full((height, width, 3), colour, dtype=np.uint8)
