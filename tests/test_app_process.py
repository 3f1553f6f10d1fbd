"""Tests of app.py run as its own process, as a user starts it: uploads, SIGTERM and temporary files."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180  # Importing Gradio and torch takes tens of seconds on a busy two-core machine.


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_server(process: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"app.py exited with {process.returncode} before serving"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"app.py did not serve {url} within {START_TIMEOUT_S} s")


def test_sigterm_removes_uploads_and_temp_area(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "GRADIO_TEMP_DIR"}
    env.update(TMPDIR=str(tmp_path), YOLO_OFFLINE="1")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log_path = tmp_path / "app.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "app.py", "--port", str(port)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for_server(process, url)
        response = httpx.post(f"{url}gradio_api/upload", files={"files": ("notes.jpg", b"not an image\n")}, timeout=30)
        assert response.status_code == 200, response.text
        uploaded = Path(response.json()[0])
        assert uploaded.is_file()
        temp_areas = list(tmp_path.glob("smokedet-app-*"))
        assert len(temp_areas) == 1
        assert uploaded.is_relative_to(temp_areas[0] / "gradio"), uploaded

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert not uploaded.exists()
    assert list(tmp_path.glob("smokedet-app-*")) == []
    assert "received SIGTERM" in log_path.read_text()
