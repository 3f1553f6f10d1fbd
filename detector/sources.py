"""Frame sources: video decoding in a reader thread into a bounded buffer.

A source yields :class:`Frame` values in presentation order. :class:`FrameReader`
runs a source in its own thread and hands frames over through a buffer whose
policy depends on the kind of source: a file scan keeps every sampled frame and
blocks the decoder when the consumer is slow, a live camera keeps the newest
frames and drops the oldest.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import queue
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# Frame rates outside this range are treated as broken metadata.
MIN_PLAUSIBLE_FPS = 1.0
MAX_PLAUSIBLE_FPS = 240.0
FALLBACK_FPS = 25.0


class SourceError(Exception):
    """A source could not be opened or read."""


class SourceOpenError(SourceError):
    """The input is missing, not a video, or has no video stream."""


class SourceDecodeError(SourceError):
    """Decoding failed before any frame came out."""


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    ``timestamp`` is in seconds of video time from the start of the stream;
    ``captured_at`` is the ``time.monotonic()`` value when the frame was decoded,
    which live sources use to measure lag.
    """

    index: int
    timestamp: float
    image: np.ndarray
    sampled: bool = True
    captured_at: float = field(default_factory=time.monotonic)
    source_id: str = ""


@dataclass
class VideoInfo:
    """Metadata of a video file's first video stream, as its container reports it."""

    path: str
    width: int
    height: int
    fps: float
    fps_from_metadata: bool
    frames_expected: int | None
    frames_counted: bool  # True when the container stores the frame count, False for an estimate from duration.
    duration: float | None
    rotation: int
    codec: str
    creation_time: str | None = None


@dataclass
class DecodeStats:
    """Counters of what the decoder delivered, updated while decoding."""

    frames_decoded: int = 0
    frames_sampled: int = 0
    last_timestamp: float | None = None
    error: str | None = None  # Reason reading stopped before the end of the file, if it did.
    corrupt_packets: int = 0
    first_corruption: str | None = None


class Sampler:
    """Pick frames at a fixed rate of video time, or every frame when ``fps`` is None."""

    def __init__(self, fps: float | None) -> None:
        if fps is not None and fps <= 0:
            raise ValueError(f"sample rate must be positive frames per second, got {fps}")
        self.interval = None if fps is None else 1.0 / fps
        self._origin: float | None = None
        self._next_slot = 0  # The frame kept next is the first at or after origin + slot * interval.

    def keep(self, timestamp: float) -> bool:
        if self.interval is None:
            return True
        if self._origin is None:
            self._origin = timestamp
        # The tolerance keeps 30 fps frames on a 5 fps grid despite floating-point rounding.
        slot = math.floor((timestamp - self._origin) / self.interval + 1e-6)
        if slot < self._next_slot:
            return False
        self._next_slot = slot + 1
        return True


