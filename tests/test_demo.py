"""Unit tests of the demo's logic (detector/demo.py) without a server or a browser."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import supervision as sv
from PIL import Image, ImageFile

from demo_support import DATASET_DIR, pick_images, shared_detector, write_slideshow
from detector import demo
from detector.events import AlertSettings
from detector.synthetic import moving_pattern, write_video

# The shipped model scores letterboxed slideshow frames lower than the original
# images, so video tests detect at 0.15 instead of the model card's 0.20.
VIDEO_TEST_CONFIDENCE = 0.15

needs_dataset = pytest.mark.skipif(not DATASET_DIR.is_dir(), reason=f"shared dataset not found at {DATASET_DIR}")


class ScriptedDetector:
    """Return prepared detections in order, to drive the demo's logic exactly."""

    names = {0: "cigarette"}

    def __init__(self, scores: list[list[float]]) -> None:
        self.scores = list(scores)
        self.calls: list[float | None] = []

    def detect(self, frames, confidence=None):
        self.calls.append(confidence)
        results = []
        for _ in frames:
            values = self.scores.pop(0) if self.scores else []
            kept = [value for value in values if confidence is None or value >= confidence]
            if not kept:
                results.append(sv.Detections.empty())
                continue
            boxes = np.array([[10 + 5 * i, 10, 40 + 5 * i, 30] for i in range(len(kept))], dtype=np.float32)
            results.append(sv.Detections(xyxy=boxes, confidence=np.array(kept, dtype=np.float32), class_id=np.zeros(len(kept), int)))
        return results


def save(image: Image.Image, path, **options):
    image.save(path, **options)
    return path


# ---------------------------------------------------------------- load_image


def test_load_image_rejects_text_file(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(demo.DemoInputError, match="not an image"):
        demo.load_image(path)


def test_load_image_rejects_text_after_ultralytics(tmp_path):
    import ultralytics.utils.patches  # noqa: F401  Replaces Image.open with a version that tries HEIF next.

    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(demo.DemoInputError, match="not an image"):
        demo.load_image(path)


def test_load_image_rejects_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(demo.DemoInputError, match="empty"):
        demo.load_image(path)


def test_load_image_rejects_truncated_png(tmp_path):
    whole = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(whole, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    with pytest.raises(demo.DemoInputError, match="damaged"):
        demo.load_image(path)


def test_load_image_rejects_pixel_bomb_before_decoding(tmp_path, monkeypatch):
    # 9000 x 9000 one-bit pixels compress to a few kB but are 81 megapixels.
    path = save(Image.new("1", (9000, 9000)), tmp_path / "bomb.png")
    assert path.stat().st_size < 100_000
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self) or None)
    with pytest.raises(demo.DemoInputError, match="megapixels"):
        demo.load_image(path)
    assert decoded == []


def test_load_image_explains_pillow_bomb_limit(tmp_path, monkeypatch):
    # app.py lowers Pillow's limit to the demo's, so Image.open itself rejects 20000 x 20000 pixels.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", demo.MAX_IMAGE_PIXELS)
    path = save(Image.new("1", (20000, 20000)), tmp_path / "bomb.png")
    with pytest.raises(demo.DemoInputError) as caught:
        demo.load_image(path)
    message = str(caught.value)
    assert message.startswith("The image has more than 80 megapixels; the limit is 40 megapixels.")
    assert "DOS" not in message


def test_load_image_rejects_oversized_file(tmp_path):
    path = save(Image.new("RGB", (64, 64)), tmp_path / "small.png")
    with pytest.raises(demo.DemoInputError, match="limit is"):
        demo.load_image(path, max_bytes=10)


def test_load_image_converts_cmyk_jpeg(tmp_path):
    path = save(Image.new("CMYK", (32, 24), (0, 255, 255, 0)), tmp_path / "cmyk.jpg")
    image = demo.load_image(path)
    assert image.shape == (24, 32, 3)
    assert image.dtype == np.uint8
    blue, green, red = image[12, 16].astype(int)
    # CMYK (0, 255, 255, 0) is red, and the array is BGR.
    assert red > 200
    assert green < 60
    assert blue < 60


