"""Live monitoring: several cameras, one batched model loop, alerts, health lines and a clean shutdown.

Each camera runs a :class:`LiveSource` in a :class:`FrameReader` that keeps only
the newest frame, so a slow model drops frames instead of falling behind. One
loop takes the newest frame of every camera, runs them through the detector as
one batch, and feeds each camera's :class:`AlertTracker`.

Layout under the output folder::

    events-YYYY-MM-DD.jsonl                     one JSON line per alert raised or cleared (UTC date)
    evidence/<camera>/<camera>-<UTC time>-alert<N>.jpg   annotated frame of each raised alert
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import supervision as sv

from detector.config import ConfigError, WatchConfig, load_watch_config, single_camera
from detector.options import non_negative_integer, non_negative_number, positive_number
from detector.events import AlertChange, AlertSettings, AlertTracker
from detector.sinks import (
    EVENT_LOG_PREFIX,
    EVENT_LOG_SUFFIX,
    EventLog,
    FaceBlurrer,
    SinkError,
    WebhookSender,
    WebhookSettings,
    annotate,
    check_output_folder,
    delete_older_than,
    write_jpeg,
)
from detector.sources import (
    BufferPolicy,
    ConnectionState,
    EndOfStream,
    Frame,
    FrameReader,
    LiveSource,
    ReconnectPolicy,
    redact_url,
)

logger = logging.getLogger(__name__)

RETENTION_PERIOD_SECONDS = 86_400.0
READER_STOP_SECONDS = 5.0  # Time all camera readers together get to end at shutdown.
# A child process opens and closes one window to test the display (see _preview_unavailable_reason).
PREVIEW_PROBE_NO_GUI = 3
PREVIEW_PROBE = (
    "import sys, cv2\n"
    "try:\n"
    "    cv2.namedWindow('smokedet-probe', cv2.WINDOW_NORMAL)\n"
    "    cv2.waitKey(1)\n"
    "    cv2.destroyAllWindows()\n"
    "except cv2.error:\n"
    f"    sys.exit({PREVIEW_PROBE_NO_GUI})\n"
)
PREVIEW_PROBE_TIMEOUT_SECONDS = 5.0
IDLE_WAIT_SECONDS = 0.005  # Pause of the loop when no camera has a new frame.
EVIDENCE_FOLDER = "evidence"


class FrameDetector(Protocol):
    """Model interface of the watcher, met by :class:`detector.model.Detector` and by test doubles."""

    def detect(self, frames: Sequence[np.ndarray]) -> list[sv.Detections]: ...


@dataclass(frozen=True)
class CameraSpec:
    """One camera to watch and its alert settings."""

    name: str
    source: str
    alerts: AlertSettings = field(default_factory=AlertSettings)
    loop: bool = False


@dataclass(frozen=True)
class WatchSettings:
    """Process-wide settings of a watch run; durations in seconds."""

    out_dir: Path
    health_interval: float = 30.0
    keep_days: float | None = None
    show: bool = False
    privacy: bool = False
    face_model: Path | None = None
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    webhook: WebhookSettings | None = None
    buffer_capacity: int = 1
    class_names: dict[int, str] | None = None

    def __post_init__(self) -> None:
        # The comparisons are written so that NaN fails them too.
        if not (math.isfinite(self.health_interval) and self.health_interval > 0):
            raise ValueError(f"health_interval must be a finite positive number of seconds, got {self.health_interval}")
        if self.keep_days is not None and not (math.isfinite(self.keep_days) and self.keep_days > 0):
            raise ValueError(f"keep_days must be a finite positive number of days, got {self.keep_days}")
        if not 1 <= self.buffer_capacity <= 2:
            raise ValueError(f"live buffer capacity must be 1 or 2 frames, got {self.buffer_capacity}")


@dataclass
class CameraHealth:
    """Counters of one camera since its last health line."""

    processed: int = 0
    lags: list[float] = field(default_factory=list)  # Seconds from capture to the end of processing.
    inference: list[float] = field(default_factory=list)  # Seconds per batch that contained this camera.
    captured_before: int = 0
    started: float = field(default_factory=time.monotonic)


class Camera:
    """A watched camera: its source, reader, alert tracker and health counters."""

    def __init__(self, spec: CameraSpec, reconnect: ReconnectPolicy, clock_origin: float, capacity: int) -> None:
        self.spec = spec
        self.name = spec.name
        self.logger = logger.getChild(spec.name)
        self.source = LiveSource(spec.source, name=spec.name, loop=spec.loop, policy=reconnect, clock_origin=clock_origin)
        self.reader = FrameReader(self.source, BufferPolicy.KEEP_LATEST, capacity=capacity)
        self.tracker = AlertTracker(spec.alerts, camera=spec.name)
        self.health = CameraHealth()
        self.ended: EndOfStream | None = None
        self.last_timestamp = 0.0
        self.last_frame: Frame | None = None
        self.processed_total = 0

    @property
    def redacted_source(self) -> str:
        return redact_url(self.spec.source)

    def start(self) -> None:
        self.reader.start()

    def request_stop(self) -> None:
        self.source.close()
        self.reader.request_stop()

    def newest(self) -> Frame | None:
        """Return the newest waiting frame, or None; record the end marker when it comes."""
        newest = None
        while self.ended is None:
            try:
                item = self.reader.get_nowait()
            except Exception:  # queue.Empty: nothing more is waiting.
                break
            if isinstance(item, EndOfStream):
                self.ended = item
            else:
                newest = item
        return newest


@dataclass
class WatchResult:
    """Outcome of a watch run."""

    alerts_raised: int = 0
    failed_cameras: list[str] = field(default_factory=list)
    stopped_by_request: bool = False


class Watcher:
    """Watch cameras until each has ended or :meth:`run`'s stop event is set."""

    def __init__(self, cameras: Sequence[CameraSpec], detector: FrameDetector, settings: WatchSettings) -> None:
        if not cameras:
            raise ValueError("no camera to watch: pass --source or a --config with at least one camera")
        self.detector = detector
        self.settings = settings
        self.clock_origin = time.monotonic()
        self.cameras = [Camera(spec, settings.reconnect, self.clock_origin, settings.buffer_capacity) for spec in cameras]
        self.out_dir = Path(settings.out_dir)
        self.event_log = EventLog(self.out_dir)
        self.webhook = WebhookSender(settings.webhook) if settings.webhook is not None else None
        self.blurrer = FaceBlurrer(settings.face_model) if settings.privacy else None
        self.result = WatchResult()
        self._preview_problem = _preview_unavailable_reason() if settings.show else None
        self._show = settings.show and self._preview_problem is None
        self._next_health = 0.0
        self._next_retention = 0.0

    def run(self, stop: threading.Event | None = None) -> WatchResult:
        """Run the loop; return when every camera has ended or ``stop`` is set. Closes all outputs."""
        stop = stop or threading.Event()
        self._log_start()
        now = time.monotonic()
        self._next_health = now + self.settings.health_interval
        self._next_retention = now
        for camera in self.cameras:
            camera.start()
        try:
            self._loop(stop)
        finally:
            self._shutdown(stopped=stop.is_set())
        return self.result

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            batch = self._collect()
            if batch:
                self._process(batch)
            elif all(camera.ended is not None for camera in self.cameras):
                return
            else:
                stop.wait(IDLE_WAIT_SECONDS)
            self._housekeeping()

    def _collect(self) -> list[tuple[Camera, Frame]]:
        batch = []
        for camera in self.cameras:
            was_running = camera.ended is None
            frame = camera.newest()
            if frame is not None:
                batch.append((camera, frame))
            if was_running and camera.ended is not None:
                self._camera_ended(camera)
        return batch

    def _process(self, batch: list[tuple[Camera, Frame]]) -> None:
        started = time.perf_counter()
        detections = self.detector.detect([frame.image for _, frame in batch])
        inference = time.perf_counter() - started
        if len(detections) != len(batch):
            raise RuntimeError(f"the detector returned {len(detections)} results for a batch of {len(batch)} frames")
        done = time.monotonic()
        for (camera, frame), found in zip(batch, detections):
            found = _above(found, camera.spec.alerts.confidence)
            camera.health.processed += 1
            camera.health.lags.append(done - frame.captured_at)
            camera.health.inference.append(inference)
            camera.processed_total += 1
            camera.last_timestamp = frame.timestamp
            camera.last_frame = frame
            for change in camera.tracker.update(frame.timestamp, found, frame.image):
                self._on_change(camera, change, frame.captured_at)
            if self._show:
                self._preview(camera, frame, found)

    def _housekeeping(self) -> None:
        now = time.monotonic()
        for camera in self.cameras:
            # A disconnected camera sends no frame, so its alert clears by the clock.
            if camera.source.is_live and camera.ended is None and camera.source.state is not ConnectionState.CONNECTED:
                for change in camera.tracker.expire(now - self.clock_origin):
                    self._on_change(camera, change, now)
        if now >= self._next_health:
            self._next_health = now + self.settings.health_interval
            for camera in self.cameras:
                self._log_health(camera, now)
        if self.settings.keep_days is not None and now >= self._next_retention:
            self._next_retention = now + RETENTION_PERIOD_SECONDS
            self._apply_retention()

    # -- alerts -------------------------------------------------------------

    def _on_change(self, camera: Camera, change: AlertChange, captured_at: float) -> None:
        alert = change.alert
        record: dict[str, Any] = {
            "type": f"alert_{change.kind}",
            "time": _utc_iso(_wall_clock(captured_at)),
            "camera": camera.name,
            "source": camera.redacted_source,
            "alert_id": alert.alert_id,
            "onset_s": round(alert.onset, 3),
            "peak_confidence": round(alert.peak_confidence, 4),
        }
        if change.kind == "raised":
            self.result.alerts_raised += 1
            record["raised_s"] = round(alert.raised_at, 3)
            record["evidence"] = self._save_evidence(camera, alert, record["time"])
            record["boxes"] = _boxes(alert.evidence_detections)
            camera.logger.warning(
                "alert %d raised: smoking for %.1f s (peak confidence %.2f)",
                alert.alert_id,
                alert.raised_at - alert.onset,
                alert.peak_confidence,
            )
        else:
            record["cleared_s"] = round(alert.cleared_at, 3)
            record["last_seen_s"] = round(alert.last_positive, 3)
            record["duration_s"] = round(alert.duration, 3)
            record["reason"] = alert.clear_reason
            record["positive_frames"] = alert.positive_frames
            record["processed_frames"] = alert.processed_frames
            camera.logger.info("alert %d cleared (%s) after %.1f s of smoking", alert.alert_id, alert.clear_reason, alert.duration)
        in_event_log = self._write_event(record)
        if self.webhook is not None:
            self.webhook.send(record, in_event_log=in_event_log)

    def _save_evidence(self, camera: Camera, alert, time_text: str) -> str | None:
        if alert.evidence_image is None:
            return None
        image = alert.evidence_image
        if self.blurrer is not None:
            # NOTE: face detection runs in the frame loop, so each alert onset delays it by
            # up to a few seconds on a slow CPU (see HAAR_MAX_SIDE in detector/sinks.py).
            image = self.blurrer.apply(image, alert.evidence_detections)
        image = annotate(image, alert.evidence_detections, self.settings.class_names)
        stamp = time_text.replace(":", "").replace("-", "").replace("+0000", "Z")
        relative = Path(EVIDENCE_FOLDER) / camera.name / f"{camera.name}-{stamp}-alert{alert.alert_id}.jpg"
        try:
            write_jpeg(self.out_dir / relative, image)
        except SinkError as error:
            camera.logger.error("evidence for alert %d not saved: %s", alert.alert_id, error)
            return None
        return str(relative)

    def _write_event(self, record: dict[str, Any]) -> bool:
        """Append ``record`` to the event log; return False, after logging one error line, when that fails."""
        try:
            self.event_log.write(record)
        except SinkError as error:
            # The loop goes on: alerts still reach the log output and the webhook.
            logger.getChild(record["camera"]).error(
                "%s of alert %d not recorded in the event log: %s", record["type"], record["alert_id"], error
            )
            return False
        return True

    # -- camera life cycle --------------------------------------------------

    def _camera_ended(self, camera: Camera) -> None:
        error = camera.ended.error
        now = camera.last_timestamp if not camera.source.is_live else time.monotonic() - self.clock_origin
        for change in camera.tracker.finish(now, "end_of_stream"):
            self._on_change(camera, change, time.monotonic())
        if error is None:
            camera.logger.info("source ended after %d processed frames", camera.processed_total)
            return
        self.result.failed_cameras.append(camera.name)
        running = sum(1 for other in self.cameras if other.ended is None)
        camera.logger.error("%s", redact_url(str(error)))
        if running:
            camera.logger.error("camera given up; %d other camera(s) keep running", running)

    def _shutdown(self, stopped: bool) -> None:
        self.result.stopped_by_request = stopped
        # Every reader is asked to stop before any is waited for, and all share one deadline: a reader
        # stuck in an OpenCV open or read cannot be interrupted, and waiting for each in turn added up.
        for camera in self.cameras:
            camera.request_stop()
        deadline = time.monotonic() + READER_STOP_SECONDS
        for camera in self.cameras:
            if not camera.reader.join(timeout=max(0.0, deadline - time.monotonic())):
                camera.logger.warning("reader still blocked in the video backend at shutdown; left running")
        now = time.monotonic()
        for camera in self.cameras:
            # Every raised alert gets its cleared line, also when the watcher stops.
            stream_now = now - self.clock_origin if camera.source.is_live else camera.last_timestamp
            for change in camera.tracker.finish(stream_now, "shutdown"):
                self._on_change(camera, change, now)
        if self._show:
            _close_preview()
        if self.webhook is not None:
            self.webhook.close()
        self.event_log.close()
        logger.info(
            "watch stopped: %d alert(s) raised, %d camera(s) failed%s",
            self.result.alerts_raised,
            len(self.result.failed_cameras),
            "" if self.webhook is None else (
                f", webhook {self.webhook.delivered} delivered, {self.webhook.failed} failed, {self.webhook.dropped} dropped"
            ),
        )

    # -- logging, retention and preview -------------------------------------

    def _log_start(self) -> None:
        for camera in self.cameras:
            settings = camera.spec.alerts
            camera.logger.info(
                "watching %s: alert after %g s, clear after %g s, cooldown %g s, confidence %g",
                camera.redacted_source,
                settings.min_duration,
                settings.clear_after,
                settings.cooldown,
                settings.confidence,
            )
        # FaceBlurrer itself warns when it falls back to blurring everything but the detection boxes.
        if self.blurrer is not None and self.blurrer.face_detector is not None:
            logger.info("--privacy: blurring faces found by %s in evidence images", self.blurrer.face_detector)
        if self.settings.show and not self._show:
            logger.info("--show ignored: %s; running headless", self._preview_problem)

    def _log_health(self, camera: Camera, now: float) -> None:
        health = camera.health
        elapsed = max(now - health.started, 1e-9)
        captured = camera.source.frames_captured
        received = captured - health.captured_before
        dropped = max(0, received - health.processed)
        lags = sorted(health.lags)
        lag_text = "no frame"
        if lags:
            lag_text = f"{1000 * statistics.median(lags):.0f} ms median, {1000 * lags[-1]:.0f} ms max"
        inference_text = f"{1000 * statistics.fmean(health.inference):.0f} ms" if health.inference else "n/a"
        camera.logger.info(
            "health: %s, input %.1f fps, processed %.1f fps, dropped %d, inference %s, lag %s",
            camera.source.state.value if camera.ended is None else "ended",
            received / elapsed,
            health.processed / elapsed,
            dropped,
            inference_text,
            lag_text,
        )
        camera.health = CameraHealth(captured_before=captured, started=now)

    def _apply_retention(self) -> None:
        # Only the files this command writes: a user's own files under --out are never deleted.
        patterns = [f"{EVENT_LOG_PREFIX}*{EVENT_LOG_SUFFIX}", f"{EVIDENCE_FOLDER}/*/*.jpg"]
        deleted = delete_older_than(self.out_dir, self.settings.keep_days, patterns)
        if deleted:
            logger.info("retention: deleted %d file(s) older than %g days under %s", len(deleted), self.settings.keep_days, self.out_dir)

    def _preview(self, camera: Camera, frame: Frame, found: sv.Detections) -> None:
        import cv2

        cv2.imshow(f"smokedet {camera.name}", annotate(frame.image, found, self.settings.class_names))
        cv2.waitKey(1)