def _plausible_fps(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and MIN_PLAUSIBLE_FPS <= value <= MAX_PLAUSIBLE_FPS


class VideoFileSource:
    """Decode a video file with PyAV, applying the container's rotation metadata.

    Timestamps come from each frame's presentation time, so a file whose frame-rate
    metadata is 0 or absurd still gets correct times; the frame rate is then
    estimated from the timestamps of the first frames.
    """

    def __init__(
        self, path: str | Path, sample_fps: float | None = 5.0, deliver_all: bool = False, decode_threads: int = 1
    ) -> None:
        """``decode_threads`` of 0 lets FFmpeg pick one thread per core."""
        self.path = Path(path)
        self.decode_threads = decode_threads
        self.sample_fps = sample_fps
        self.deliver_all = deliver_all
        self.stats = DecodeStats()
        self._container = None
        self.info = self._open()

    def _open(self) -> VideoInfo:
        import av

        if not self.path.exists():
            raise SourceOpenError(f"{self.path}: file not found")
        if not self.path.is_file():
            raise SourceOpenError(f"{self.path}: not a regular file")
        if self.path.stat().st_size == 0:
            raise SourceOpenError(f"{self.path}: file is empty (0 bytes)")
        try:
            container = av.open(str(self.path), mode="r", metadata_errors="ignore")
        except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as error:
            raise SourceOpenError(
                f"{self.path}: not a readable video ({_ffmpeg_reason(error)}); the file may be truncated or not a video"
            ) from error
        if not container.streams.video:
            container.close()
            raise SourceOpenError(f"{self.path}: contains no video stream")
        if container.format.name == "image2" or container.format.name.endswith("_pipe"):
            container.close()
            raise SourceOpenError(f"{self.path}: is a still image ({container.format.name}), not a video")

        stream = container.streams.video[0]
        # One decoding thread by default: the model runs beside it, on the other cores.
        stream.thread_type = "AUTO"
        stream.thread_count = self.decode_threads
        self._container = container
        self._stream = stream

        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else None
        fps_ok = _plausible_fps(fps)
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        frames_expected = stream.frames or None
        frames_counted = frames_expected is not None
        if frames_expected is None and duration and fps_ok:
            frames_expected = round(duration * fps)  # An estimate: wrong for variable frame rates.
        if not fps_ok:
            logger.warning("%s: frame rate metadata %r is implausible; using frame timestamps", self.path, fps)
        creation = container.metadata.get("creation_time") or stream.metadata.get("creation_time")
        return VideoInfo(
            path=str(self.path),
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=fps if fps_ok else FALLBACK_FPS,
            fps_from_metadata=fps_ok,
            frames_expected=frames_expected,
            frames_counted=frames_counted,
            duration=duration,
            rotation=0,
            codec=stream.codec_context.name,
            creation_time=creation,
        )

    def frames(self) -> Iterator[Frame]:
        """Yield frames in order; raise SourceDecodeError when not one frame decodes.

        Packets that fail to decode are skipped and counted, so a damaged stretch in
        the middle of a file costs only the frames that depend on it. Decoding stops
        early only when the container itself cannot be read further (a truncated file).
        """
        import av

        sampler = Sampler(self.sample_fps)
        start_pts: float | None = None
        index = -1
        try:
            for packet in self._container.demux(self._stream):
                try:
                    decoded_frames = packet.decode()
                except av.error.FFmpegError as error:
                    self.stats.corrupt_packets += 1
                    self.stats.first_corruption = self.stats.first_corruption or _ffmpeg_reason(error)
                    continue
                for decoded in decoded_frames:
                    index += 1
                    timestamp = self._timestamp(decoded, index)
                    if start_pts is None:
                        start_pts = timestamp
                    timestamp = max(0.0, timestamp - start_pts)
                    self.stats.frames_decoded += 1
                    self.stats.last_timestamp = timestamp
                    if index == 0:
                        self.info.rotation = int(getattr(decoded, "rotation", 0) or 0)
                    sampled = sampler.keep(timestamp)
                    if not (sampled or self.deliver_all):
                        continue
                    if sampled:
                        self.stats.frames_sampled += 1
                    image = self._to_bgr(decoded)
                    yield Frame(index=index, timestamp=timestamp, image=image, sampled=sampled, source_id=str(self.path))
        except av.error.FFmpegError as error:
            self.stats.error = _ffmpeg_reason(error)
            if self.stats.frames_decoded == 0:
                raise SourceDecodeError(f"{self.path}: no frame could be decoded ({self.stats.error})") from error
            logger.warning(
                "%s: reading stopped after %d frames at %.2f s: %s",
                self.path,
                self.stats.frames_decoded,
                self.stats.last_timestamp or 0.0,
                self.stats.error,
            )
        finally:
            self.close()
        if self.stats.corrupt_packets:
            logger.warning(
                "%s: skipped %d packets that failed to decode (first: %s)",
                self.path,
                self.stats.corrupt_packets,
                self.stats.first_corruption,
            )
        if self.stats.frames_decoded == 0:
            reason = f" ({self.stats.first_corruption})" if self.stats.first_corruption else ""
            raise SourceDecodeError(f"{self.path}: the video stream contains no decodable frame{reason}")
        if not self.info.fps_from_metadata and self.stats.frames_decoded > 1 and self.stats.last_timestamp:
            self.info.fps = (self.stats.frames_decoded - 1) / self.stats.last_timestamp

    def _timestamp(self, decoded, index: int) -> float:
        if decoded.pts is not None and decoded.time_base is not None:
            return float(decoded.pts * decoded.time_base)
        return index / self.info.fps

    def _to_bgr(self, decoded) -> np.ndarray:
        image = decoded.to_ndarray(format="bgr24")
        # PyAV reports the display matrix as a counterclockwise angle; np.rot90 also turns counterclockwise.
        quarter_turns = round(self.info.rotation / 90) % 4
        if quarter_turns:
            image = np.ascontiguousarray(np.rot90(image, k=quarter_turns))
        return image

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def _ffmpeg_reason(error: Exception) -> str:
    text = getattr(error, "strerror", None) or str(error)
    return text.strip().rstrip(".") or type(error).__name__


class BufferPolicy(str, enum.Enum):
    """Buffering policy of a reader whose consumer is slower than its source."""

    KEEP_ALL = "keep_all"  # Block the decoder: a scan must not lose a sampled frame.
    KEEP_LATEST = "keep_latest"  # Drop the oldest frame: a live view must not fall behind.


@dataclass(frozen=True)
class EndOfStream:
    """The reader's last item, also sent when the source failed."""

    error: Exception | None = None


class FrameReader:
    """Run a source's ``frames()`` in a daemon thread and buffer what it yields."""

    def __init__(self, source, policy: BufferPolicy = BufferPolicy.KEEP_ALL, capacity: int = 32) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity must be at least 1, got {capacity}")
        self.source = source
        self.policy = policy
        self.dropped = 0
        self._queue: queue.Queue = queue.Queue(maxsize=capacity)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"reader-{getattr(source, 'path', 'source')}", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> FrameReader:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the reader to stop and wait up to 5 s for it; it ends after the frame it is decoding."""
        self.request_stop()
        self.join(timeout=5)

    def request_stop(self) -> None:
        """Ask the reader to stop without waiting for it."""
        self._stop.set()
        # Empty the buffer so a decoder blocked on a full buffer wakes up and checks the stop flag.
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for the reader thread to end; return whether it ended."""
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        error: Exception | None = None
        try:
            for frame in self.source.frames():
                if self._stop.is_set():
                    break
                self._put(frame)
        except Exception as caught:  # Handed to the consumer with the end marker.
            error = caught
        finally:
            self._put_end(EndOfStream(error))

    def _put(self, item) -> None:
        if self.policy is BufferPolicy.KEEP_ALL:
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue
            return
        with self._lock:
            while True:
                try:
                    self._queue.put_nowait(item)
                    return
                except queue.Full:
                    try:
                        self._queue.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass

    def _put_end(self, marker: EndOfStream) -> None:
        # The end marker must always arrive, so it may push out a frame even under KEEP_ALL after a stop.
        while True:
            try:
                self._queue.put(marker, timeout=0.1)
                return
            except queue.Full:
                if self._stop.is_set() or self.policy is BufferPolicy.KEEP_LATEST:
                    try:
                        self._queue.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass

    def get(self, timeout: float | None = None):
        """Return the next Frame or EndOfStream; raise queue.Empty after ``timeout`` seconds."""
        return self._queue.get(timeout=timeout)

    def get_nowait(self):
        return self._queue.get_nowait()

    def __iter__(self) -> Iterator[Frame]:
        """Yield frames until the end marker; re-raise the source's error, if any."""
        while True:
            item = self._queue.get()
            if isinstance(item, EndOfStream):
                if item.error is not None:
                    raise item.error
                return
            yield item


# ---------------------------------------------------------------------------
# Live sources: webcams, network streams and files played in real time.

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https")
# The user info ends at the last '@' before the first '/', '?' or '#', as FFmpeg's av_url_split
# reads it, so a password that contains '@' is hidden whole.
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/?#\s]+)@")
# Query and fragment parameters whose value is a secret; names match case-insensitively.
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&#](?:password|passwd|pass|pwd|token|access_token|key|apikey|api_key|api-key|auth|secret|signature|sig)=)"
    r"[^&#\s]*",
    re.IGNORECASE,
)
# OpenCV's FFmpeg backend gives up on an open or a read after this long instead of blocking forever.
# NOTE: opencv-python 4.14 holds one process-wide lock for the whole of each FFmpeg open, so a
# stalled stream delays other cameras' opens by up to this long per attempt (measured with three
# threads opening a silent HTTP server: they returned after 2, 4 and 6 s with a 2 s timeout).
CAPTURE_TIMEOUT_MS = 10_000


