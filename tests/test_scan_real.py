"""End to end with the shipped weights: real dataset images in a generated video, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from detector.model import DEFAULT_CONFIDENCE, DEFAULT_WEIGHTS, Detector, ModelSettings
from detector.scan import output_folder
from detector.synthetic import Segment, slideshow_frames, write_video
from tests.conftest import marker_frames, read_manifest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(ModelSettings(device="cpu"))


@pytest.fixture(scope="module")
def chosen_images(dataset_dir, detector):
    """Test-split images on which the shipped model is right: positives it finds, negatives it leaves alone.

    The test checks event timing through the whole pipeline, not the model's
    accuracy, which the eval command measures.
    """
    rows = read_manifest(dataset_dir, "test")
    positives = [dataset_dir / row["file"] for row in rows if row["boxes"] != "0"][:80]
    negatives = [dataset_dir / row["file"] for row in rows if row["boxes"] == "0"][:40]

    def scored(paths):
        images = [cv2.imread(str(path)) for path in paths]
        results = []
        for start in range(0, len(images), 8):
            batch = images[start : start + 8]
            for image, found in zip(batch, detector.detect(batch)):
                top = float(found.confidence.max()) if len(found) else 0.0
                results.append((top, image))
        return results

    found = sorted((item for item in scored(positives) if item[0] >= DEFAULT_CONFIDENCE + 0.1), key=lambda item: -item[0])
    clean = [image for top, image in scored(negatives) if top == 0.0]
    if len(found) < 2 or len(clean) < 6:
        pytest.fail(f"the shipped model found only {len(found)} clear positives and {len(clean)} clean negatives")
    return [image for _, image in found[:2]], clean[:6]


def test_scan_real_images_finds_event_at_right_time(tmp_path, chosen_images):
    positives, negatives = chosen_images
    segments = [Segment(negatives[:3], 6.0), Segment(positives, 4.0), Segment(negatives[3:], 6.0)]
    video = write_video(tmp_path / "staged.mp4", slideshow_frames(segments, 30, 640, 480), fps=30)

    result = subprocess.run(
        [sys.executable, "-m", "detector.cli", "scan", str(video), "--out", str(tmp_path / "out"), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((output_folder(tmp_path / "out", video) / "report.json").read_text())
    assert report["status"] == "ok"
    assert len(report["events"]) == 1, report["events"]
    event = report["events"][0]
    assert event["start_s"] == pytest.approx(6.0, abs=0.5)
    assert event["end_s"] == pytest.approx(10.0, abs=0.5)
    assert event["peak_confidence"] >= DEFAULT_CONFIDENCE
    assert report["model"]["weights"] == str(DEFAULT_WEIGHTS)


def run_cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "detector.cli", *arguments], capture_output=True, text=True, timeout=600
    )


def test_cli_exit_codes(tmp_path):
    good = write_video(tmp_path / "good.mp4", marker_frames(2, 10, []), fps=10)
    out = tmp_path / "out"

    ok = run_cli("scan", str(good), "--out", str(out), "--no-progress")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (out / "summary.csv").is_file()

    failed = run_cli("scan", str(good), str(tmp_path / "missing.mp4"), "--out", str(out), "--no-progress")
    assert failed.returncode == 1
    assert "missing.mp4: file or folder not found" in failed.stderr

    usage = run_cli("scan", str(good), "--sample-fps", "-3", "--out", str(out))
    assert usage.returncode == 2
    assert "--sample-fps" in usage.stderr

    assert run_cli("scan").returncode == 2


def test_cli_missing_weights_is_one_line_error(tmp_path):
    good = write_video(tmp_path / "good.mp4", marker_frames(1, 10, []), fps=10)
    result = run_cli("scan", str(good), "--weights", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "nope.pt" in result.stderr
    assert "Traceback" not in result.stderr
