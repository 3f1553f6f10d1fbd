"""Live monitoring: alert life cycle, config, event log, webhook, reconnection and the watch command."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv
from livefakes import MarkerDetector, MjpegServer, WebhookReceiver, free_port, scene

from detector.config import ConfigError, load_watch_config, single_camera
from detector.events import AlertSettings, AlertTracker
from detector.sinks import EventLog, FaceBlurrer, SinkError, WebhookSender, WebhookSettings, delete_older_than
from detector.sources import LiveSource, ReconnectPolicy, SourceConnectionError, SourceKind, redact_url, source_kind
from detector.synthetic import write_video
from detector.watch import CameraSpec, Watcher, WatchSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
# `python -m detector.cli` would load cli.py twice (as __main__ and as detector.cli), with two UsageError classes.
SMOKEDET = [sys.executable, "-c", "import sys; from detector.cli import main; sys.exit(main(sys.argv[1:]))"]
POSITIVE = sv.Detections(
    xyxy=np.array([[10, 10, 30, 30]], dtype=np.float32), confidence=np.array([0.8], dtype=np.float32), class_id=np.array([0])
)
NEGATIVE = sv.Detections.empty()
FAST_RECONNECT = ReconnectPolicy(initial_delay=0.2, max_delay=0.5)


def feed(tracker: AlertTracker, start: float, end: float, positive: bool, step: float = 0.1):
    """Feed frames every ``step`` seconds in [start, end); return every change."""
    changes = []
    for index in range(int(round((end - start) / step))):
        changes += tracker.update(round(start + index * step, 6), POSITIVE if positive else NEGATIVE)
    return changes


def read_events(out_dir: Path) -> list[dict]:
    records = []
    for path in sorted(out_dir.glob("events-*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines()]
    return records


def run_in_thread(watcher: Watcher):
    stop = threading.Event()
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(result=watcher.run(stop)), daemon=True)
    thread.start()
    return stop, thread, outcome


def wait_for(condition, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def marker_video(path: Path, seconds: float, fps: float, marked: list[tuple[float, float]]) -> Path:
    frames = (
        scene(index, marker=any(start <= index / fps < end for start, end in marked))
        for index in range(int(round(seconds * fps)))
    )
    return write_video(path, frames, fps=fps)


# -- alert life cycle -------------------------------------------------------


def test_alert_quiet_raises_nothing():
    tracker = AlertTracker(AlertSettings(min_duration=1, clear_after=2, cooldown=5))
    assert feed(tracker, 0, 10, positive=False) == []
    assert tracker.alerts == []


def test_alert_onset_waits_for_min_duration():
    tracker = AlertTracker(AlertSettings(min_duration=1, clear_after=2, cooldown=5))
    assert feed(tracker, 0, 0.9, positive=True) == []
    assert tracker.pending
    changes = tracker.update(1.0, POSITIVE)
    assert [change.kind for change in changes] == ["raised"]
    assert changes[0].alert.onset == 0.0
    assert changes[0].alert.raised_at == 1.0


def test_alert_sustained_raises_once():
    tracker = AlertTracker(AlertSettings(min_duration=1, clear_after=2, cooldown=5))
    changes = feed(tracker, 0, 20, positive=True)
    assert [change.kind for change in changes] == ["raised"]
    assert tracker.active.last_positive == pytest.approx(19.9)


def test_alert_short_gap_keeps_alert():
    tracker = AlertTracker(AlertSettings(min_duration=1, clear_after=2, cooldown=5))
    changes = feed(tracker, 0, 3, positive=True)
    changes += feed(tracker, 3, 4.5, positive=False)
    changes += feed(tracker, 4.5, 6, positive=True)
    assert [change.kind for change in changes] == ["raised"]
    assert tracker.active is not None


def test_alert_clears_after_gap():
    tracker = AlertTracker(AlertSettings(min_duration=1, clear_after=2, cooldown=5))
    changes = feed(tracker, 0, 3, positive=True) + feed(tracker, 3, 6, positive=False)
    assert [change.kind for change in changes] == ["raised", "cleared"]
    cleared = changes[1].alert
    assert cleared.last_positive == pytest.approx(2.9)
    assert cleared.cleared_at == pytest.approx(4.9)
    assert cleared.clear_reason == "quiet"


def test_alert_cooldown_delays_next_alert():
    tracker = AlertTracker(AlertSettings(min_duration=1, clear_after=1, cooldown=5))
    first = feed(tracker, 0, 2, positive=True) + feed(tracker, 2, 3.5, positive=False)
    assert [change.kind for change in first] == ["raised", "cleared"]
    cleared_at = first[1].alert.cleared_at
    # Smoking again at once persists through the cooldown; the alert waits for its end.
    again = feed(tracker, 3.5, 12, positive=True)
    assert [change.kind for change in again] == ["raised"]
    assert again[0].alert.raised_at == pytest.approx(cleared_at + 5, abs=0.11)
    assert again[0].alert.onset == pytest.approx(3.5)


def test_alert_flicker_below_fraction_not_raised():
    tracker = AlertTracker(AlertSettings(min_duration=1, clear_after=2, cooldown=0, min_positive_fraction=0.5))
    changes = []
    for index in range(60):  # One positive frame in four.
        changes += tracker.update(index * 0.1, POSITIVE if index % 4 == 0 else NEGATIVE)
    assert changes == []


def test_alert_expires_without_frames():
    tracker = AlertTracker(AlertSettings(min_duration=0.5, clear_after=2, cooldown=0))
    feed(tracker, 0, 1, positive=True)
    assert tracker.expire(2.0) == []
    changes = tracker.expire(3.0)
    assert [change.kind for change in changes] == ["cleared"]


def test_alert_confidence_threshold():
    tracker = AlertTracker(AlertSettings(min_duration=0, clear_after=1, cooldown=0, confidence=0.9))
    assert tracker.update(0.0, POSITIVE) == []  # Its confidence is 0.8.


@pytest.mark.parametrize(
    ("field", "value"),
    [("min_duration", -1), ("clear_after", 0), ("cooldown", -0.5), ("min_positive_fraction", 0), ("confidence", 1.5)],
)
def test_alert_settings_reject_out_of_range(field, value):
    with pytest.raises(ValueError, match=field):
        AlertSettings(**{field: value})


# -- credentials and sources ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rtsp://admin:hunter2@10.1.2.3:554/live", "rtsp://***@10.1.2.3:554/live"),
        ("open rtsp://admin:hunter2@cam/x failed", "open rtsp://***@cam/x failed"),
        ("https://user@example.test/hook?token=abc&x=1", "https://***@example.test/hook?token=***&x=1"),
        ("http://cam.local/stream.mjpg?password=pw", "http://cam.local/stream.mjpg?password=***"),
        ("http://127.0.0.1:8080/stream.mjpg", "http://127.0.0.1:8080/stream.mjpg"),
        ("0", "0"),
        ("rtsp://admin:top@secret@127.0.0.1:9/x", "rtsp://***@127.0.0.1:9/x"),
        ("open rtsp://a:p@ss@cam/x failed for ops@example.test", "open rtsp://***@cam/x failed for ops@example.test"),
        ("rtsp://a:p@ss@cam?channel=1", "rtsp://***@cam?channel=1"),
        ("https://h/x?access_token=a&apikey=b&api_key=c&api-key=d", "https://h/x?access_token=***&apikey=***&api_key=***&api-key=***"),
        ("https://h/x?Auth=a&SIGNATURE=b&sig=c&keyboard=d", "https://h/x?Auth=***&SIGNATURE=***&sig=***&keyboard=d"),
        ("https://h/x?API_KEY=a#token=b", "https://h/x?API_KEY=***#token=***"),
    ],
)
def test_redact_url(text, expected):
    assert redact_url(text) == expected


@pytest.mark.parametrize(
    ("spec", "kind"),
    [("0", SourceKind.WEBCAM), ("12", SourceKind.WEBCAM), ("rtsp://h/x", SourceKind.STREAM),
     ("HTTPS://h/x", SourceKind.STREAM), ("videos/a.mp4", SourceKind.FILE)],
)
def test_source_kind(spec, kind):
    assert source_kind(spec) is kind


def test_reconnect_backoff_is_capped():
    policy = ReconnectPolicy(initial_delay=1, max_delay=30)
    assert [policy.delay(failures) for failures in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


# -- config -----------------------------------------------------------------


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cameras.yaml"
    path.write_text(text)
    return path


def test_config_resolves_thresholds(tmp_path):
    (tmp_path / "demo.mp4").write_bytes(b"x")
    path = write_config(
        tmp_path,
        "defaults:\n  cooldown: 20\ncameras:\n"
        "  - name: dock\n    source: rtsp://u:p@127.0.0.1/s\n    min_duration: 5\n"
        "  - name: demo\n    source: demo.mp4\n    loop: true\n",
    )
    config = load_watch_config(path)
    fallback = AlertSettings(min_duration=3, clear_after=10, cooldown=60, confidence=0.25)
    dock = config.settings_for(config.cameras[0], fallback)
    demo = config.settings_for(config.cameras[1], fallback)
    assert (dock.min_duration, dock.cooldown, dock.clear_after) == (5, 20, 10)
    assert (demo.min_duration, demo.cooldown) == (3, 20)
    assert config.cameras[1].source == str(tmp_path / "demo.mp4")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("cameras:\n  - name: dock\n    source: 0\n    min_duraton: 3\n", "camera 'dock' (cameras[0]): min_duraton"),
        ("cameras:\n  - name: dock\n    source: 0\n    cooldown: -1\n", "camera 'dock' (cameras[0]): cooldown"),
        ("cameras:\n  - name: dock\n", "camera 'dock' (cameras[0]): source: Field required; add it"),
        ("cameras:\n  - name: a b\n    source: 0\n", "name: String should match pattern"),
        ("cameras:\n  - {name: a, source: 0}\n  - {name: a, source: 1}\n", "camera name 'a' is used twice"),
        ("cameras:\n  - {name: a, source: 'rtsp://h/x', loop: true}\n", "only a video file can loop"),
        ("cameras:\n  - {name: a, source: missing.mp4}\n", "camera 'a': source: video file"),
        ("defaults:\n  confidence: 2\ncameras:\n  - {name: a, source: 0}\n", "defaults: confidence"),
        ("cameras: []\n", "cameras"),
        ("- just a list\n", "expected a mapping"),
    ],
)
def test_config_errors_name_camera_and_key(tmp_path, body, expected):
    with pytest.raises(ConfigError) as caught:
        load_watch_config(write_config(tmp_path, body))
    assert expected in str(caught.value)


def test_config_yaml_syntax_error_one_line(tmp_path):
    path = write_config(tmp_path, "cameras:\n  - name: a\n    source: [0\n  - name: b\n")
    with pytest.raises(ConfigError) as caught:
        load_watch_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:4:9: invalid YAML: ")  # The ":" after "name" in line 4.
    assert "\n" not in message


@pytest.mark.parametrize(("content", "expected"), [(b"", "is empty"), (b"# only a comment\n", "is empty")])
def test_config_empty_file_named(tmp_path, content, expected):
    path = tmp_path / "cameras.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_watch_config(path)
    assert str(caught.value).startswith(f"camera file {path} {expected}")


def test_config_non_utf8_file_named(tmp_path):
    path = tmp_path / "cameras.yaml"
    path.write_bytes("cameras:\n  - {name: caf\u00e9, source: 0}\n".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_watch_config(path)
    message = str(caught.value)
    assert message.startswith(f"camera file {path} is not UTF-8 text")
    assert "\n" not in message


def test_config_error_lists_allowed_keys(tmp_path):
    with pytest.raises(ConfigError, match="allowed keys: .*min_duration"):
        load_watch_config(write_config(tmp_path, "cameras:\n  - {name: a, source: 0, threshold: 1}\n"))


# -- sinks ------------------------------------------------------------------


def test_event_log_writes_whole_lines(tmp_path):
    log = EventLog(tmp_path, clock=lambda: 86_400 * 20_000)  # 2024-10-04 UTC.
    log.write({"type": "alert_raised", "camera": "a"})
    log.write({"type": "alert_cleared", "camera": "a"})
    # Readable while still open: each line was flushed.
    lines = (tmp_path / "events-2024-10-04.jsonl").read_text().splitlines()
    log.close()
    assert [json.loads(line)["type"] for line in lines] == ["alert_raised", "alert_cleared"]


def test_event_log_starts_file_per_utc_day(tmp_path):
    now = [86_400 * 20_000 + 86_399.0]
    log = EventLog(tmp_path, clock=lambda: now[0])
    log.write({"n": 1})
    now[0] += 2
    log.write({"n": 2})
    log.close()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["events-2024-10-04.jsonl", "events-2024-10-05.jsonl"]


def test_webhook_slow_receiver_never_blocks_send():
    receiver = WebhookReceiver(delay=1.5)
    sender = WebhookSender(WebhookSettings(receiver.url, timeout=0.3, max_attempts=2, initial_backoff=0.1, queue_size=2))
    try:
        started = time.monotonic()
        for number in range(5):
            sender.send({"n": number})
        elapsed = time.monotonic() - started
    finally:
        sender.close(drain_seconds=1)
        receiver.close()
    assert elapsed < 0.5
    assert sender.dropped >= 2
    assert sender.delivered == 0


def test_webhook_delivers_and_retries_after_server_error(tmp_path):
    receiver = WebhookReceiver()
    sender = WebhookSender(WebhookSettings(receiver.url, timeout=2, initial_backoff=0.1))
    try:
        sender.send({"type": "alert_raised", "alert_id": 1})
        assert wait_for(lambda: sender.delivered == 1, timeout=5)
    finally:
        sender.close()
        receiver.close()
    assert receiver.received == [{"type": "alert_raised", "alert_id": 1}]


def test_webhook_url_credentials_not_logged(caplog):
    port = free_port()  # Nothing listens there.
    url = f"http://bob:s3cret@127.0.0.1:{port}/services/T01/B02/pathsecret?token=querysecret"
    sender = WebhookSender(WebhookSettings(url, timeout=0.5, max_attempts=2, initial_backoff=0.1))
    with caplog.at_level(logging.WARNING):
        sender.send({"n": 1})
        assert wait_for(lambda: sender.failed == 1, timeout=5)
        sender.close()
    assert f"webhook http://127.0.0.1:{port}: attempt 1 of 2 failed" in caplog.text
    assert "ConnectionError" in caplog.text
    for secret in ("s3cret", "pathsecret", "querysecret", "services/T01"):
        assert secret not in caplog.text


def test_webhook_bad_scheme_hides_url():
    with pytest.raises(ValueError) as caught:
        WebhookSettings("hooks.example.test/services/T01/B02/pathsecret")
    assert "pathsecret" not in str(caught.value)
    assert "got scheme 'none'" in str(caught.value)


def test_single_camera_invalid_source_one_line():
    with pytest.raises(ConfigError) as caught:
        single_camera("")
    assert str(caught.value).startswith("invalid --source '': ")
    assert "\n" not in str(caught.value)


def laplacian_variance(image: np.ndarray) -> float:
    """Return the variance of the Laplacian of an image's grayscale copy: a measure of its fine detail."""
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def far_from_faces(shape: tuple[int, ...], faces: np.ndarray) -> np.ndarray:
    """Return a mask of the pixels more than a face's width or height away from every face box."""
    height, width = shape[:2]
    mask = np.ones((height, width), dtype=bool)
    for x, y, w, h in faces:
        mask[max(0, y - h) : max(0, y + 2 * h), max(0, x - w) : max(0, x + 2 * w)] = False
    return mask


