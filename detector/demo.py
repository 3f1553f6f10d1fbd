"""The logic behind the Gradio demo (``app.py``), testable without a server or a browser.

Three entry points, one per tab: :func:`detect_image` for a still image,
:func:`process_video` for an uploaded clip, and :class:`WebcamSession` for
browser camera frames. Inputs are checked here and rejected with
:class:`DemoInputError`, whose message is written for the person using the page.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import supervision as sv
from PIL import Image, ImageOps, UnidentifiedImageError

from detector.events import AlertChange, AlertSettings, AlertTracker, EventChange, EventSettings, EventTracker, top_confidence
from detector.model import DEFAULT_CONFIDENCE, DEFAULT_WEIGHTS, Detector, ModelSettings
from detector.pipeline import Pipeline
from detector.sinks import AnnotatedVideoWriter, SinkSet, annotate, event_record
from detector.sources import BufferPolicy, Frame, FrameReader, SourceError, VideoFileSource

logger = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 20 * 1024 * 1024
# 40 megapixels: larger than any phone photo, far below what would exhaust memory when decoded to RGB.
MAX_IMAGE_PIXELS = 40_000_000
MAX_VIDEO_BYTES = 200 * 1024 * 1024
MAX_VIDEO_SECONDS = 120.0
MAX_VIDEO_PIXELS = 3840 * 2160
VIDEO_SAMPLE_FPS = 5.0
# The webcam tab raises alerts with the rules of ``smokedet watch`` but shorter times than its
# defaults (3 s, 10 s, 60 s), so a visitor holding up a cigarette sees an alert within seconds
# and can trigger the next one soon after it clears.
WEBCAM_ALERTS = AlertSettings(min_duration=2.0, clear_after=4.0, cooldown=10.0)
DETECTION_COLUMNS = ["confidence", "x1", "y1", "x2", "y2"]
EVENT_COLUMNS = ["id", "start", "end", "duration_s", "peak_confidence", "peak_s", "positive_frames", "sampled_frames"]


class DemoInputError(ValueError):
    """An upload the demo cannot use; the message says why and what to upload instead."""


class SharedDetector:
    """Load the detector on first use and serialise calls to it.

    One Ultralytics model object is not safe to call from several threads at once,
    and Gradio runs each tab's events in its own worker threads.
    """

    def __init__(self, settings: ModelSettings | None = None) -> None:
        self.settings = settings or ModelSettings()
        self._detector: Detector | None = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._detector is not None

    def get(self) -> Detector:
        with self._load_lock:
            if self._detector is None:
                self._detector = Detector(self.settings)
        return self._detector

    @property
    def names(self) -> dict[int, str]:
        return self.get().names

    def detect(self, frames: Sequence[np.ndarray], confidence: float | None = None) -> list[sv.Detections]:
        detector = self.get()
        with self._run_lock:
            return detector.detect(frames, confidence=confidence)


# ---------------------------------------------------------------- images


def load_image(path: str | Path, max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode an uploaded image file to an 8-bit BGR array, or raise DemoInputError.

    The pixel count is read from the header and checked before any pixel data is
    decoded, so a decompression bomb costs a few bytes of reading. EXIF
    orientation is applied; CMYK, 16-bit, float, palette and grey images are
    converted to RGB, and transparent pixels are composited onto white.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise DemoInputError("The uploaded file is empty. Upload a JPEG, PNG or WebP image.")
    if size > max_bytes:
        raise DemoInputError(
            f"The image file is {size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB. Upload a smaller image."
        )
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise DemoInputError(
                    f"The image is {width} x {height} pixels ({width * height / 1e6:.0f} megapixels); "
                    f"the limit is {max_pixels / 1e6:.0f} megapixels. Resize it and upload it again."
                )
            image.load()
            rgb = _to_rgb(ImageOps.exif_transpose(image))
    except DemoInputError:
        raise
    except Image.DecompressionBombError as error:
        # Pillow raises this from Image.open, before the size check above, for images above twice
        # Image.MAX_IMAGE_PIXELS; app.py sets that to MAX_IMAGE_PIXELS.
        raise DemoInputError(
            f"The image has more than {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels; "
            f"the limit is {max_pixels / 1e6:.0f} megapixels. Resize it and upload it again."
        ) from error
    except (UnidentifiedImageError, ImportError) as error:
        # NOTE: once Ultralytics 8.4 is imported, its patched Image.open retries unreadable files with the
        # optional pi_heif package and raises ModuleNotFoundError when that is not installed.
        raise DemoInputError("The file is not an image this demo can read. Upload a JPEG, PNG, WebP or BMP image.") from error
    except (OSError, SyntaxError, ValueError) as error:  # Pillow reports truncated and corrupt data with these types.
        raise DemoInputError(f"The image file is damaged and could not be decoded ({error}).") from error
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to an 8-bit RGB array."""
    if image.mode in {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}:
        values = np.asarray(image, dtype=np.float64)
        # 16-bit greyscale PNGs open as "I;16" or "I" depending on the Pillow version; both span 0-65535.
        top = 1.0 if image.mode == "F" and values.max(initial=0.0) <= 1.0 else 65535.0
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.dstack([grey, grey, grey])
    if image.mode in {"RGBA", "LA", "PA"} or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    # Pillow's CMYK-to-RGB conversion ignores ICC profiles, which is close enough for detection.
    return np.asarray(image.convert("RGB"))