def test_load_image_scales_16bit_grey(tmp_path):
    values = np.zeros((10, 20), dtype=np.uint16)
    values[:, 10:] = 65535
    values[:, :5] = 32768
    path = save(Image.fromarray(values), tmp_path / "deep.png")
    image = demo.load_image(path)
    assert image.shape == (10, 20, 3)
    assert image[0, 15].tolist() == [255, 255, 255]
    assert image[0, 7].tolist() == [0, 0, 0]
    assert image[0, 2].tolist() == [128, 128, 128]


def test_load_image_composites_rgba_on_white(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[:, :4] = (255, 0, 0, 255)  # Opaque red on the left, fully transparent on the right.
    path = save(Image.fromarray(rgba, "RGBA"), tmp_path / "alpha.png")
    image = demo.load_image(path)
    assert image[0, 0].tolist() == [0, 0, 255]
    assert image[0, 7].tolist() == [255, 255, 255]


def test_load_image_applies_exif_rotation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # Rotate 90 degrees clockwise to display.
    path = tmp_path / "rotated.jpg"
    Image.new("RGB", (40, 20)).save(path, exif=exif)
    assert demo.load_image(path).shape == (40, 20, 3)


# ---------------------------------------------------------------- detect_image


def test_detect_image_verdict_uses_card_threshold():
    detector = ScriptedDetector([[0.6, 0.1]])
    result = demo.detect_image(detector, np.zeros((50, 80, 3), np.uint8), confidence=0.05)
    assert result.smoking
    assert "Smoking detected" in result.verdict
    assert [row[0] for row in result.rows] == [0.6, 0.1]
    assert detector.calls == [0.05]


def test_detect_image_low_boxes_do_not_count():
    detector = ScriptedDetector([[0.12]])
    result = demo.detect_image(detector, np.zeros((50, 80, 3), np.uint8), confidence=0.1)
    assert not result.smoking
    assert "No cigarette found" in result.verdict
    assert "1 box(es) below that threshold" in result.verdict
    assert len(result.rows) == 1


def test_detect_image_slider_above_card_hides_boxes():
    detector = ScriptedDetector([[0.3]])
    result = demo.detect_image(detector, np.zeros((50, 80, 3), np.uint8), confidence=0.5)
    assert result.smoking
    assert result.rows == []


@needs_dataset
def test_detect_image_real_positive_and_negative():
    picked = pick_images()
    assert picked.positives, "the shipped model found no cigarette in the first test images"
    assert picked.negatives, "the shipped model found something in every unlabelled test image"
    positive = demo.detect_image(shared_detector(), demo.load_image(picked.positives[0]))
    negative = demo.detect_image(shared_detector(), demo.load_image(picked.negatives[0]))
    assert positive.smoking
    assert len(positive.rows) >= 1
    assert positive.annotated_rgb.shape[2] == 3
    assert not negative.smoking
    assert negative.rows == []


# ---------------------------------------------------------------- process_video


@needs_dataset
def test_process_video_finds_event_and_writes_h264(tmp_path):
    import av

    picked = pick_images()
    clip = write_slideshow(tmp_path / "clip.mp4", picked.positives[:2], picked.negatives)
    shares = []
    result = demo.process_video(
        shared_detector(), clip, tmp_path / "out", confidence=VIDEO_TEST_CONFIDENCE, progress=lambda share, _: shares.append(share)
    )
    assert len(result.events) >= 1
    first = result.events[0]
    assert 0.8 <= first["start_s"] <= 3.2  # Positives are shown from 1 s to 3 s.
    assert len(result.times) == len(result.confidences)
    assert 20 <= len(result.times) <= 30  # 5 s sampled at 5 fps.
    assert shares
    assert shares == sorted(shares)
    assert max(shares) <= 1.0
    with av.open(str(result.annotated_path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert sum(1 for _ in container.decode(stream)) == result.frames_decoded
    figure = demo.confidence_figure(result, threshold=VIDEO_TEST_CONFIDENCE)
    axes = figure.axes[0]
    assert len(axes.patches) == len(result.events)  # One shaded span per event.
    assert list(axes.lines[0].get_xdata()) == result.times


def test_process_video_rejects_long_clip(tmp_path):
    clip = write_video(tmp_path / "long.mp4", (moving_pattern(64, 48, i) for i in range(30)), fps=10)
    with pytest.raises(demo.DemoInputError, match="limit is 1 s"):
        demo.process_video(ScriptedDetector([]), clip, tmp_path / "out", max_seconds=1.0)


def test_process_video_rejects_big_file(tmp_path):
    clip = write_video(tmp_path / "big.mp4", (moving_pattern(64, 48, i) for i in range(5)), fps=10)
    with pytest.raises(demo.DemoInputError, match="MB"):
        demo.process_video(ScriptedDetector([]), clip, tmp_path / "out", max_bytes=100)


def test_process_video_rejects_undecodable_file(tmp_path):
    path = tmp_path / "noise.mp4"
    path.write_bytes(os.urandom(20_000))
    with pytest.raises(demo.DemoInputError, match="could not be") as caught:
        demo.process_video(ScriptedDetector([]), path, tmp_path / "out")
    assert str(tmp_path) not in str(caught.value)


def test_process_video_events_from_scripted_scores(tmp_path):
    clip = write_video(tmp_path / "clip.mp4", (moving_pattern(64, 48, i) for i in range(40)), fps=10)
    # 20 sampled frames at 5 fps: positive from 1.0 s to 2.0 s, quiet before and after.
    scores = [[0.9] if 5 <= index <= 10 else [] for index in range(20)]
    result = demo.process_video(ScriptedDetector(scores), clip, tmp_path / "out")
    # The last positive frame, at 2.0 s, covers one 0.2 s sampling interval.
    assert [(event["start_s"], event["end_s"]) for event in result.events] == [(1.0, 2.2)]
    assert result.confidences[5:11] == pytest.approx([0.9] * 6)
    assert result.annotated_path.is_file()


# ---------------------------------------------------------------- webcam


def run_webcam_timeline(session, timeline, start=100.0):
    """Feed ``(seconds, scores)`` frames to ``session``; return the status after each frame."""
    detector = ScriptedDetector([scores for _, scores in timeline])
    frame = np.zeros((48, 64, 3), np.uint8)
    statuses = []
    for moment, _ in timeline:
        annotated, status = session.process(detector, frame, now=start + moment)
        assert annotated.shape == frame.shape
        statuses.append(status)
    return statuses


def test_webcam_session_alert_life_cycle():
    settings = AlertSettings(min_duration=1.0, clear_after=2.0, cooldown=3.0)
    session = demo.WebcamSession(settings=settings)
    timeline = [
        (0.0, []),
        (0.5, [0.8]),  # Onset of smoking.
        (1.0, [0.6]),
        (1.5, [0.7]),  # 1 s of smoking: raised.
        (3.0, []),  # 1.5 s quiet, less than clear_after.
        (3.5, []),  # 2 s quiet: cleared, cooldown until 6.5 s.
        (4.0, [0.9]),  # New onset inside the cooldown.
        (5.0, [0.9]),  # 1 s of smoking, but still cooling down.
        (6.5, [0.95]),  # Cooldown over: the second alert.
    ]
    statuses = run_webcam_timeline(session, timeline)

    assert "No alert" in statuses[0]
    assert "frame 1 at 0.0 s: 0 box(es)" in statuses[0]
    assert "Cigarette seen" in statuses[1]
    assert "Cigarette seen" in statuses[2]
    assert "Alert 1 raised** at 1.5 s: smoking since 0.5 s, peak confidence 0.80" in statuses[3]
    assert "alerts raised: 1" in statuses[3]
    assert "Alert 1 raised" in statuses[4]
    assert "Alert 1 cleared** at 3.5 s: smoking from 0.5 s to 1.5 s, peak confidence 0.80" in statuses[5]
    assert "No new alert before 6.5 s (cooldown)" in statuses[5]
    assert "Cigarette seen" in statuses[6]
    assert "cooldown" in statuses[7]
    assert "Alert 2 raised** at 6.5 s: smoking since 4.0 s, peak confidence 0.95" in statuses[8]
    assert session.alerts == 2


def test_webcam_session_clears_after_pause():
    settings = AlertSettings(min_duration=0.5, clear_after=2.0, cooldown=0.0)
    session = demo.WebcamSession(settings=settings)
    # The stream stops after 1 s of smoking and restarts 30 s later without one.
    statuses = run_webcam_timeline(session, [(0.0, [0.5]), (0.5, [0.5]), (1.0, [0.5]), (31.0, [])])
    assert "Alert 1 raised" in statuses[2]
    assert "Alert 1 cleared** at 31.0 s" in statuses[3]
    assert "cooldown" not in statuses[3]


def test_webcam_session_counts_drawn_boxes_only():
    session = demo.WebcamSession(settings=AlertSettings(min_duration=0.5, clear_after=2.0))
    # Scores below the 0.5 slider are neither drawn nor counted towards an alert.
    detector = ScriptedDetector([[0.3], [0.3], [0.3]])
    frame = np.zeros((48, 64, 3), np.uint8)
    statuses = [session.process(detector, frame, confidence=0.5, now=moment)[1] for moment in (0.0, 0.5, 1.0)]
    assert all("No alert" in status for status in statuses)
    assert session.alerts == 0


def test_webcam_session_accepts_rgba_and_grey():
    session = demo.WebcamSession()
    detector = ScriptedDetector([[], []])
    rgba, _ = session.process(detector, np.zeros((10, 12, 4), np.uint8), now=0.0)
    grey, _ = session.process(detector, np.zeros((10, 12), np.uint8), now=0.5)
    assert rgba.shape == (10, 12, 3)
    assert grey.shape == (10, 12, 3)


# ---------------------------------------------------------------- helpers


def test_temp_area_prunes_old_requests(tmp_path):
    area = demo.TempArea(max_age=60, root=tmp_path / "area")
    old = area.new_dir()
    os.utime(old, (1_000, 1_000))
    fresh = area.new_dir()
    assert not old.exists()
    assert fresh.exists()
    area.cleanup()
    assert not area.root.exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [(None, None), ("", None), ("ann:secret", ("ann", "secret")), ("ann:pa:ss", ("ann", "pa:ss"))],
)
def test_parse_auth_valid(text, expected):
    assert demo.parse_auth(text) == expected


@pytest.mark.parametrize("text", ["ann", "ann:", ":secret"])
def test_parse_auth_invalid(text):
    with pytest.raises(ValueError, match="user:password"):
        demo.parse_auth(text)


def test_read_model_card_placeholder(tmp_path):
    assert "No model card found" in demo.read_model_card(tmp_path / "MODEL_CARD.md")
    (tmp_path / "MODEL_CARD.md").write_text("# Card\nmAP50 0.42\n")
    assert "mAP50 0.42" in demo.read_model_card(tmp_path / "MODEL_CARD.md")


def test_ffmpeg_not_linked_without_ffprobe(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert demo.ensure_ffmpeg_on_path(tmp_path / "bin") is None
    assert os.environ["PATH"] == str(tmp_path / "empty")


def test_ffmpeg_linked_when_ffprobe_present(tmp_path, monkeypatch):
    tools = tmp_path / "tools"
    tools.mkdir()
    probe = tools / "ffprobe"
    probe.write_text("#!/bin/sh\n")
    probe.chmod(0o755)
    monkeypatch.setenv("PATH", str(tools))
    link = demo.ensure_ffmpeg_on_path(tmp_path / "bin")
    assert link == tmp_path / "bin" / "ffmpeg"
    assert link.resolve().is_file()
    assert os.environ["PATH"].split(os.pathsep)[0] == str(tmp_path / "bin")


def test_model_card_path_per_weights(tmp_path):
    from detector.model import DEFAULT_WEIGHTS

    assert demo.model_card_path(DEFAULT_WEIGHTS) == DEFAULT_WEIGHTS.with_name("MODEL_CARD.md")
    trained = tmp_path / "cigarette-v2.pt"
    trained.write_bytes(b"")
    assert demo.model_card_path(trained) == tmp_path / "cigarette-v2.md"