@pytest.fixture(scope="module")
def face_images(dataset_dir):
    """Up to three test-split images in which the Haar cascades find a face and leave room far from it."""
    blurrer = FaceBlurrer()
    found = []
    for path in sorted((dataset_dir / "test" / "images").glob("*.webp"))[:40]:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        faces = blurrer.find_faces(image)
        if len(faces) and far_from_faces(image.shape, faces).mean() > 0.2:
            found.append((path.name, image, faces))
        if len(found) == 3:
            break
    assert found, "the Haar cascades found no face in the first 40 test images of the shared dataset"
    return found


def test_privacy_default_uses_haar_cascades():
    blurrer = FaceBlurrer()
    assert blurrer.mode == "faces"
    assert blurrer.face_detector == "haar"


def test_privacy_blurs_faces_in_real_images(face_images):
    blurrer = FaceBlurrer()
    for name, image, faces in face_images:
        blurred = blurrer.apply(image, POSITIVE)
        for x, y, w, h in faces:
            before = laplacian_variance(image[y : y + h, x : x + w])
            after = laplacian_variance(blurred[y : y + h, x : x + w])
            assert after < before / 10, f"{name}: face at {(x, y, w, h)} kept detail ({before:.1f} -> {after:.1f})"
        far = far_from_faces(image.shape, faces)
        assert np.array_equal(blurred[far], image[far]), f"{name}: pixels far from every face changed"