def _above(detections: sv.Detections, confidence: float) -> sv.Detections:
    if len(detections) == 0 or detections.confidence is None or confidence <= 0:
        return detections
    return detections[detections.confidence >= confidence]


def _boxes(detections: sv.Detections | None) -> list[list[float]]:
    """Return ``[x0, y0, x1, y1, confidence]`` per detection, in pixels."""
    if detections is None or len(detections) == 0:
        return []
    confidences = detections.confidence if detections.confidence is not None else np.zeros(len(detections))
    return [[*(round(float(v), 1) for v in box), round(float(c), 4)] for box, c in zip(detections.xyxy, confidences)]


def _wall_clock(monotonic_value: float) -> float:
    return time.time() - (time.monotonic() - monotonic_value)


def _utc_iso(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, tz=timezone.utc).isoformat(timespec="milliseconds")


def _preview_unavailable_reason() -> str | None:
    """Return why no preview window can open, or None when one can.

    The window is tried in a child process because OpenCV's Qt backend aborts the
    whole process when it cannot connect to the display.
    """
    display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if not display:
        return "no display (DISPLAY is not set)"
    try:
        completed = subprocess.run(
            [sys.executable, "-c", PREVIEW_PROBE],
            capture_output=True,
            timeout=PREVIEW_PROBE_TIMEOUT_SECONDS,
            env={**os.environ, "QT_LOGGING_RULES": "*=false"},
        )
    except subprocess.TimeoutExpired:
        return f"opening a test window on display {display!r} timed out after {PREVIEW_PROBE_TIMEOUT_SECONDS:g} s"
    except OSError as error:
        return f"the window test could not start ({error.strerror or error})"
    if completed.returncode == PREVIEW_PROBE_NO_GUI:
        return "this OpenCV build has no GUI support (opencv-python-headless)"
    if completed.returncode != 0:
        return f"cannot open a window on display {display!r} (test window exited with status {completed.returncode})"
    return None


