"""Test doubles for live monitoring: an MJPEG-over-HTTP camera, a marker detector, HTTP receivers."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import supervision as sv

MARKER_COLOR = (0, 0, 255)  # Pure red in BGR.


def scene(index: int, width: int = 160, height: int = 120, marker: bool = False) -> np.ndarray:
    """Return a textured frame that changes with ``index``, with a red square when ``marker`` is set."""
    y, x = np.mgrid[0:height, 0:width]
    base = ((x + 2 * index) ^ (y + index)) & 0x7F
    image = np.dstack([base, base // 2 + 40, base]).astype(np.uint8)
    if marker:
        cv2.rectangle(image, (width // 3, height // 3), (width // 3 + 20, height // 3 + 20), MARKER_COLOR, -1)
    return image


class MarkerDetector:
    """Find the red square that :func:`scene` draws; same ``detect`` interface as ``detector.model.Detector``.

    ``delay`` seconds of sleep per call stand in for a slow model.
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls = 0
        self.frames = 0

    def detect(self, frames):
        self.calls += 1
        self.frames += len(frames)
        if self.delay:
            time.sleep(self.delay)
        return [self._detect_one(frame) for frame in frames]

    @staticmethod
    def _detect_one(image: np.ndarray) -> sv.Detections:
        # JPEG and H.264 shift colours a little, so the test is loose.
        red = (image[:, :, 2] > 180) & (image[:, :, 1] < 80) & (image[:, :, 0] < 80)
        if red.sum() < 50:
            return sv.Detections.empty()
        ys, xs = np.nonzero(red)
        return sv.Detections(
            xyxy=np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=np.float32),
            confidence=np.array([0.9], dtype=np.float32),
            class_id=np.array([0]),
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MjpegServer:
    """Serve generated frames as ``multipart/x-mixed-replace`` JPEGs at ``/stream.mjpg`` on 127.0.0.1.

    :meth:`stop` closes open connections as a camera that goes away would, and
    :meth:`start` serves again on the same port.
    """

    def __init__(self, frame_for: Callable[[int], np.ndarray], fps: float = 20.0, port: int | None = None) -> None:
        self.frame_for = frame_for
        self.fps = fps
        self.port = port or free_port()
        self.frames_sent = 0
        self._server: ThreadingHTTPServer | None = None
        self._stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> MjpegServer:
        owner = self
        self._stopping = threading.Event()
        stopping = self._stopping

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *arguments) -> None:
                pass

            def do_GET(self) -> None:
                if self.path != "/stream.mjpg":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                started = time.monotonic()
                sent = 0
                try:
                    while not stopping.is_set():
                        ok, encoded = cv2.imencode(".jpg", owner.frame_for(owner.frames_sent))
                        part = encoded.tobytes()
                        self.wfile.write(
                            b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(part) + part + b"\r\n"
                        )
                        owner.frames_sent += 1
                        sent += 1
                        stopping.wait(max(0.0, started + sent / owner.fps - time.monotonic()))
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="mjpeg-server", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class WebhookReceiver:
    """Record JSON POSTs on 127.0.0.1 and respond after ``delay`` seconds."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.received: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *arguments) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(owner.delay)
                owner.received.append(json.loads(body))
                try:
                    self.send_response(200)
                    self.end_headers()
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