def test_privacy_faceless_gradient_unchanged():
    ramp = np.linspace(0, 255, 320, dtype=np.float32)
    image = np.stack(
        [np.tile(ramp, (240, 1)), np.tile(ramp[:240, None], (1, 320)), np.full((240, 320), 128.0)], axis=2
    ).astype(np.uint8)
    blurrer = FaceBlurrer()
    assert len(blurrer.find_faces(image)) == 0
    assert np.array_equal(blurrer.apply(image, POSITIVE), image)


@pytest.mark.parametrize(("cascade_text", "reason"), [(None, "not found"), ("not xml", "not a valid cascade XML file")])
def test_privacy_unusable_cascade_falls_back(tmp_path, caplog, cascade_text, reason):
    if cascade_text is not None:
        (tmp_path / "haarcascade_frontalface_default.xml").write_text(cascade_text)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    with caplog.at_level(logging.WARNING, logger="detector.sinks"):
        blurrer = FaceBlurrer(cascade_dir=tmp_path)
    assert blurrer.mode == "outside-detections"
    assert blurrer.face_detector is None
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "haarcascade_frontalface_default.xml" in warnings[0]
    assert reason in warnings[0]
    blurred = blurrer.apply(image, POSITIVE)
    assert np.array_equal(blurred[10:30, 10:30], image[10:30, 10:30])
    assert np.abs(blurred[60:, 60:].astype(int) - image[60:, 60:].astype(int)).mean() > 30