@dataclass
class ImageResult:
    """What the image tab shows for one upload."""

    annotated_rgb: np.ndarray
    rows: list[list[float]]
    verdict: str
    smoking: bool
    top_confidence: float


def detect_image(
    detector: SharedDetector | Detector,
    image_bgr: np.ndarray,
    confidence: float = DEFAULT_CONFIDENCE,
    verdict_confidence: float = DEFAULT_CONFIDENCE,
) -> ImageResult:
    """Detect cigarettes in one image; draw and list boxes at ``confidence``, judge at ``verdict_confidence``."""
    if not 0.0 <= confidence <= 1.0:
        raise ValueError(f"confidence must be within [0, 1], got {confidence}")
    detections = detector.detect([image_bgr], confidence=min(confidence, verdict_confidence))[0]
    shown = detections[detections.confidence >= confidence] if len(detections) else detections
    top = top_confidence(detections)
    smoking = top >= verdict_confidence and len(detections) > 0
    rows = [
        [round(float(score), 3), *(int(round(value)) for value in box)]
        for box, score in zip(shown.xyxy, shown.confidence)
    ]
    rows.sort(key=lambda row: -row[0])
    verdict = _image_verdict(smoking, top, len(shown), confidence, verdict_confidence)
    annotated = annotate(image_bgr, shown, detector.names)
    return ImageResult(annotated[:, :, ::-1].copy(), rows, verdict, smoking, top)


def _image_verdict(smoking: bool, top: float, shown: int, confidence: float, verdict_confidence: float) -> str:
    if smoking:
        return f"**Smoking detected**: top confidence {top:.2f}, at or above the confidence threshold {verdict_confidence:.2f}."
    text = f"**No cigarette found** at the confidence threshold {verdict_confidence:.2f}."
    if shown:
        text += f" {shown} box(es) below that threshold are drawn because the slider is at {confidence:.2f}."
    return text


# ---------------------------------------------------------------- videos


@dataclass
class VideoResult:
    """What the video tab shows for one clip."""

    annotated_path: Path
    events: list[dict]
    times: list[float]
    confidences: list[float]
    duration: float
    frames_decoded: int
    warning: str | None = None

    @property
    def event_rows(self) -> list[list]:
        return [[record[column] for column in EVENT_COLUMNS] for record in self.events]

    def summary(self) -> str:
        count = len(self.events)
        text = f"{count} smoking event(s) in {self.duration:.1f} s of video ({self.frames_decoded} frames decoded)."
        if self.warning:
            text += f" Warning: {self.warning}"
        return text


