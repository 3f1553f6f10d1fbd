"""Where frames and events go: evidence images, annotated H.264 video, JSON files.

Every sink has the same three methods. :class:`SinkSet` calls them and isolates
failures: a sink that raises is logged, recorded and switched off, and the
others keep running.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import supervision as sv

from detector.events import EventChange, SmokingEvent
from detector.sources import Frame

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

    def _call(self, method: str, *arguments: Any) -> None:
        for sink in list(self._sinks):
            try:
                getattr(sink, method)(*arguments)
            except Exception as error:  # A sink may fail in any way; the video loop must go on.
                message = f"{type(sink).__name__}: {error}"
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
    path.parent.mkdir(parents=True, exist_ok=True)
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
    temporary = path.with_name(f".{path.name}.partial")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
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