def test_privacy_missing_face_model_rejected(tmp_path):
    with pytest.raises(SinkError, match="face model .* not found"):
        FaceBlurrer(tmp_path / "yunet.onnx")


def test_retention_deletes_only_old_files(tmp_path):
    old = [tmp_path / "events-2020-01-01.jsonl", tmp_path / "evidence" / "a" / "old.jpg"]
    new = [tmp_path / "events-2030-01-01.jsonl", tmp_path / "evidence" / "a" / "new.jpg", tmp_path / "notes.txt"]
    for path in old + new:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    ten_days_ago = time.time() - 10 * 86_400
    for path in old + [tmp_path / "notes.txt"]:
        os.utime(path, (ten_days_ago, ten_days_ago))
    deleted = delete_older_than(tmp_path, 7, ["events-*.jsonl", "evidence/*/*.jpg"])
    assert sorted(deleted) == sorted(old)
    assert all(path.exists() for path in new)


def set_age(path: Path, days: float) -> None:
    then = time.time() - days * 86_400
    os.utime(path, (then, then), follow_symlinks=False)


def test_watch_retention_keeps_user_files(tmp_path):
    video = marker_video(tmp_path / "quiet.mp4", seconds=0.5, fps=10, marked=[])
    out_dir = tmp_path / "out"
    outside = tmp_path / "outside"
    expired = [out_dir / "events-2020-01-01.jsonl", out_dir / "evidence" / "desk" / "desk-old-alert1.jpg"]
    survivors = [
        out_dir / "photos" / "holiday.jpg",
        out_dir / "old.jpg",
        out_dir / "photos" / "events-2020-01-01.jsonl",
        out_dir / "evidence" / "desk" / "deeper" / "old.jpg",
        outside / "linked.jpg",
        outside / "camera" / "old.jpg",
    ]
    for path in expired + survivors:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        set_age(path, 40)
    # Links out of --out: retention must neither follow nor delete them.
    (out_dir / "evidence" / "linked").symlink_to(outside / "camera")
    (out_dir / "evidence" / "desk" / "link.jpg").symlink_to(outside / "linked.jpg")
    set_age(out_dir / "evidence" / "desk" / "link.jpg", 40)

    Watcher([CameraSpec("desk", str(video))], MarkerDetector(), WatchSettings(out_dir=out_dir, keep_days=7)).run()

    for path in expired:
        assert not path.exists(), f"{path} was kept"
    for path in survivors:
        assert path.exists(), f"{path} was deleted"
    assert (out_dir / "evidence" / "desk" / "link.jpg").is_symlink()