class _ConfidenceTrace:
    """A sink that records the top confidence of every sampled frame."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.confidences: list[float] = []

    def on_frame(self, frame: Frame, detections: sv.Detections) -> None:
        if frame.sampled:
            self.times.append(frame.timestamp)
            self.confidences.append(top_confidence(detections))

    def on_event(self, change: EventChange) -> None:
        pass

    def close(self) -> None:
        pass


class _DurationCap:
    """Wrap a source and stop it after ``max_seconds`` of video time, for files without a usable duration."""

    def __init__(self, source: VideoFileSource, max_seconds: float) -> None:
        self.source = source
        self.path = source.path
        self.max_seconds = max_seconds
        self.truncated = False

    def frames(self):
        for frame in self.source.frames():
            if frame.timestamp > self.max_seconds:
                self.truncated = True
                return
            yield frame


def open_video(path: str | Path, max_bytes: int = MAX_VIDEO_BYTES, max_seconds: float = MAX_VIDEO_SECONDS) -> VideoFileSource:
    """Open an uploaded video for decoding, or raise DemoInputError when it is too big, too long or unreadable."""
    path = Path(path)
    size = path.stat().st_size if path.exists() else 0
    if size > max_bytes:
        raise DemoInputError(
            f"The video file is {size / 2**20:.0f} MB; the limit is {max_bytes / 2**20:.0f} MB. Upload a shorter clip."
        )
    try:
        source = VideoFileSource(path, sample_fps=VIDEO_SAMPLE_FPS, deliver_all=True)
    except SourceError as error:
        raise DemoInputError(f"The file could not be opened as a video: {_without_path(error, path)}.") from error
    info = source.info
    if info.duration is not None and info.duration > max_seconds:
        source.close()
        raise DemoInputError(
            f"The video is {info.duration:.0f} s long; the limit is {max_seconds:.0f} s. Trim it and upload it again."
        )
    if info.width * info.height > MAX_VIDEO_PIXELS:
        source.close()
        raise DemoInputError(
            f"The video is {info.width} x {info.height} pixels; the limit is 3840 x 2160. Downscale it and upload it again."
        )
    return source


def _without_path(error: Exception, path: Path) -> str:
    """Drop the server-side temporary path from a source error, which means nothing to the uploader."""
    return str(error).replace(f"{path}: ", "").replace(str(path), "the upload")


class _FixedConfidence:
    """Give the pipeline a detector that always runs at one confidence threshold."""

    def __init__(self, detector: SharedDetector | Detector, confidence: float) -> None:
        self.detector = detector
        self.confidence = confidence
        self.names = detector.names

    def detect(self, frames: Sequence[np.ndarray]) -> list[sv.Detections]:
        return self.detector.detect(frames, confidence=self.confidence)


def process_video(
    detector: SharedDetector | Detector,
    path: str | Path,
    out_dir: Path,
    confidence: float = DEFAULT_CONFIDENCE,
    events: EventSettings | None = None,
    progress: Callable[[float, str], None] | None = None,
    max_bytes: int = MAX_VIDEO_BYTES,
    max_seconds: float = MAX_VIDEO_SECONDS,
) -> VideoResult:
    """Detect cigarettes in a clip; write an annotated H.264 MP4 and return events and per-frame confidences.

    Frames are sampled at ``VIDEO_SAMPLE_FPS`` for the model; every decoded
    frame goes into the annotated video with the boxes of the latest sampled one.
    ``confidence`` is the detection threshold; ``progress`` is called with the
    share of the clip done (0-1) and a label.
    """
    if not 0.0 <= confidence <= 1.0:
        raise ValueError(f"confidence must be within [0, 1], got {confidence}")
    source = open_video(path, max_bytes=max_bytes, max_seconds=max_seconds)
    info = source.info
    capped = _DurationCap(source, max_seconds)
    output = Path(out_dir) / "annotated.mp4"
    writer = AnnotatedVideoWriter(output, fps=info.fps, names=detector.names)
    trace = _ConfidenceTrace()
    sinks = SinkSet([writer, trace])
    tracker = EventTracker(events, source_id=Path(path).name, frame_interval=1.0 / VIDEO_SAMPLE_FPS)
    reader = FrameReader(capped, BufferPolicy.KEEP_ALL)
    duration = info.duration or 0.0

    def report(frame: Frame) -> None:
        if progress is not None and frame.sampled and duration > 0:
            progress(min(frame.timestamp / duration, 1.0), "detecting")

    pipeline = Pipeline(reader, _FixedConfidence(detector, confidence), tracker, sinks, batch_size=4, on_frame=report)
    try:
        pipeline.run()
    except SourceError as error:
        raise DemoInputError(f"The video could not be decoded: {_without_path(error, Path(path))}.") from error
    finally:
        sinks.close()
    if sinks.errors or writer.frames_written == 0:
        raise RuntimeError(f"writing the annotated video failed: {'; '.join(sinks.errors) or 'no frame was written'}")

    warning = None
    if capped.truncated:
        warning = f"only the first {max_seconds:.0f} s were processed."
    elif source.stats.error:
        warning = f"decoding stopped at {source.stats.last_timestamp or 0.0:.1f} s ({source.stats.error})."
    return VideoResult(
        annotated_path=output,
        events=[event_record(event, None) for event in tracker.events],
        times=trace.times,
        confidences=trace.confidences,
        duration=source.stats.last_timestamp or duration,
        frames_decoded=source.stats.frames_decoded,
        warning=warning,
    )


def confidence_figure(result: VideoResult, threshold: float = DEFAULT_CONFIDENCE):
    """Plot per-frame top confidence over time with events shaded; returns a matplotlib Figure."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 2.8), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    for record in result.events:
        # A one-frame event would have no width; widen it to one sampling interval so it shows.
        end = max(record["end_s"], record["start_s"] + 1.0 / VIDEO_SAMPLE_FPS)
        axes.axvspan(record["start_s"], end, color="tab:red", alpha=0.2, linewidth=0)
    axes.plot(result.times, result.confidences, color="tab:blue", linewidth=1.2, label="top confidence")
    axes.axhline(threshold, color="grey", linestyle="--", linewidth=0.8, label=f"threshold {threshold:.2f}")
    axes.set_xlim(0, max(result.duration, result.times[-1] if result.times else 0.0, 0.1))
    axes.set_ylim(0, 1)
    axes.set_xlabel("video time (s)")
    axes.set_ylabel("confidence")
    axes.set_title("Top cigarette confidence per sampled frame; smoking events shaded", fontsize=10)
    axes.legend(loc="upper right", fontsize=8)
    return figure


