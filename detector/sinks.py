"""Where frames and events go: evidence images, annotated H.264 video, JSON files.

Every sink has the same three methods. :class:`SinkSet` calls them and isolates
failures: a sink that raises is logged, recorded and switched off, and the
others keep running.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import supervision as sv

from detector.events import EventChange, SmokingEvent
from detector.sources import Frame, redact_url

logger = logging.getLogger(__name__)


class SinkError(Exception):
    """A sink could not write its output."""


class Sink(Protocol):
    def on_frame(self, frame: Frame, detections: sv.Detections) -> None: ...

    def on_event(self, change: EventChange) -> None: ...

    def close(self) -> None: ...


class SinkSet:
    """Fan frames and events out to sinks; one failing sink never stops the others."""

    def __init__(self, sinks: Iterable[Sink] = ()) -> None:
        self._sinks: list[Sink] = list(sinks)
        self.errors: list[str] = []

    def add(self, sink: Sink) -> None:
        self._sinks.append(sink)

    def on_frame(self, frame: Frame, detections: sv.Detections) -> None:
        self._call("on_frame", frame, detections)

    def on_event(self, change: EventChange) -> None:
        self._call("on_event", change)

    def close(self) -> None:
        self._call("close")

    def abort(self) -> None:
        """Discard unfinished outputs of sinks that support it (after an interruption); close the rest."""
        for sink in self._sinks:
            finish = getattr(sink, "abort", None) or sink.close
            try:
                finish()
            except Exception as error:  # Already stopping; report and go on with the other sinks.
                logger.error("discarding the output of %s failed: %s", type(sink).__name__, error)

    def _call(self, method: str, *arguments: Any) -> None:
        for sink in list(self._sinks):
            try:
                getattr(sink, method)(*arguments)
            except Exception as error:  # A sink may fail in any way; the video loop must go on.
                message = str(error) if isinstance(error, SinkError) else f"{type(sink).__name__}: {error}"
                logger.error("sink failed and is switched off: %s", message)
                self.errors.append(message)
                self._sinks.remove(sink)
                if method != "close":
                    _close_quietly(sink)


def _close_quietly(sink: Sink) -> None:
    try:
        sink.close()
    except Exception as error:  # Already failed once; the first error is the one reported.
        logger.debug("closing failed sink %s also failed: %s", type(sink).__name__, error)


_BOX_ANNOTATOR = sv.BoxAnnotator(thickness=2)
_LABEL_ANNOTATOR = sv.LabelAnnotator(text_scale=0.5, text_thickness=1)


def annotate(image: np.ndarray, detections: sv.Detections | None, names: dict[int, str] | None = None) -> np.ndarray:
    """Draw boxes and ``name confidence`` labels on a copy of a BGR image."""
    canvas = image.copy()
    if detections is None or len(detections) == 0:
        return canvas
    names = names or {0: "cigarette"}
    labels = []
    for class_id, confidence in zip(detections.class_id, detections.confidence):
        labels.append(f"{names.get(int(class_id), str(class_id))} {confidence:.2f}")
    canvas = _BOX_ANNOTATOR.annotate(scene=canvas, detections=detections)
    return _LABEL_ANNOTATOR.annotate(scene=canvas, detections=detections, labels=labels)


def write_jpeg(path: Path, image: np.ndarray, quality: int = 90) -> Path:
    """Write a JPEG through a temporary name; raise SinkError when it cannot be written."""
    path = Path(path)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise SinkError(f"{path}: JPEG encoding failed")
    write_bytes_atomic(path, encoded.tobytes())
    return path


def write_json(path: Path, payload: Any) -> Path:
    """Write JSON through a temporary name, so a reader never sees half a file."""
    text = json.dumps(payload, indent=2, ensure_ascii=False, default=_json_default) + "\n"
    write_bytes_atomic(Path(path), text.encode("utf-8"))
    return Path(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` through a temporary name, creating missing folders; raise SinkError on any OSError."""
    temporary = path.with_name(f".{path.name}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass  # A read-only or vanished folder: the write error below is the one to report.
        raise SinkError(f"{path}: cannot write ({error.strerror or error})") from error


class EvidenceWriter:
    """Save the annotated peak frame of each closed event as a JPEG."""

    def __init__(self, directory: Path, names: dict[int, str] | None = None, prefix: str = "event") -> None:
        self.directory = Path(directory)
        self.names = names
        self.prefix = prefix
        self.paths: dict[int, Path] = {}

    def on_frame(self, frame: Frame, detections: sv.Detections) -> None:
        pass

    def on_event(self, change: EventChange) -> None:
        if change.kind != "closed" or change.event.evidence_image is None:
            return
        self.paths[change.event.event_id] = self.save(change.event)

    def save(self, event: SmokingEvent) -> Path:
        image = annotate(event.evidence_image, event.evidence_detections, self.names)
        path = self.directory / f"{self.prefix}-{event.event_id:03d}-{event.peak_time:08.2f}s.jpg"
        return write_jpeg(path, image)

    def close(self) -> None:
        pass


class AnnotatedVideoWriter:
    """Write annotated frames to an H.264 MP4 (yuv420p, plays in browsers) with PyAV.

    Frames keep their source timestamps, so a video of sampled frames plays at the
    right speed. The file appears under its final name only when closed without error.
    """

    def __init__(self, path: Path, fps: float, names: dict[int, str] | None = None, crf: int = 26) -> None:
        self.path = Path(path)
        self.fps = fps
        self.names = names
        self.crf = crf
        self._temporary = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self._container = None
        self._stream = None
        self._last_pts = -1
        self._last_detections: sv.Detections | None = None
        self.frames_written = 0

    def _open(self, width: int, height: int) -> None:
        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._container = av.open(str(self._temporary), mode="w", format="mp4")
            rate = Fraction(self.fps).limit_denominator(1001)
            self._stream = self._container.add_stream("libx264", rate=rate)
        except (av.error.FFmpegError, OSError, ValueError) as error:
            raise SinkError(f"{self.path}: cannot open the video writer ({error})") from error
        # yuv420p needs even dimensions; frames are cropped by at most one pixel.
        self._stream.width = width - width % 2
        self._stream.height = height - height % 2
        self._stream.pix_fmt = "yuv420p"
        self._stream.time_base = Fraction(1, 1000)
        # Millisecond timestamps need a millisecond codec clock too: with the default of
        # 1/fps, variable-frame-rate input puts two frames on one tick and the encoder fails.
        self._stream.codec_context.time_base = Fraction(1, 1000)
        self._stream.options = {"crf": str(self.crf), "preset": "veryfast", "movflags": "+faststart"}

    def on_frame(self, frame: Frame, detections: sv.Detections) -> None:
        import av

        if frame.sampled:
            self._last_detections = detections
        if self._container is None:
            self._open(frame.image.shape[1], frame.image.shape[0])
        image = annotate(frame.image, self._last_detections, self.names)
        image = image[: self._stream.height, : self._stream.width]
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        pts = max(int(round(frame.timestamp * 1000)), self._last_pts + 1)
        video_frame.pts = pts
        video_frame.time_base = Fraction(1, 1000)
        self._last_pts = pts
        try:
            for packet in self._stream.encode(video_frame):
                self._container.mux(packet)
        except (av.error.FFmpegError, OSError) as error:
            raise SinkError(f"{self.path}: writing a frame failed ({error})") from error
        self.frames_written += 1

    def on_event(self, change: EventChange) -> None:
        pass

    def close(self) -> None:
        import av

        if self._container is None:
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        except (av.error.FFmpegError, OSError) as error:
            self._temporary.unlink(missing_ok=True)
            raise SinkError(f"{self.path}: finishing the video failed ({error})") from error
        finally:
            self._container = None
        os.replace(self._temporary, self.path)

    def abort(self) -> None:
        """Close the encoder and delete the unfinished file, so no truncated video is left."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception as error:  # The file is deleted next whatever state it is in.
                logger.debug("closing the unfinished %s failed: %s", self._temporary, error)
            self._container = None
        self._temporary.unlink(missing_ok=True)


def event_record(event: SmokingEvent, evidence: Path | None, base: Path | None = None) -> dict[str, Any]:
    """Return the JSON form of an event; ``evidence`` is made relative to ``base`` when given."""
    if evidence is not None and base is not None:
        try:
            evidence = evidence.relative_to(base)
        except ValueError:
            pass
    return {
        "id": event.event_id,
        "start_s": round(event.start, 3),
        "end_s": round(event.end, 3),
        "duration_s": round(event.duration, 3),
        "start": format_timestamp(event.start),
        "end": format_timestamp(event.end),
        "peak_confidence": round(event.peak_confidence, 4),
        "peak_s": round(event.peak_time, 3),
        "peak_frame": event.peak_frame_index,
        "positive_frames": event.positive_frames,
        "sampled_frames": event.sampled_frames,
        "evidence": str(evidence) if evidence is not None else None,
    }


def format_timestamp(seconds: float) -> str:
    """Format seconds as ``HH:MM:SS.mmm``."""
    milliseconds = int(round(seconds * 1000))
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, milliseconds = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}.{milliseconds:03d}"


# ---------------------------------------------------------------------------
# Live monitoring outputs: the JSON-lines event log, webhooks, private evidence, retention.

EVENT_LOG_PREFIX = "events-"
EVENT_LOG_SUFFIX = ".jsonl"


class EventLog:
    """Append JSON records, one per line, to ``events-YYYY-MM-DD.jsonl`` (UTC date) under a folder.

    Each line is flushed and fsync'ed before :meth:`write` returns, so a crash or
    a power cut loses at most the line being written. A new file starts when the
    UTC date changes, which lets retention delete whole days. Safe to call from
    several threads.
    """

    def __init__(self, directory: Path, clock=None) -> None:
        import threading
        import time

        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._clock = clock or time.time
        self._lock = threading.Lock()
        self._handle = None
        self._date: str | None = None
        self.lines_written = 0

    @property
    def path(self) -> Path | None:
        """The file written to now, or None before the first line."""
        return None if self._date is None else self.directory / f"{EVENT_LOG_PREFIX}{self._date}{EVENT_LOG_SUFFIX}"

    def write(self, record: dict[str, Any]) -> None:
        """Append one record as a line; raise SinkError when the file cannot be written."""
        line = json.dumps(record, ensure_ascii=False, default=_json_default, separators=(",", ":")) + "\n"
        with self._lock:
            handle = self._handle_for_today()
            try:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            except OSError as error:
                raise SinkError(f"{self.path}: cannot append to the event log ({error.strerror or error})") from error
            self.lines_written += 1

    def _handle_for_today(self):
        from datetime import datetime, timezone

        date = datetime.fromtimestamp(self._clock(), tz=timezone.utc).strftime("%Y-%m-%d")
        if date != self._date or self._handle is None:
            self._close_handle()
            self._date = date
            try:
                self._handle = open(self.path, "a", encoding="utf-8")
            except OSError as error:
                raise SinkError(f"{self.path}: cannot open the event log ({error.strerror or error})") from error
        return self._handle

    def _close_handle(self) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None

    def close(self) -> None:
        with self._lock:
            self._close_handle()


@dataclass(frozen=True)
class WebhookSettings:
    """Delivery of alerts by HTTP POST; times in seconds."""

    url: str
    timeout: float = 5.0  # Per request: connect and read.
    max_attempts: int = 4  # Per delivery, the first try included.
    initial_backoff: float = 1.0
    max_backoff: float = 30.0
    queue_size: int = 100  # Deliveries waiting; when full, the oldest one is dropped.

    def __post_init__(self) -> None:
        if not self.url.lower().startswith(("http://", "https://")):
            # Only the scheme is shown, because the rest of a webhook URL may be its secret.
            scheme = self.url.partition("://")[0] if "://" in self.url else "none"
            raise ValueError(f"webhook URL must start with http:// or https://, got scheme {scheme!r}")
        if self.timeout <= 0:
            raise ValueError(f"webhook timeout must be positive seconds, got {self.timeout}")
        if self.max_attempts < 1:
            raise ValueError(f"webhook max_attempts must be at least 1, got {self.max_attempts}")
        if self.initial_backoff <= 0 or self.max_backoff < self.initial_backoff:
            raise ValueError(
                f"webhook backoff must satisfy 0 < initial ({self.initial_backoff}) <= max ({self.max_backoff})"
            )
        if self.queue_size < 1:
            raise ValueError(f"webhook queue_size must be at least 1, got {self.queue_size}")


class WebhookSender:
    """POST JSON payloads from a background thread, so a slow or dead receiver never stalls the caller.

    :meth:`send` only queues. The worker retries connection errors, timeouts,
    HTTP 429 and 5xx responses with capped exponential backoff, and gives up on
    other 4xx responses at once. When the bounded queue is full the oldest waiting
    delivery is dropped and counted, with a warning.
    """

    def __init__(self, settings: WebhookSettings, session=None) -> None:
        import collections
        import threading

        import requests

        self.settings = settings
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self._session = session or requests.Session()
        # Each payload waits with whether the event log recorded it, which the failure messages report.
        self._pending: collections.deque[tuple[dict[str, Any], bool]] = collections.deque()
        self._condition = threading.Condition()
        self._stopping = threading.Event()
        self._abandon = threading.Event()
        # Only scheme, host and port are logged: Slack- and Discord-style URLs carry the secret in the path.
        self._target = _url_origin(settings.url)
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        with self._condition:
            return len(self._pending)

    def send(self, payload: dict[str, Any], in_event_log: bool = True) -> None:
        """Queue one payload for delivery; the network is only used by the worker thread.

        ``in_event_log`` tells whether the caller's event log recorded the payload,
        so that a failed delivery is reported as lost when it did not.
        """
        with self._condition:
            if len(self._pending) >= self.settings.queue_size:
                _, dropped_in_log = self._pending.popleft()
                self.dropped += 1
                logger.warning(
                    "webhook %s: queue full (%d waiting), dropped the oldest delivery (%d dropped so far); %s",
                    self._target,
                    self.settings.queue_size,
                    self.dropped,
                    _event_log_note(dropped_in_log),
                )
            self._pending.append((payload, in_event_log))
            self._condition.notify()

    def close(self, drain_seconds: float = 5.0) -> None:
        """Stop the worker after at most ``drain_seconds`` spent delivering what is queued."""
        self._stopping.set()
        with self._condition:
            self._condition.notify()
        self._thread.join(timeout=drain_seconds)
        if self._thread.is_alive():
            self._abandon.set()
            self._thread.join(timeout=self.settings.timeout + 1)
        with self._condition:
            left = list(self._pending)
        if left:
            unlogged = sum(1 for _, in_event_log in left if not in_event_log)
            note = "the event log has them" if not unlogged else f"{unlogged} of them are missing from the event log too"
            logger.warning("webhook %s: %d delivery(ies) not sent at shutdown; %s", self._target, len(left), note)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._pending and not self._stopping.is_set():
                    self._condition.wait()
                if not self._pending or self._abandon.is_set():
                    return
                payload, in_event_log = self._pending.popleft()
            self._deliver(payload, in_event_log)

    def _deliver(self, payload: dict[str, Any], in_event_log: bool) -> None:
        import requests

        body = json.dumps(payload, ensure_ascii=False, default=_json_default).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        for attempt in range(1, self.settings.max_attempts + 1):
            try:
                response = self._session.post(self.settings.url, data=body, headers=headers, timeout=self.settings.timeout)
            except requests.RequestException as error:
                reason = _hide_url_path(f"{type(error).__name__}: {error}", self.settings.url)
            else:
                if response.status_code < 300:
                    self.delivered += 1
                    return
                reason = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code != 429:
                    break
            if attempt == self.settings.max_attempts or self._abandon.is_set():
                break
            delay = min(self.settings.max_backoff, self.settings.initial_backoff * 2 ** (attempt - 1))
            logger.warning(
                "webhook %s: attempt %d of %d failed (%s); retrying in %g s",
                self._target,
                attempt,
                self.settings.max_attempts,
                reason,
                delay,
            )
            if self._abandon.wait(delay):
                break
        self.failed += 1
        logger.error("webhook %s: delivery failed (%s); %s", self._target, reason, _event_log_note(in_event_log))


def _url_origin(url: str) -> str:
    """Return ``scheme://host[:port]`` of a URL, without user info, path, query or fragment."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal.
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def _hide_url_path(text: str, url: str) -> str:
    """Replace ``url`` and its path with ``***`` in an error message; requests errors name the path."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    text = text.replace(url, f"{_url_origin(url)}/***")
    for secret in (parts.path + (f"?{parts.query}" if parts.query else ""), parts.path):
        if secret not in ("", "/"):
            text = text.replace(secret, "/***")
    return redact_url(text)


def _event_log_note(in_event_log: bool) -> str:
    return "the event log still has it" if in_event_log else "the event log write failed too, so it is lost"


# Haar cascade files that opencv-python 4.x wheels ship in cv2.data.haarcascades (5.x wheels ship none).
FRONTAL_FACE_CASCADE = "haarcascade_frontalface_default.xml"
PROFILE_FACE_CASCADE = "haarcascade_profileface.xml"
# Haar detection runs on a copy whose longer side is at most this many pixels, because its
# cost grows with pixel count. Measured with three cascade passes on a 2-core CPU that was
# also running a training job: about 1 s for a 512x512 image, 2 s for a 1920x1080 frame.
HAAR_MAX_SIDE = 1024
# The smallest face searched for, as a fraction of the image's shorter side (never under the
# cascades' own 24-pixel window).
HAAR_MIN_FACE_FRACTION = 0.04


class FaceBlurrer:
    """Blur faces in evidence images before they are saved.

    Faces are found with OpenCV's YuNet detector (``cv2.FaceDetectorYN``) when a
    YuNet ONNX model file is given, and otherwise with the frontal and profile
    Haar cascades bundled with opencv-python 4.x (``cv2.data.haarcascades``).
    Each face is blurred together with a margin of a quarter of its box. When a
    cascade file is missing or cannot be loaded, one warning is logged and the
    whole image except the detection boxes is blurred instead, which hides faces
    at the cost of context.
    """

    def __init__(
        self, face_model: Path | None = None, score_threshold: float = 0.6, cascade_dir: Path | None = None
    ) -> None:
        self.face_model = None if face_model is None else Path(face_model)
        self._yunet = None
        self._cascades: list[cv2.CascadeClassifier] = []
        if self.face_model is not None:
            self._yunet = _load_yunet(self.face_model, score_threshold)
            return
        try:
            directory = _cascade_directory() if cascade_dir is None else Path(cascade_dir)
            self._cascades = [_load_cascade(directory / name) for name in (FRONTAL_FACE_CASCADE, PROFILE_FACE_CASCADE)]
        except SinkError as error:
            logger.warning(
                "--privacy: %s. Evidence images are blurred everywhere except the detection boxes instead.", error
            )

    @property
    def mode(self) -> str:
        """``faces`` when faces are detected, ``outside-detections`` for the fallback."""
        return "faces" if self._yunet is not None or self._cascades else "outside-detections"

    @property
    def face_detector(self) -> str | None:
        """Name of the face detector in use: ``yunet``, ``haar``, or None in the fallback."""
        if self._yunet is not None:
            return "yunet"
        return "haar" if self._cascades else None

    def apply(self, image: np.ndarray, detections: sv.Detections | None) -> np.ndarray:
        """Return a copy of a BGR image with faces (or everything but the detections) blurred."""
        if self.mode == "outside-detections":
            return self._blur_outside(image, detections)
        canvas = image.copy()
        height, width = image.shape[:2]
        for x, y, w, h in self.find_faces(image):
            # A margin of a quarter of the box also covers hair, ears and chin.
            x0, y0 = max(0, x - w // 4), max(0, y - h // 4)
            x1, y1 = min(width, x + w + w // 4), min(height, y + h + h // 4)
            if x1 > x0 and y1 > y0:
                canvas[y0:y1, x0:x1] = _obscure_face(canvas[y0:y1, x0:x1])
        return canvas

    def find_faces(self, image: np.ndarray) -> np.ndarray:
        """Find faces in a BGR image and return their boxes as an (N, 4) int array of x, y, width, height in pixels.

        The array is empty in the outside-detections fallback, which has no face detector.
        """
        if self._yunet is not None:
            return self._find_faces_yunet(image)
        if self._cascades:
            return self._find_faces_haar(image)
        return np.empty((0, 4), dtype=int)

    def _find_faces_yunet(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        self._yunet.setInputSize((width, height))
        _, faces = self._yunet.detect(image)
        if faces is None:
            return np.empty((0, 4), dtype=int)
        return np.round(faces[:, :4]).astype(int)

    def _find_faces_haar(self, image: np.ndarray) -> np.ndarray:
        gray = _equalised_gray(image)
        height, width = gray.shape
        scale = min(1.0, HAAR_MAX_SIDE / max(height, width))
        if scale < 1.0:
            gray = cv2.resize(gray, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        side = max(24, round(min(gray.shape) * HAAR_MIN_FACE_FRACTION))
        frontal, profile = self._cascades
        boxes = [_detect(frontal, gray, side), _detect(profile, gray, side)]
        # The profile cascade finds faces turned one way only, so it also runs on a mirrored copy.
        mirrored = _detect(profile, cv2.flip(gray, 1), side)
        mirrored[:, 0] = gray.shape[1] - mirrored[:, 0] - mirrored[:, 2]
        boxes.append(mirrored)
        return np.round(np.concatenate(boxes) / scale).astype(int)

    @staticmethod
    def _blur_outside(image: np.ndarray, detections: sv.Detections | None) -> np.ndarray:
        canvas = _strong_blur(image)
        if detections is not None:
            for x0, y0, x1, y1 in detections.xyxy.astype(int):
                canvas[y0:y1, x0:x1] = image[y0:y1, x0:x1]
        return canvas


def _load_yunet(path: Path, score_threshold: float) -> cv2.FaceDetectorYN:
    if not path.is_file():
        raise SinkError(f"face model {str(path)!r} not found: pass a YuNet .onnx file")
    try:
        return cv2.FaceDetectorYN.create(str(path), "", (320, 320), score_threshold)
    except cv2.error as error:
        raise SinkError(f"face model {str(path)!r} could not be loaded: {error}") from error


def _cascade_directory() -> Path:
    bundled = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if bundled is None:
        raise SinkError(
            "this OpenCV build has no cv2.data.haarcascades: install opencv-python 4.x, which ships the cascades"
        )
    return Path(bundled)


def _load_cascade(path: Path) -> cv2.CascadeClassifier:
    if not path.is_file():
        raise SinkError(f"Haar cascade {str(path)!r} not found: install opencv-python 4.x, as 5.x wheels ship no cascades")
    invalid = f"Haar cascade {str(path)!r} could not be loaded: it is not a valid cascade XML file"
    try:
        cascade = cv2.CascadeClassifier(str(path))
    except (cv2.error, SystemError) as error:
        # opencv-python 4.14 reports a file it cannot parse as a SystemError wrapping the cv2.error.
        raise SinkError(invalid) from error
    if cascade.empty():
        raise SinkError(invalid)
    return cascade


def _equalised_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        gray = image
    elif image.shape[2] == 4:
        gray = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    else:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    # Equalising the histogram makes the cascades less sensitive to dim or washed-out frames.
    return cv2.equalizeHist(gray)


def _detect(cascade: cv2.CascadeClassifier, gray: np.ndarray, min_side: int) -> np.ndarray:
    faces = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
    return np.asarray(faces, dtype=float).reshape(-1, 4)


def _obscure_face(region: np.ndarray) -> np.ndarray:
    # Shrinking the face to at most 8 pixels across discards its detail for good, unlike a
    # Gaussian blur alone, which deconvolution can partly undo. The Gaussian blur afterwards
    # smooths the upscaled result.
    # NOTE: 8 pixels keep the coarse colour layout, so people who know the person well may
    # still recognise them from it, together with clothes and surroundings.
    height, width = region.shape[:2]
    scale = min(1.0, 8 / min(height, width))
    small = cv2.resize(region, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    coarse = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    return _strong_blur(coarse)


def _strong_blur(region: np.ndarray) -> np.ndarray:
    # A kernel of a third of the region's size leaves no recognisable facial features.
    size = max(3, (min(region.shape[:2]) // 3) | 1)
    return cv2.GaussianBlur(region, (size, size), 0)


def delete_older_than(directory: Path, days: float, patterns: Iterable[str], now: float | None = None) -> list[Path]:
    """Delete regular files matching any pattern whose modification time is over ``days`` old.

    Each pattern is a path relative to ``directory`` whose parts are matched with
    :func:`fnmatch.fnmatchcase` (``evidence/*/*.jpg`` reaches exactly two folders
    down). Symbolic links are neither followed nor deleted, so nothing outside
    ``directory`` is touched. Returns the deleted paths; files that cannot be
    deleted are logged and kept.
    """
    import time

    cutoff = (time.time() if now is None else now) - days * 86_400
    deleted: list[Path] = []
    for pattern in patterns:
        for path in _match_without_symlinks(Path(directory), pattern.split("/")):
            try:
                if path.lstat().st_mtime < cutoff:
                    path.unlink()
                    deleted.append(path)
            except OSError as error:
                logger.warning("%s: cannot delete expired file (%s)", path, error.strerror or error)
    return deleted


def _match_without_symlinks(directory: Path, parts: list[str]) -> list[Path]:
    """Return the regular files under ``directory`` whose relative path matches ``parts``, never entering a link."""
    import fnmatch

    try:
        entries = list(os.scandir(directory))
    except OSError as error:
        if not isinstance(error, FileNotFoundError):
            logger.warning("%s: cannot list the folder for retention (%s)", directory, error.strerror or error)
        return []
    found: list[Path] = []
    for entry in entries:
        if not fnmatch.fnmatchcase(entry.name, parts[0]):
            continue
        if len(parts) > 1:
            if entry.is_dir(follow_symlinks=False):
                found += _match_without_symlinks(Path(entry.path), parts[1:])
        elif entry.is_file(follow_symlinks=False):
            found.append(Path(entry.path))
    return found


def check_output_folder(out_dir: Path) -> str | None:
    """Create ``out_dir`` and write and delete a probe file in it; return why that failed, or None.

    Checking at start makes an unusable --out fail before the model loads, not at the first alert.
    """
    if out_dir.exists() and not out_dir.is_dir():
        return f"--out {str(out_dir)!r} is a file; pass a folder"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"--out {str(out_dir)!r}: cannot create the folder ({error.strerror or error}); pass a writable folder"
    try:
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".smokedet-probe-"):
            pass
    except OSError as error:
        return f"--out {str(out_dir)!r} is not writable ({error.strerror or error}); pass a writable folder"
    return None