# -- the watch loop ---------------------------------------------------------


def test_watch_file_raises_one_alert_at_onset(tmp_path):
    video = marker_video(tmp_path / "smoking.mp4", seconds=6, fps=10, marked=[(2.0, 4.0)])
    settings = WatchSettings(out_dir=tmp_path / "out", health_interval=1)
    spec = CameraSpec("desk", str(video), AlertSettings(min_duration=1, clear_after=1, cooldown=60))
    result = Watcher([spec], MarkerDetector(), settings).run()

    records = read_events(tmp_path / "out")
    assert [record["type"] for record in records] == ["alert_raised", "alert_cleared"]
    raised, cleared = records
    assert result.alerts_raised == 1
    assert raised["onset_s"] == pytest.approx(2.0, abs=0.15)
    assert raised["raised_s"] == pytest.approx(3.0, abs=0.25)
    assert cleared["last_seen_s"] == pytest.approx(3.9, abs=0.25)
    assert cleared["reason"] == "quiet"
    evidence = tmp_path / "out" / raised["evidence"]
    assert evidence.is_file()
    assert cv2.imread(str(evidence)).shape == (120, 160, 3)


def test_watch_file_paced_at_its_frame_rate(tmp_path):
    video = marker_video(tmp_path / "quiet.mp4", seconds=2, fps=10, marked=[])
    detector = MarkerDetector()
    started = time.monotonic()
    Watcher([CameraSpec("desk", str(video))], detector, WatchSettings(out_dir=tmp_path / "out")).run()
    elapsed = time.monotonic() - started
    # Read as fast as it decodes, 20 small frames take well under a second.
    assert elapsed >= 1.7
    assert detector.frames >= 10


def test_watch_mjpeg_reconnects_and_keeps_alerting(tmp_path, caplog):
    server = MjpegServer(lambda index: scene(index, marker=True), fps=15).start()
    detector = MarkerDetector()
    settings = WatchSettings(out_dir=tmp_path / "out", reconnect=FAST_RECONNECT)
    spec = CameraSpec("door", server.url, AlertSettings(min_duration=0.5, clear_after=0.8, cooldown=0))
    watcher = Watcher([spec], detector, settings)
    caplog.set_level(logging.INFO, logger="detector")
    stop, thread, outcome = run_in_thread(watcher)
    try:
        assert wait_for(lambda: watcher.result.alerts_raised == 1, timeout=15)
        server.stop()
        assert wait_for(lambda: "reconnecting in" in caplog.text, timeout=15)
        time.sleep(1.5)  # Down longer than clear_after: the alert clears by the clock.
        server.start()
        assert wait_for(lambda: watcher.result.alerts_raised == 2, timeout=20)
    finally:
        stop.set()
        thread.join(timeout=15)
        server.stop()

    assert not thread.is_alive()
    types = [record["type"] for record in read_events(tmp_path / "out")]
    assert types == ["alert_raised", "alert_cleared", "alert_raised", "alert_cleared"]
    messages = [record.getMessage() for record in caplog.records if record.name.endswith(".door")]
    assert any(message.startswith("connected") for message in messages)
    assert any(message.startswith("lost") for message in messages)
    assert sum(message.startswith("connected") for message in messages) >= 2
    assert outcome["result"].failed_cameras == []