def redact_url(text: str) -> str:
    """Replace credentials in every URL inside ``text`` with ``***``.

    Covers ``scheme://user:password@host`` user info and common secret query or
    fragment parameters (``password``, ``token``, ``api_key``, ``sig`` and similar).
    """
    text = _URL_USERINFO.sub(lambda match: f"{match['scheme']}***@", text)
    return _SECRET_QUERY.sub(lambda match: f"{match['key']}***", text)


class SourceConnectionError(SourceError):
    """A live source could not be opened or stopped delivering frames, and no retry is left."""


class SourceKind(str, enum.Enum):
    WEBCAM = "webcam"
    STREAM = "stream"
    FILE = "file"


def source_kind(spec: str) -> SourceKind:
    """Classify a ``--source`` value: a webcam index, a stream URL or a video file path."""
    text = spec.strip()
    if text.isdigit():
        return SourceKind.WEBCAM
    scheme, separator, _ = text.partition("://")
    if separator and scheme.lower() in STREAM_SCHEMES:
        return SourceKind.STREAM
    return SourceKind.FILE


class ConnectionState(str, enum.Enum):
    """States of a live source; every change is logged once."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    LOST = "lost"
    RECONNECTING = "reconnecting"
    ENDED = "ended"  # A file without looping reached its end.
    FAILED = "failed"  # No retry left, or a file that cannot be read.
    STOPPED = "stopped"


@dataclass(frozen=True)
class ReconnectPolicy:
    """Pacing of reconnection attempts: capped exponential backoff in seconds.

    ``max_retries`` counts failed attempts in a row (None: retry forever); a
    connection that delivers a frame resets the count and the delay.
    """

    initial_delay: float = 1.0
    max_delay: float = 30.0
    max_retries: int | None = None

    def __post_init__(self) -> None:
        if self.initial_delay <= 0:
            raise ValueError(f"initial_delay must be positive seconds, got {self.initial_delay}")
        if self.max_delay < self.initial_delay:
            raise ValueError(f"max_delay ({self.max_delay}) must be at least initial_delay ({self.initial_delay})")
        if self.max_retries is not None and self.max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, or None for unlimited, got {self.max_retries}")

    def delay(self, failures: int) -> float:
        """Return the wait before the next attempt after ``failures`` failed attempts in a row."""
        return min(self.max_delay, self.initial_delay * 2 ** max(0, failures - 1))


class LiveSource:
    """A camera, stream or file read as a live feed, reconnecting when it fails.

    ``frames()`` runs until :meth:`close` is called, a file without ``loop``
    ends, or ``policy.max_retries`` attempts in a row fail (then it raises
    SourceConnectionError). Webcams and streams are read with OpenCV's
    ``VideoCapture``. Files are decoded with PyAV and paced at their own frame
    rate, so they behave like a camera. With ``loop`` they restart at the end and
    their timestamps keep increasing.

    Frame timestamps are seconds since ``clock_origin`` (a ``time.monotonic()``
    value) at capture for webcams and streams, and seconds of video time for files.
    ``name`` is what logs call the source; the URL itself is only logged redacted.
    """

    def __init__(
        self,
        spec: str,
        name: str | None = None,
        loop: bool = False,
        policy: ReconnectPolicy | None = None,
        clock_origin: float | None = None,
    ) -> None:
        self.spec = spec.strip()
        self.kind = source_kind(self.spec)
        self.name = name or redact_url(self.spec)
        self.loop = loop
        self.policy = policy or ReconnectPolicy()
        self.clock_origin = time.monotonic() if clock_origin is None else clock_origin
        self.state = ConnectionState.CONNECTING
        self.frames_captured = 0
        self.connections = 0
        self.failed_attempts = 0  # In a row; reset by a connection that delivers a frame.
        self.last_error = ""
        self.logger = logger.getChild(_logger_suffix(self.name))
        self._closed = threading.Event()
        self._index = 0
        self._state_lock = threading.Lock()
        self._capture = None

    @property
    def path(self) -> str:
        """The redacted source, for thread names and messages."""
        return redact_url(self.spec)

    @property
    def is_live(self) -> bool:
        """True for webcams and streams, whose time is capture time."""
        return self.kind is not SourceKind.FILE

    def close(self) -> None:
        """Stop ``frames()`` at the next frame or during a backoff wait."""
        self._closed.set()

    def frames(self) -> Iterator[Frame]:
        """Yield frames until closed, ended or out of retries; reconnect in between."""
        self._set_state(ConnectionState.CONNECTING)
        try:
            while not self._closed.is_set():
                delivered = yield from self._one_connection()
                if self._closed.is_set() or self.state is ConnectionState.ENDED:
                    break
                if delivered:
                    self.failed_attempts = 0
                self.failed_attempts += 1
                if self.policy.max_retries is not None and self.failed_attempts > self.policy.max_retries:
                    self._set_state(ConnectionState.FAILED)
                    raise SourceConnectionError(
                        f"{self.name}: could not read {redact_url(self.spec)} after "
                        f"{self.failed_attempts} attempt(s); check the address, the credentials and that the source is up"
                    )
                delay = self.policy.delay(self.failed_attempts)
                self._set_state(
                    ConnectionState.RECONNECTING, f"in {delay:g} s (attempt {self.failed_attempts + 1}, {self.last_error})"
                )
                if self._closed.wait(delay):
                    break
                self._set_state(ConnectionState.CONNECTING, quiet=True)
        except SourceError:
            self._set_state(ConnectionState.FAILED)
            raise
        finally:
            self._release()
            if self.state not in (ConnectionState.ENDED, ConnectionState.FAILED):
                self._set_state(ConnectionState.STOPPED)

    def _one_connection(self) -> Iterator[Frame]:
        """Yield the frames of one connection; return whether it delivered any."""
        if self.kind is SourceKind.FILE:
            return (yield from self._play_file())
        return (yield from self._capture_frames())

    def _capture_frames(self) -> Iterator[Frame]:
        import cv2

        _quiet_native_logs()
        # The open may wait for another camera's open first (see CAPTURE_TIMEOUT_MS), so this is an upper bound.
        open_started = time.monotonic()
        if self.kind is SourceKind.WEBCAM:
            capture = cv2.VideoCapture(int(self.spec))
        else:
            capture = cv2.VideoCapture(
                self.spec,
                cv2.CAP_FFMPEG,
                [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, CAPTURE_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, CAPTURE_TIMEOUT_MS],
            )
        self._capture = capture
        if not capture.isOpened():
            self._release()
            reason = "could not open the source"
            if self.kind is SourceKind.STREAM and time.monotonic() - open_started >= CAPTURE_TIMEOUT_MS / 1000 - 0.5:
                reason += f": timed out after {CAPTURE_TIMEOUT_MS / 1000:g} s"
            # During a streak of failed attempts only the reconnecting line is logged.
            self._set_state(ConnectionState.LOST, reason, quiet=self.failed_attempts > 0)
            return False

        delivered = False
        while not self._closed.is_set():
            ok, image = capture.read()
            if not ok or image is None:
                break
            if not delivered:
                delivered = True
                self.connections += 1
                self._set_state(ConnectionState.CONNECTED, f"{image.shape[1]}x{image.shape[0]}")
            captured_at = time.monotonic()
            yield self._frame(captured_at - self.clock_origin, image, captured_at)
        self._release()
        if not self._closed.is_set():
            self._set_state(ConnectionState.LOST, "no frame from the source" if delivered else "opened but sent no frame")
        return delivered

    def _play_file(self) -> Iterator[Frame]:
        offset = 0.0
        delivered = False
        while not self._closed.is_set():
            try:
                source = VideoFileSource(self.spec, sample_fps=None)
            except SourceOpenError as error:
                # A file does not come back by waiting, unlike a camera or a stream.
                self._set_state(ConnectionState.FAILED, str(error))
                raise
            frame_interval = 1.0 / source.info.fps
            if not delivered:
                self.connections += 1
                self._set_state(ConnectionState.CONNECTED, f"{source.info.width}x{source.info.height} at {source.info.fps:.3g} fps")
            started = time.monotonic()
            last_timestamp = 0.0
            try:
                for decoded in source.frames():
                    # Pacing: a file read as fast as it decodes would not behave like a camera.
                    wait = started + decoded.timestamp - time.monotonic()
                    if wait > 0 and self._closed.wait(wait):
                        return delivered
                    delivered = True
                    last_timestamp = decoded.timestamp
                    yield self._frame(offset + decoded.timestamp, decoded.image, time.monotonic())
                    if self._closed.is_set():
                        return delivered
            finally:
                source.close()
            if not self.loop:
                self._set_state(ConnectionState.ENDED, "end of file")
                return delivered
            offset += last_timestamp + frame_interval
        return delivered

    def _frame(self, timestamp: float, image: np.ndarray, captured_at: float) -> Frame:
        frame = Frame(
            index=self._index, timestamp=timestamp, image=image, captured_at=captured_at, source_id=self.name
        )
        self._index += 1
        self.frames_captured += 1
        return frame

    def _release(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def _set_state(self, state: ConnectionState, detail: str = "", quiet: bool = False) -> None:
        with self._state_lock:
            if state is self.state and state is not ConnectionState.RECONNECTING:
                return
            self.state = state
            if state is ConnectionState.LOST:
                self.last_error = detail
        separator = " " if state is ConnectionState.RECONNECTING else ": "
        message = f"{state.value}{separator}{detail}" if detail else state.value
        if quiet:
            level = logging.DEBUG
        elif state in (ConnectionState.LOST, ConnectionState.FAILED):
            level = logging.WARNING
        else:
            level = logging.INFO
        self.logger.log(level, "%s", redact_url(message))


def _logger_suffix(name: str) -> str:
    # Dots would make further levels of the logger hierarchy.
    return redact_url(name).replace(".", "_") or "source"


_native_logs_quieted = False


def _quiet_native_logs() -> None:
    """Silence OpenCV's and FFmpeg's own stderr messages, which can contain stream URLs with credentials.

    The FFmpeg level is read from the environment when OpenCV's FFmpeg backend
    opens its first capture, so this must run before that.
    """
    global _native_logs_quieted
    if _native_logs_quieted:
        return
    import cv2

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    _native_logs_quieted = True