# ---------------------------------------------------------------- webcam


@dataclass
class WebcamSession:
    """Alert state of one browser's camera stream.

    Frames are timed by their arrival at the server (``time.monotonic()``), in
    seconds since the stream's first frame, because the browser sends no capture
    time. The timing therefore includes network and queue delays.
    """

    settings: AlertSettings = field(default_factory=lambda: WEBCAM_ALERTS)
    tracker: AlertTracker | None = None
    started_at: float | None = None
    frames: int = 0

    @property
    def alerts(self) -> int:
        """Number of alerts raised since the stream started."""
        return len(self.tracker.alerts) if self.tracker is not None else 0

    def process(
        self,
        detector: SharedDetector | Detector,
        frame_rgb: np.ndarray,
        confidence: float = DEFAULT_CONFIDENCE,
        now: float | None = None,
    ) -> tuple[np.ndarray, str]:
        """Detect on one camera frame; return the annotated RGB frame and a Markdown status.

        ``now`` is the frame's arrival time on the ``time.monotonic()`` clock;
        callers pass it when the frame waited for the model before this call.
        Every drawn box counts towards an alert, so the slider sets both.
        """
        now = time.monotonic() if now is None else now
        if self.tracker is None or self.started_at is None:
            self.tracker = AlertTracker(self.settings, camera="webcam")
            self.started_at = now
        frame_bgr = np.ascontiguousarray(_rgb_frame(frame_rgb)[:, :, ::-1])
        detections = detector.detect([frame_bgr], confidence=confidence)[0]
        timestamp = now - self.started_at
        for change in self.tracker.update(timestamp, detections):
            _log_alert_change(change)
        self.frames += 1
        annotated = annotate(frame_bgr, detections, detector.names)[:, :, ::-1].copy()
        return annotated, self.status(timestamp, len(detections), top_confidence(detections))

    def status(self, timestamp: float, boxes: int, top: float) -> str:
        """Return the Markdown status line: the alert state, then this frame's detections."""
        frame_text = f"frame {self.frames} at {timestamp:.1f} s: {boxes} box(es), top confidence {top:.2f}"
        return f"{self._alert_state(timestamp)}\n\n{frame_text} · alerts raised: {self.alerts}"

    def _alert_state(self, timestamp: float) -> str:
        tracker = self.tracker
        active = tracker.active
        if active is not None:
            return (
                f"🔴 **Alert {active.alert_id} raised** at {active.raised_at:.1f} s: smoking since {active.onset:.1f} s, "
                f"peak confidence {active.peak_confidence:.2f}. It clears after {self.settings.clear_after:g} s without a cigarette."
            )
        last = tracker.alerts[-1] if tracker.alerts else None
        cooldown_note = ""
        if last is not None and timestamp < last.cleared_at + self.settings.cooldown:
            cooldown_note = f" No new alert before {last.cleared_at + self.settings.cooldown:.1f} s (cooldown)."
        if tracker.pending:
            return (
                f"🟠 **Cigarette seen**, no alert yet: an alert is raised once smoking lasts {self.settings.min_duration:g} s "
                f"with a cigarette in at least {self.settings.min_positive_fraction:.0%} of frames.{cooldown_note}"
            )
        if last is not None:
            return (
                f"🟢 **Alert {last.alert_id} cleared** at {last.cleared_at:.1f} s: smoking from {last.onset:.1f} s "
                f"to {last.last_positive:.1f} s, peak confidence {last.peak_confidence:.2f}.{cooldown_note}"
            )
        return "🟢 **No alert**: no smoking seen."