@pytest.mark.parametrize("receiver_state", ["slow", "down"])
def test_watch_webhook_problem_does_not_stall_loop(tmp_path, receiver_state):
    # Marker on for 1 s, off for 1 s: with these thresholds an alert every 2 s.
    server = MjpegServer(lambda index: scene(index, marker=(index // 15) % 2 == 0), fps=15).start()
    receiver = WebhookReceiver(delay=3.0) if receiver_state == "slow" else None
    url = receiver.url if receiver else f"http://127.0.0.1:{free_port()}/hook"
    webhook = WebhookSettings(url, timeout=0.5, max_attempts=3, initial_backoff=0.5, queue_size=2)
    settings = WatchSettings(out_dir=tmp_path / "out", webhook=webhook, reconnect=FAST_RECONNECT)
    spec = CameraSpec("hall", server.url, AlertSettings(min_duration=0.3, clear_after=0.5, cooldown=0))
    detector = MarkerDetector()
    watcher = Watcher([spec], detector, settings)
    stop, thread, _ = run_in_thread(watcher)
    try:
        assert wait_for(lambda: detector.frames > 0, timeout=10)
        started_frames, started = detector.frames, time.monotonic()
        time.sleep(7)
        rate = (detector.frames - started_frames) / (time.monotonic() - started)
    finally:
        stop.set()
        thread.join(timeout=20)
        server.stop()
        if receiver:
            receiver.close()

    records = read_events(tmp_path / "out")
    raised = [record for record in records if record["type"] == "alert_raised"]
    cleared = [record for record in records if record["type"] == "alert_cleared"]
    # The server sends 15 fps; a loop stalled by webhook calls would process a few frames per second.
    assert rate > 8
    assert len(raised) >= 3
    assert len(raised) == watcher.result.alerts_raised
    assert len(cleared) == len(raised)
    assert watcher.webhook.delivered == 0


def test_watch_two_cameras_one_unreachable(tmp_path, caplog):
    video = marker_video(tmp_path / "smoking.mp4", seconds=2, fps=10, marked=[(0.0, 2.0)])
    dead_url = f"http://127.0.0.1:{free_port()}/stream.mjpg"
    config = load_watch_config(
        write_config(
            tmp_path,
            "defaults:\n  clear_after: 1\n  cooldown: 0\ncameras:\n"
            "  - {name: demo, source: smoking.mp4, loop: true, min_duration: 0.5}\n"
            f"  - {{name: gate, source: '{dead_url}'}}\n",
        )
    )
    specs = [
        CameraSpec(camera.name, camera.source, config.settings_for(camera, AlertSettings()), camera.loop)
        for camera in config.cameras
    ]
    detector = MarkerDetector()
    settings = WatchSettings(out_dir=tmp_path / "out", health_interval=1, reconnect=FAST_RECONNECT)
    watcher = Watcher(specs, detector, settings)
    caplog.set_level(logging.INFO, logger="detector")
    stop, thread, _ = run_in_thread(watcher)
    try:
        assert wait_for(lambda: "gate: health" in caplog.text or _health_for(caplog, "gate"), timeout=10)
        assert wait_for(lambda: watcher.result.alerts_raised >= 1, timeout=10)
    finally:
        stop.set()
        thread.join(timeout=15)

    records = read_events(tmp_path / "out")
    assert {record["camera"] for record in records} == {"demo"}
    assert _health_for(caplog, "demo")
    assert any("reconnecting in" in message for message in _messages(caplog, "gate"))


def test_watch_unwritable_evidence_keeps_alert(tmp_path, caplog):
    video = marker_video(tmp_path / "smoking.mp4", seconds=2, fps=10, marked=[(0.0, 2.0)])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "evidence").write_text("a file where the evidence folder should be")
    receiver = WebhookReceiver()
    settings = WatchSettings(out_dir=out_dir, webhook=WebhookSettings(receiver.url, timeout=2))
    spec = CameraSpec("desk", str(video), AlertSettings(min_duration=0.5, clear_after=1, cooldown=60))
    caplog.set_level(logging.INFO, logger="detector")
    try:
        result = Watcher([spec], MarkerDetector(), settings).run()
    finally:
        receiver.close()
    assert result.alerts_raised == 1
    raised = [record for record in read_events(out_dir) if record["type"] == "alert_raised"]
    assert len(raised) == 1
    assert raised[0]["evidence"] is None
    assert [payload["type"] for payload in receiver.received][:1] == ["alert_raised"]
    errors = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    assert any(message.startswith("evidence for alert 1 not saved:") and "cannot write" in message for message in errors)


def test_watch_event_log_failure_logged_once(tmp_path, caplog):
    video = marker_video(tmp_path / "smoking.mp4", seconds=2, fps=10, marked=[(0.0, 2.0)])
    out_dir = tmp_path / "out"
    # A folder under each event log's name makes appending fail (today and tomorrow, in case the date changes).
    for days in (0, 1):
        day = time.strftime("%Y-%m-%d", time.gmtime(time.time() + days * 86_400))
        (out_dir / f"events-{day}.jsonl").mkdir(parents=True)
    webhook = WebhookSettings(f"http://127.0.0.1:{free_port()}/hook", timeout=0.5, max_attempts=1)
    settings = WatchSettings(out_dir=out_dir, webhook=webhook)
    spec = CameraSpec("desk", str(video), AlertSettings(min_duration=0.5, clear_after=1, cooldown=60))
    caplog.set_level(logging.INFO, logger="detector")
    Watcher([spec], MarkerDetector(), settings).run()
    errors = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    not_recorded = [message for message in errors if "not recorded in the event log" in message]
    assert any(message.startswith("alert_raised of alert 1 not recorded") for message in not_recorded), errors
    for message in not_recorded:
        assert "\n" not in message
        assert "peak_confidence" not in message  # The record itself is not dumped.
    webhook_errors = [message for message in errors if message.startswith("webhook ")]
    assert webhook_errors
    for message in webhook_errors:
        assert "the event log write failed too" in message
        assert "still has" not in message


@pytest.mark.parametrize("layout", ["file", "below_file"])
def test_cli_unusable_out_exits_2(tmp_path, layout):
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    out_dir = blocker if layout == "file" else blocker / "out"
    completed = run_cli(["--source", "0", "--out", str(out_dir), "--device", "cpu"], timeout=60)
    assert completed.returncode == 2, completed.stderr
    expected = f"--out '{out_dir}' is a file; pass a folder" if layout == "file" else f"--out '{out_dir}': cannot create"
    assert expected in completed.stderr
    assert "Traceback" not in completed.stderr
    assert "loaded" not in completed.stderr  # Failed before the model loaded.


def _messages(caplog, camera: str) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name.endswith("." + camera)]


def _health_for(caplog, camera: str) -> bool:
    return any(message.startswith("health:") for message in _messages(caplog, camera))


def test_watch_health_line_fields(tmp_path, caplog):
    video = marker_video(tmp_path / "quiet.mp4", seconds=2.5, fps=10, marked=[])
    caplog.set_level(logging.INFO, logger="detector")
    Watcher([CameraSpec("desk", str(video))], MarkerDetector(), WatchSettings(out_dir=tmp_path, health_interval=1)).run()
    lines = [message for message in _messages(caplog, "desk") if message.startswith("health:")]
    assert lines
    for field in ("input", "processed", "dropped", "inference", "lag"):
        assert field in lines[0]


def test_watch_show_without_display_runs_headless(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    video = marker_video(tmp_path / "quiet.mp4", seconds=0.5, fps=10, marked=[])
    caplog.set_level(logging.INFO, logger="detector")
    Watcher([CameraSpec("desk", str(video))], MarkerDetector(), WatchSettings(out_dir=tmp_path, show=True)).run()
    assert "--show ignored: no display" in caplog.text


SHOW_WATCH_SCRIPT = """
import logging, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from livefakes import MarkerDetector
from detector.watch import CameraSpec, Watcher, WatchSettings
logging.basicConfig(level=logging.INFO, format="%(message)s")
video, out_dir = sys.argv[2], Path(sys.argv[3])
Watcher([CameraSpec("desk", video)], MarkerDetector(), WatchSettings(out_dir=out_dir, show=True)).run()
"""


def test_watch_show_unreachable_display_runs_headless(tmp_path):
    video = marker_video(tmp_path / "quiet.mp4", seconds=0.5, fps=10, marked=[])
    # Nothing listens on display :99, so Qt cannot connect (it aborts the process that tries).
    environment = {**os.environ, "DISPLAY": ":99", "YOLO_OFFLINE": "1"}
    environment.pop("WAYLAND_DISPLAY", None)
    completed = subprocess.run(
        [sys.executable, "-c", SHOW_WATCH_SCRIPT, str(Path(__file__).parent), str(video), str(tmp_path / "out")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )
    assert completed.returncode == 0, completed.stderr
    assert "--show ignored: cannot open a window on display ':99'" in completed.stderr
    assert "running headless" in completed.stderr
    assert "source ended after" in completed.stderr


def test_watch_slow_model_lag_stays_bounded(tmp_path):
    server = MjpegServer(lambda index: scene(index), fps=30).start()
    detector = MarkerDetector(delay=0.2)  # Five frames a second at most, against 30 sent.
    watcher = Watcher([CameraSpec("cam", server.url)], detector, WatchSettings(out_dir=tmp_path, reconnect=FAST_RECONNECT))
    stop, thread, _ = run_in_thread(watcher)
    try:
        assert wait_for(lambda: detector.frames >= 5, timeout=10)
        time.sleep(4)
        lags = list(watcher.cameras[0].health.lags)
    finally:
        stop.set()
        thread.join(timeout=15)
        server.stop()
    # Without dropping, the lag would grow by about 0.8 s per second of running.
    assert max(lags[-5:]) < 1.0
    assert watcher.cameras[0].source.frames_captured > 2 * detector.frames


class StalledCapture:
    """Stand-in for cv2.VideoCapture whose open blocks for 20 s, like a stream that never answers."""

    def __init__(self, *arguments) -> None:
        time.sleep(20)

    def isOpened(self) -> bool:
        return False

    def release(self) -> None:
        pass


def test_watch_stalled_readers_stop_together(tmp_path, monkeypatch):
    monkeypatch.setattr(cv2, "VideoCapture", StalledCapture)
    specs = [CameraSpec(f"cam{index}", f"rtsp://127.0.0.1:9/stalled{index}") for index in range(3)]
    watcher = Watcher(specs, MarkerDetector(), WatchSettings(out_dir=tmp_path))
    stop, thread, _ = run_in_thread(watcher)
    time.sleep(0.5)
    started = time.monotonic()
    stop.set()
    thread.join(timeout=30)
    elapsed = time.monotonic() - started
    # One shared 5 s deadline for all readers; waiting 5 s for each in turn would take 15 s.
    assert not thread.is_alive()
    assert elapsed < 8, f"shutdown took {elapsed:.1f} s"


def test_stream_open_timeout_named(monkeypatch, caplog):
    import detector.sources

    class SlowFailingCapture(StalledCapture):
        def __init__(self, *arguments) -> None:
            time.sleep(1.0)

    monkeypatch.setattr(detector.sources, "CAPTURE_TIMEOUT_MS", 1000)
    monkeypatch.setattr(cv2, "VideoCapture", SlowFailingCapture)
    source = LiveSource("rtsp://127.0.0.1:9/x", name="cam", policy=ReconnectPolicy(max_retries=0))
    with caplog.at_level(logging.WARNING, logger="detector"), pytest.raises(SourceConnectionError):
        list(source.frames())
    assert "lost: could not open the source: timed out after 1 s" in caplog.text


# -- the command ------------------------------------------------------------


def run_cli(arguments: list[str], timeout: float = 90) -> subprocess.CompletedProcess:
    environment = {**os.environ, "YOLO_OFFLINE": "1"}
    return subprocess.run(
        [*SMOKEDET, "watch", *arguments],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
    )


def test_cli_unopenable_source_exits_1_without_credentials(tmp_path):
    url = f"rtsp://admin:s3cret@127.0.0.1:{free_port()}/live"
    completed = run_cli(["--source", url, "--max-retries", "1", "--out", str(tmp_path), "--device", "cpu"])
    output = completed.stdout + completed.stderr
    assert completed.returncode == 1, output
    assert "could not read rtsp://***@127.0.0.1" in output
    assert "after 2 attempt(s)" in output
    assert "s3cret" not in output
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert "s3cret" not in path.read_text(errors="replace")


def test_cli_stream_loop_error_hides_password(tmp_path):
    completed = run_cli(["--source", "rtsp://u:s3cret@127.0.0.1/x", "--loop", "--out", str(tmp_path)], timeout=60)
    assert completed.returncode == 2, completed.stderr
    assert "--loop applies only to a video file; drop it for stream source 'rtsp://***@127.0.0.1/x'" in completed.stderr
    assert "s3cret" not in completed.stdout + completed.stderr
    assert "validation error" not in completed.stderr


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--health-interval", "nan", "must be a finite number"),
        ("--keep-days", "nan", "must be a finite number"),
        ("--min-duration", "nan", "must be a finite number"),
        ("--clear-after", "inf", "must be a finite number"),
        ("--cooldown", "NaN", "must be a finite number"),
        ("--webhook-timeout", "nan", "must be a finite number"),
        ("--min-duration", "-1", "must be 0 or more"),
        ("--keep-days", "0", "must be more than 0"),
        ("--health-interval", "0", "must be more than 0"),
        ("--max-retries", "-1", "must be 0 or more"),
    ],
)
def test_cli_option_range_names_option(capsys, option, value, expected):
    from detector.cli import build_parser

    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["watch", "--source", "0", option, value])
    assert caught.value.code == 2
    assert f"argument {option}: {expected}, got '{value}'" in capsys.readouterr().err