def _close_preview() -> None:
    import cv2

    try:
        cv2.destroyAllWindows()
    except cv2.error:
        pass


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT and SIGTERM while the block runs; restore the previous handlers after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handle(number, _frame) -> None:
        if not received:
            logger.info("%s received; stopping", signal.Signals(number).name)
        received.append(number)
        stop.set()

    previous = {number: signal.signal(number, handle) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


# -- command line -----------------------------------------------------------


def add_watch_arguments(parser: argparse.ArgumentParser) -> None:
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--source", help="webcam index (0, 1, ...), rtsp:// or http(s):// stream URL, or video file")
    inputs.add_argument("--config", help="YAML camera file naming one or more cameras, each with its own thresholds")
    parser.add_argument("--loop", action="store_true", help="with a video file as --source: restart it at its end")
    parser.add_argument("--out", default="watch-output", help="folder for the event log and evidence; default: %(default)s")
    defaults = AlertSettings()
    parser.add_argument(
        "--min-duration",
        type=non_negative_number,
        default=defaults.min_duration,
        help="seconds smoking must persist before an alert is raised; default: %(default)s",
    )
    parser.add_argument(
        "--clear-after",
        type=positive_number,
        default=defaults.clear_after,
        help="seconds without a detection after which an alert clears; default: %(default)s",
    )
    parser.add_argument(
        "--cooldown",
        type=non_negative_number,
        default=defaults.cooldown,
        help="seconds after an alert clears during which no new alert is raised; default: %(default)s",
    )
    parser.add_argument("--webhook", default=None, help="URL to POST each alert to as JSON")
    parser.add_argument(
        "--webhook-timeout", type=positive_number, default=5.0, help="seconds per webhook request; default: %(default)s"
    )
    parser.add_argument(
        "--privacy",
        action="store_true",
        help="blur faces in saved evidence images, found with OpenCV's Haar cascades unless --face-model is given",
    )
    parser.add_argument(
        "--face-model",
        default=None,
        help="YuNet face detector .onnx file that --privacy uses in place of the Haar cascades",
    )
    parser.add_argument(
        "--keep-days",
        type=positive_number,
        default=None,
        help="delete evidence images and event-log files older than this many days, at start and once a day",
    )
    parser.add_argument(
        "--health-interval", type=positive_number, default=30.0, help="seconds between per-camera health lines; default: %(default)s"
    )
    parser.add_argument(
        "--max-retries",
        type=non_negative_integer,
        default=None,
        help="failed connection attempts in a row before a camera is given up; default: retry forever",
    )
    parser.add_argument("--show", action="store_true", help="open a preview window per camera when a display exists")


def build_camera_specs(arguments: argparse.Namespace, config: WatchConfig, default_confidence: float) -> list[CameraSpec]:
    """Return one spec per camera; thresholds come from the camera, then the file's defaults, then the options."""
    fallback = AlertSettings(
        min_duration=arguments.min_duration,
        clear_after=arguments.clear_after,
        cooldown=arguments.cooldown,
        confidence=default_confidence,
    )
    return [
        CameraSpec(name=camera.name, source=camera.source, alerts=config.settings_for(camera, fallback), loop=camera.loop)
        for camera in config.cameras
    ]


def run_watch_command(arguments: argparse.Namespace) -> int:
    """Run ``smokedet watch``; return 0 after a stop request or when every source ended, 1 when a camera failed."""
    from detector.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError
    from detector.model import DEFAULT_CONFIDENCE, Detector, ModelError, ModelSettings

    default_confidence = DEFAULT_CONFIDENCE if arguments.conf is None else arguments.conf
    try:
        if arguments.config:
            if arguments.loop:
                raise UsageError("--loop applies to --source; in a camera file set 'loop: true' on the camera")
            config = load_watch_config(Path(arguments.config))
        else:
            config = single_camera(arguments.source, loop=arguments.loop)
            if config.cameras[0].kind.value == "file" and not Path(arguments.source).is_file():
                raise UsageError(f"video file {arguments.source!r} not found: pass a webcam index, a stream URL or a file")
        if arguments.face_model and not arguments.privacy:
            raise UsageError("--face-model applies only with --privacy: add --privacy or drop --face-model")
        if arguments.face_model and not Path(arguments.face_model).is_file():
            raise UsageError(
                f"face model {arguments.face_model!r} not found: pass --face-model with a YuNet .onnx file, "
                "or omit it to find faces with OpenCV's Haar cascades"
            )
        specs = build_camera_specs(arguments, config, default_confidence)
        settings = WatchSettings(
            out_dir=Path(arguments.out),
            health_interval=arguments.health_interval,
            keep_days=arguments.keep_days,
            show=arguments.show,
            privacy=arguments.privacy,
            face_model=Path(arguments.face_model) if arguments.face_model else None,
            reconnect=ReconnectPolicy(max_retries=arguments.max_retries),
            webhook=WebhookSettings(arguments.webhook, timeout=arguments.webhook_timeout) if arguments.webhook else None,
        )
        model_settings = ModelSettings(
            weights=Path(arguments.weights),
            device=arguments.device,
            imgsz=arguments.imgsz,
            # The model runs once for all cameras, at the lowest threshold any camera asks for.
            confidence=min(spec.alerts.confidence for spec in specs),
            threads=arguments.threads,
        )
    except (ConfigError, ValueError) as error:
        raise UsageError(str(error)) from error

    problem = check_output_folder(Path(arguments.out))
    if problem is not None:
        logger.error("%s", problem)
        return EXIT_USAGE

    try:
        detector = Detector(model_settings)
        detector.warmup()
    except ModelError as error:
        logger.error("%s", error)
        return EXIT_FAILED

    settings = WatchSettings(**{**settings.__dict__, "class_names": detector.names})
    try:
        watcher = Watcher(specs, detector, settings)
    except (SinkError, OSError) as error:
        logger.error("cannot start watching: %s", error)
        return EXIT_FAILED
    stop = threading.Event()
    with stop_on_signals(stop):
        result = watcher.run(stop)
    if result.failed_cameras:
        logger.error("camera(s) failed: %s", ", ".join(result.failed_cameras))
        return EXIT_FAILED
    return EXIT_OK
