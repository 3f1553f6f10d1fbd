"""Shared fixtures: offline Ultralytics, the shared dataset, generated videos and a fake detector."""

from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")  # Set before any test imports Ultralytics.

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
DATASET_DIR = SHARED_DIR / "datasets" / "cigarettes"
MARKER_COLOUR = (0, 0, 255)  # Pure red in BGR: what FakeDetector looks for.


@pytest.fixture(scope="session")
def dataset_dir() -> Path:
    if not (DATASET_DIR / "data.yaml").is_file():
        pytest.skip(f"shared dataset not found at {DATASET_DIR}; it lies beside the repository in CI")
    return DATASET_DIR


def read_manifest(dataset: Path, split: str) -> list[dict[str, str]]:
    with open(dataset / "manifest.csv", newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["split"] == split]


class FakeDetector:
    """Stand-in for Detector: finds pure red squares, so tests control exactly what is detected."""

    names = {0: "cigarette"}

    def __init__(self, confidence: float = 0.9) -> None:
        from detector.model import ModelSettings

        self.settings = ModelSettings(weights=Path("fake.pt"))
        self.confidence = confidence
        self.batches: list[int] = []

    def detect(self, frames):
        self.batches.append(len(frames))
        results = []
        for frame in frames:
            mask = np.all(frame >= (0, 0, 200), axis=2) & np.all(frame[:, :, :2] <= 60, axis=2)
            ys, xs = np.nonzero(mask)
            if len(xs) < 20:
                results.append(sv.Detections.empty())
                continue
            box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=np.float32)
            results.append(
                sv.Detections(
                    xyxy=box, confidence=np.array([self.confidence], dtype=np.float32), class_id=np.array([0])
                )
            )
        return results

    def describe(self):
        return {"weights": "fake", "confidence": 0.25}


def marker_frames(seconds: float, fps: float, marked: list[tuple[float, float]], size=(320, 240)):
    """Yield grey frames with a red square during each (start, end) interval of seconds."""
    width, height = size
    for index in range(int(round(seconds * fps))):
        timestamp = index / fps
        frame = np.full((height, width, 3), 90, dtype=np.uint8)
        cv2.putText(frame, f"{timestamp:5.2f}", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
        if any(start <= timestamp < end for start, end in marked):
            cv2.rectangle(frame, (width // 2, height // 2), (width // 2 + 40, height // 2 + 40), MARKER_COLOUR, -1)
        yield frame


@pytest.fixture
def fake_detector() -> FakeDetector:
    return FakeDetector()