@pytest.mark.parametrize("field", ["min_duration", "clear_after", "cooldown"])
def test_alert_settings_reject_nan(field):
    with pytest.raises(ValueError, match=field):
        AlertSettings(**{field: float("nan")})


def test_config_rejects_nan_threshold(tmp_path):
    body = "defaults:\n  cooldown: .nan\ncameras:\n  - {name: a, source: 0, min_duration: .inf}\n"
    with pytest.raises(ConfigError) as caught:
        load_watch_config(write_config(tmp_path, body))
    assert "defaults: cooldown: Input should be a finite number" in str(caught.value)
    assert "camera 'a' (cameras[0]): min_duration: Input should be a finite number" in str(caught.value)


def test_cli_log_lines_have_timestamps(tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    completed = run_cli(["--source", "0", "--out", str(blocker)], timeout=60)
    assert completed.returncode == 2, completed.stderr
    line = next(line for line in completed.stderr.splitlines() if "is a file; pass a folder" in line)
    assert re.match(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} ERROR detector\.watch: --out ", line), line


def test_cli_config_error_is_usage_error(tmp_path):
    config = write_config(tmp_path, "cameras:\n  - {name: a, source: 0, cooldown: -3}\n")
    completed = run_cli(["--config", str(config)], timeout=60)
    assert completed.returncode == 2
    assert "camera 'a' (cameras[0]): cooldown" in completed.stderr


@pytest.mark.parametrize(
    ("privacy", "expected"),
    [
        (["--privacy"], "face model '{model}' not found: pass --face-model with a YuNet .onnx file"),
        ([], "--face-model applies only with --privacy"),
    ],
)
def test_cli_face_model_usage_errors(tmp_path, privacy, expected):
    model = tmp_path / "missing-yunet.onnx"
    completed = run_cli(["--source", "0", *privacy, "--face-model", str(model), "--out", str(tmp_path)], timeout=60)
    assert completed.returncode == 2, completed.stderr
    assert expected.format(model=model) in completed.stderr


@pytest.mark.slow
def test_cli_real_detector_sigterm_closes_log(tmp_path):
    video = marker_video(tmp_path / "clip.mp4", seconds=3, fps=10, marked=[])
    out_dir = tmp_path / "out"
    process = subprocess.Popen(
        [*SMOKEDET, "watch", "--source", str(video), "--loop", "--out", str(out_dir),
         "--device", "cpu", "--health-interval", "1", "--min-duration", "0", "--conf", "0.01"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "YOLO_OFFLINE": "1"},
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        assert wait_for(lambda: sum("health:" in line for line in lines) >= 2, timeout=120), "".join(lines)
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(timeout=5)
    output = "".join(lines)
    assert returncode == 0, output
    assert "loaded cigarette-yolov9t.pt" in output
    assert "SIGTERM received; stopping" in output
    assert "watch stopped" in output
    processed = [line for line in lines if "health:" in line and "processed 0.0 fps" not in line]
    assert processed, output
    for path in out_dir.glob("events-*.jsonl"):
        text = path.read_text()
        assert text == "" or text.endswith("\n")
        records = [json.loads(line) for line in text.splitlines()]
        raised = sum(record["type"] == "alert_raised" for record in records)
        assert raised == sum(record["type"] == "alert_cleared" for record in records)