def _log_alert_change(change: AlertChange) -> None:
    alert = change.alert
    if change.kind == "raised":
        logger.info(
            "webcam: alert %d raised at %.1f s, smoking since %.1f s, peak confidence %.2f",
            alert.alert_id,
            alert.raised_at,
            alert.onset,
            alert.peak_confidence,
        )
    else:
        logger.info("webcam: alert %d cleared at %.1f s (%s)", alert.alert_id, alert.cleared_at, alert.clear_reason)


def _rgb_frame(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return np.dstack([frame, frame, frame])
    if frame.shape[2] == 4:
        return frame[:, :, :3]
    return frame


# ---------------------------------------------------------------- files and environment


class TempArea:
    """A private temporary folder for annotated videos; request folders older than ``max_age`` seconds are pruned."""

    def __init__(self, max_age: float = 3600.0, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="smokedet-app-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_age = max_age

    def new_dir(self) -> Path:
        self.prune()
        return Path(tempfile.mkdtemp(prefix="request-", dir=self.root))

    def prune(self, now: float | None = None) -> int:
        """Remove request folders older than ``max_age``; return how many were removed."""
        now = time.time() if now is None else now
        removed = 0
        for child in self.root.glob("request-*"):
            try:
                if now - child.stat().st_mtime > self.max_age:
                    shutil.rmtree(child, ignore_errors=True)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def ensure_ffmpeg_on_path(bin_dir: Path) -> Path | None:
    """Put an ``ffmpeg`` on PATH for Gradio, linking imageio-ffmpeg's versioned binary into ``bin_dir``.

    Gradio 6.31 treats ``ffmpeg`` on PATH as a sign that ``ffprobe`` is there too:
    it then probes every returned video with ``ffprobe`` and raises when that is
    missing. imageio-ffmpeg ships no ``ffprobe``, so the link is made only when an
    ``ffprobe`` is found; without one Gradio skips its conversion step, which the
    demo does not need because it returns H.264 MP4 already.
    Returns the ``ffmpeg`` now on PATH, or None.
    """
    existing = shutil.which("ffmpeg")
    if existing:
        return Path(existing)
    if shutil.which("ffprobe") is None:
        logger.info("no ffprobe on PATH, so imageio-ffmpeg's ffmpeg is not put on PATH for Gradio")
        return None
    import imageio_ffmpeg

    bin_dir.mkdir(parents=True, exist_ok=True)
    link = bin_dir / "ffmpeg"
    if not link.exists():
        link.symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    return link


def model_card_path(weights: Path) -> Path:
    """Return the card of a weights file: ``<stem>.md`` beside it, as ``smokedet train`` writes it.

    The shipped default model's card is ``MODEL_CARD.md``.
    """
    weights = Path(weights)
    own_card = weights.with_suffix(".md")
    if own_card.is_file() or weights.resolve() != DEFAULT_WEIGHTS.resolve():
        return own_card
    return weights.with_name("MODEL_CARD.md")


def read_model_card(path: Path, max_chars: int = 20_000) -> str:
    """Return the model card's Markdown, or a placeholder line saying it is missing."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return f"*No model card found at `{Path(path).name}` next to the weights; its figures and data licences will show here once it is published.*"
    except (OSError, UnicodeDecodeError) as error:
        return f"*The model card `{Path(path).name}` could not be read: {error}.*"
    if len(text) > max_chars:
        text = text[:max_chars] + "\n\n*(model card shortened)*"
    return text


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """Parse ``user:password`` into a tuple; raise ValueError when either part is empty."""
    if not text:
        return None
    user, separator, password = text.partition(":")
    if not separator or not user or not password:
        raise ValueError("basic auth must be given as user:password, with neither part empty")
    return user, password
