"""Tests for ``smokedet data pull`` (against a fake Roboflow API on 127.0.0.1) and ``smokedet data check``."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from yolo_dataset import write_dataset

from detector.cli import main
from detector.data import DataError, check_dataset, check_label_lines, label_path_for

REPO_ROOT = Path(__file__).resolve().parents[1]
API_KEY = "testKey123abc"
WORKSPACE = "acme"
PROJECT = "cigs"
VERSION = 2


# ---------------------------------------------------------------------------
# A fake Roboflow API serving the requests of
# Roboflow(key).workspace(W).project(P).version(V).download("yolov9") in roboflow 1.7.3.
# ---------------------------------------------------------------------------


def roboflow_zip(tmp_path: Path) -> bytes:
    """Return a zip in the Roboflow YOLO export layout, built from a generated dataset."""
    root = tmp_path / "export-source"
    write_dataset(root, counts={"train": 3, "val": 2, "test": 1}, size=64)
    (root / "data.yaml").write_text(
        "train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\nnc: 1\nnames: ['cigarette']\n"
    )
    (root / "README.roboflow.txt").write_text("Exported from a fake Roboflow server.\n")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(root).as_posix())
    return buffer.getvalue()


class FakeRoboflow(BaseHTTPRequestHandler):
    archive = b""
    drop_download = False  # Send half the zip, then close the connection.
    requests_seen: list[str] = []

    def log_message(self, format, *args):  # noqa: A002 - the base class names it so.
        pass

    def _send_json(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorised(self, query: dict) -> bool:
        if query.get("api_key") == [API_KEY]:
            return True
        self._send_json(401, {"error": {"message": "This API key does not exist (or has been revoked).", "status": 401}})
        return False

    def do_POST(self):  # noqa: N802 - http.server's method name.
        url = urlparse(self.path)
        self.requests_seen.append(f"POST {url.path}")
        if url.path == "/" and self._authorised(parse_qs(url.query)):
            self._send_json(200, {"workspace": WORKSPACE})

    def do_GET(self):  # noqa: N802 - http.server's method name.
        url = urlparse(self.path)
        self.requests_seen.append(f"GET {url.path}")
        parts = [part for part in url.path.split("/") if part]
        if parts[:1] == ["download"]:
            self._send_zip()
            return
        if not self._authorised(parse_qs(url.query)):
            return
        if parts == [WORKSPACE]:
            self._send_json(200, {"workspace": {"name": WORKSPACE, "url": WORKSPACE, "projects": []}})
        elif parts == [WORKSPACE, PROJECT]:
            self._send_json(200, {"project": self._project(), "versions": [self._version()]})
        elif parts == [WORKSPACE, PROJECT, str(VERSION)]:
            self._send_json(200, {"version": {"images": 6, "generating": False, "progress": 1.0}})
        elif parts == [WORKSPACE, PROJECT, str(VERSION), "yolov9"]:
            link = f"http://127.0.0.1:{self.server.server_address[1]}/download/{PROJECT}-{VERSION}.zip"
            self._send_json(200, {"export": {"link": link}})
        else:
            self._send_json(404, {"error": {"message": f"{url.path} not found"}})

    def _send_zip(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(self.archive)))
        self.end_headers()
        if self.drop_download:
            self.wfile.write(self.archive[: len(self.archive) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(self.archive)

    @staticmethod
    def _project() -> dict:
        return {
            "id": f"{WORKSPACE}/{PROJECT}",
            "name": PROJECT,
            "type": "object-detection",
            "annotation": "cigarette",
            "classes": {"cigarette": 4},
            "colors": {},
            "created": 1700000000,
            "updated": 1700000000,
            "images": 6,
            "public": False,
            "splits": {"train": 3, "valid": 2, "test": 1},
            "unannotated": 0,
        }

    @staticmethod
    def _version() -> dict:
        return {
            "id": f"{WORKSPACE}/{PROJECT}/{VERSION}",
            "augmentation": {},
            "created": 1700000000,
            "images": 6,
            "preprocessing": {},
            "splits": {"train": 3, "valid": 2, "test": 1},
            "exports": ["yolov9"],
        }


@pytest.fixture
def fake_roboflow(tmp_path):
    handler = type("Handler", (FakeRoboflow,), {"archive": roboflow_zip(tmp_path), "requests_seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()


def run_pull(server, tmp_path: Path, out: Path, api_key: str | None = API_KEY, version: int = VERSION):
    """Run ``smokedet data pull`` in a subprocess, because roboflow reads API_URL when it is imported."""
    env = dict(os.environ)
    env.pop("ROBOFLOW_API_KEY", None)
    env.update(
        API_URL=f"http://127.0.0.1:{server.server_address[1]}",
        ROBOFLOW_CONFIG_DIR=str(tmp_path / "no-roboflow-config.json"),
        PYTHONPATH=str(REPO_ROOT),
        TQDM_DISABLE="1",
    )
    if api_key is not None:
        env["ROBOFLOW_API_KEY"] = api_key
    command = [sys.executable, "-m", "detector.cli", "data", "pull", "--workspace", WORKSPACE, "--project", PROJECT]
    command += ["--version", str(version), "--out", str(out)]
    return subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_pull_success(fake_roboflow, tmp_path):
    server, handler = fake_roboflow
    datasets = tmp_path / "datasets"
    out = datasets / "cigs-2"

    completed = run_pull(server, tmp_path, out)

    assert completed.returncode == 0, completed.stderr
    assert (out / "data.yaml").is_file()
    assert len(list((out / "train" / "images").iterdir())) == 3
    assert len(list((out / "valid" / "labels").iterdir())) == 2
    assert not (out / "roboflow.zip").exists()
    assert leftovers(datasets) == ["cigs-2"]
    assert check_dataset(out).ok
    assert f"GET /download/{PROJECT}-{VERSION}.zip" in handler.requests_seen
    assert API_KEY not in completed.stdout + completed.stderr


def test_pull_wrong_key(fake_roboflow, tmp_path):
    server, _ = fake_roboflow
    datasets = tmp_path / "datasets"
    completed = run_pull(server, tmp_path, datasets / "cigs-2", api_key="wrongKey999xyz")

    assert completed.returncode == 1
    assert "API key does not exist" in completed.stderr
    assert "wrongKey999xyz" not in completed.stdout + completed.stderr
    assert leftovers(datasets) == []


def test_pull_missing_version(fake_roboflow, tmp_path):
    server, _ = fake_roboflow
    datasets = tmp_path / "datasets"
    completed = run_pull(server, tmp_path, datasets / "cigs-7", version=7)

    assert completed.returncode == 1
    assert "Version number 7 is not found" in completed.stderr
    assert leftovers(datasets) == []


def test_pull_dropped_connection(fake_roboflow, tmp_path):
    server, handler = fake_roboflow
    handler.drop_download = True
    datasets = tmp_path / "datasets"
    completed = run_pull(server, tmp_path, datasets / "cigs-2")

    assert completed.returncode == 1
    assert f"pull of {WORKSPACE}/{PROJECT}/{VERSION} failed" in completed.stderr
    assert "Connection broken" in completed.stderr
    assert API_KEY not in completed.stdout + completed.stderr
    assert leftovers(datasets) == []


def test_pull_missing_key(fake_roboflow, tmp_path):
    server, handler = fake_roboflow
    completed = run_pull(server, tmp_path, tmp_path / "datasets" / "cigs-2", api_key=None)

    assert completed.returncode == 2
    assert "ROBOFLOW_API_KEY" in completed.stderr
    assert handler.requests_seen == []


def test_pull_existing_output(fake_roboflow, tmp_path):
    server, handler = fake_roboflow
    out = tmp_path / "datasets" / "cigs-2"
    out.mkdir(parents=True)
    completed = run_pull(server, tmp_path, out)

    assert completed.returncode == 1
    assert "already exists" in completed.stderr
    assert handler.requests_seen == []


# ---------------------------------------------------------------------------
# data check
# ---------------------------------------------------------------------------


def test_check_clean_dataset(tmp_path):
    data_yaml = write_dataset(tmp_path, counts={"train": 8, "val": 4, "test": 4})

    report = check_dataset(tmp_path)

    assert report.ok, [problem.message for problem in report.problems]
    assert report.problems == []
    assert report.splits["train"].images == 8
    assert report.splits["train"].labelled == 6  # Every fourth image is a negative.
    assert report.splits["train"].empty == 2
    assert report.splits["train"].boxes == 6
    assert report.splits["val"].images == 4
    assert check_dataset(data_yaml).splits["test"].images == 4


@pytest.mark.parametrize(
    ("line", "expected", "error"),
    [
        ("0 0.5 0.5 0.2", "4 values", True),
        ("0 0.5 0.5 0.2 0.2 0.1", "6 values", True),
        ("0 0.5 0.5 abc 0.2", "non-numeric", True),
        ("0 nan 0.5 0.2 0.2", "NaN", True),
        ("0 1.2 0.5 0.2 0.2", "outside [0, 1]", True),
        ("0 0.5 -0.3 0.2 0.2", "outside [0, 1]", True),
        ("0 0.5 0.5 0 0.2", "degenerate box", True),
        ("3 0.5 0.5 0.2 0.2", "class id 3 not in names", True),
        ("-1 0.5 0.5 0.2 0.2", "class id -1 not in names", True),
        ("0.5 0.5 0.5 0.2 0.2", "non-integer class id", True),
        ("0 0.5 0.5 0.0005 0.2", "smaller than one pixel", False),
        ("0 0.1 0.1 0.4 0.1 0.4 0.4", "polygon", False),
    ],
)
def test_check_label_line(tmp_path, line, expected, error):
    label = tmp_path / "a.txt"
    _, problems = check_label_lines(label, [line], class_count=1, image_shape=(100, 100))

    assert len(problems) == 1, problems
    assert expected in problems[0].message
    assert problems[0].error is error
    assert problems[0].line == 1


def test_check_polygon_mixed_with_box(tmp_path):
    lines = ["0 0.5 0.5 0.2 0.2", "0 0.1 0.1 0.4 0.1 0.4 0.4"]
    boxes, problems = check_label_lines(tmp_path / "a.txt", lines, class_count=1, image_shape=(100, 100))

    assert boxes == 2
    assert [problem.error for problem in problems] == [True]
    assert "mixed with box line 1" in problems[0].message
    assert problems[0].line == 2


def test_check_duplicate_line_warns(tmp_path):
    lines = ["0 0.5 0.5 0.2 0.2", "", "0 0.5 0.5 0.2 0.2"]
    boxes, problems = check_label_lines(tmp_path / "a.txt", lines, class_count=1, image_shape=(100, 100))

    assert boxes == 1
    assert len(problems) == 1
    assert not problems[0].error
    assert problems[0].line == 3


def test_check_finds_dataset_problems(tmp_path):
    write_dataset(tmp_path, counts={"train": 8, "val": 4})
    train_images = sorted((tmp_path / "train" / "images").iterdir())
    (tmp_path / "train" / "images" / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "train" / "labels" / "broken.txt").write_text("")
    label_path_for(train_images[1]).write_text("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 nan 0.1\n")
    label_path_for(train_images[2]).unlink()
    (tmp_path / "train" / "labels" / "orphan.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    copy = tmp_path / "valid" / "images" / "leaked.jpg"
    copy.write_bytes(train_images[0].read_bytes())
    label_path_for(copy).write_text("")

    report = check_dataset(tmp_path)
    messages = {(problem.path.name, problem.line): problem for problem in report.problems}

    assert not report.ok
    assert messages[("broken.jpg", None)].error
    assert "unreadable image" in messages[("broken.jpg", None)].message
    assert messages[(label_path_for(train_images[1]).name, 2)].error
    assert not messages[(label_path_for(train_images[2]).name, None)].error
    assert not messages[("orphan.txt", None)].error
    assert messages[("leaked.jpg", None)].error
    assert "train split" in messages[("leaked.jpg", None)].message
    assert report.splits["train"].images == 9
    assert report.splits["train"].missing_labels == 1
    assert report.splits["train"].errors == 2
    assert report.splits["train"].warnings == 2
    assert report.splits["val"].errors == 1


def test_check_layout_problems(tmp_path):
    (tmp_path / "data.yaml").write_text("train: train/images\nval: valid/images\nnames: ['cigarette']\n")
    write_dataset(tmp_path / "elsewhere", counts={"train": 2})
    (tmp_path / "train").symlink_to(tmp_path / "elsewhere" / "train")

    report = check_dataset(tmp_path)

    assert not report.ok
    assert any("val split" in problem.message and "not found" in problem.message for problem in report.errors)
    assert report.splits["train"].images == 2


def test_check_missing_yaml(tmp_path):
    with pytest.raises(DataError, match="data.yaml"):
        check_dataset(tmp_path)


def test_check_cli_exit_codes(tmp_path, capsys):
    write_dataset(tmp_path, counts={"train": 4, "val": 4})

    assert main(["data", "check", str(tmp_path)]) == 0
    clean_output = capsys.readouterr().out
    assert "train" in clean_output.splitlines()[1]

    label = sorted((tmp_path / "valid" / "labels").iterdir())[0]
    label.write_text("0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n")
    assert main(["data", "check", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert f"{label}:2: class id 1 not in names" in captured.out
    assert "1 problem(s)" in captured.err


def test_check_cli_missing_dataset(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "check", str(tmp_path / "absent")])

    assert exit_info.value.code == 2
    assert "not found" in capsys.readouterr().err


def test_check_relative_dataset_path(tmp_path, monkeypatch):
    write_dataset(tmp_path / "data" / "set", counts={"train": 4, "val": 2})
    monkeypatch.chdir(tmp_path)

    report = check_dataset(Path("data/set"))

    assert report.ok, [problem.message for problem in report.problems]
    assert report.splits["train"].images == 4
    assert report.splits["val"].images == 2
