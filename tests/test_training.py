"""Tests for ``smokedet train``, ``eval`` and ``export`` on generated datasets and a few real images."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import ultralytics  # noqa: F401 - imported before any capsys test, so its log handler keeps the real stdout.
import yaml
from conftest import read_manifest
from yolo_dataset import write_dataset

from detector.cli import main
from detector.data import label_path_for
from detector.model import DEFAULT_WEIGHTS, Detector, ModelSettings
from detector.training import (
    ImageOutcomes,
    TrainingError,
    TrainSettings,
    _check_amp_offline,
    _settings_of_run,
    check_export_requirements,
    check_training_data,
    evaluate,
    is_release_asset_name,
    render_model_card,
    schedule_for,
    write_training_yaml,
)

REAL_IMAGES_PER_KIND = 3  # Positives and negatives copied from the shared test split.
LOW_CONFIDENCE = 0.05
SURE_CONFIDENCE = 0.1


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    write_dataset(root, counts={"train": 8, "val": 4, "test": 8}, sources=("studio", "street"))
    return root


@pytest.fixture(scope="module")
def real_subset(tmp_path_factory, dataset_dir):
    """Copy a few positive and negative images of the shared test split, with their labels and manifest rows."""
    root = tmp_path_factory.mktemp("real")
    rows = read_manifest(dataset_dir, "test")
    positives = [row for row in rows if int(row["boxes"]) > 0][:REAL_IMAGES_PER_KIND]
    negatives = [row for row in rows if int(row["boxes"]) == 0][:REAL_IMAGES_PER_KIND]
    for row in positives + negatives:
        image = dataset_dir / row["file"]
        for source, target in ((image, root / row["file"]), (label_path_for(image), label_path_for(root / row["file"]))):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    (root / "data.yaml").write_text("train: test/images\nval: test/images\ntest: test/images\nnames: ['cigarette']\n")
    header = "file,source,source_key,split,boxes\n"
    body = "".join(f"{r['file']},{r['source']},{r['source_key']},{r['split']},{r['boxes']}\n" for r in positives + negatives)
    (root / "manifest.csv").write_text(header + body)
    return root


# ---------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_train_tiny_dataset(tiny_dataset, tmp_path, capsys):
    output = tmp_path / "published" / "tiny-v9t.pt"
    arguments = ["train", "--data", str(tiny_dataset / "data.yaml"), "--model", "yolov9t.yaml"]
    arguments += ["--epochs", "1", "--imgsz", "64", "--batch", "4", "--device", "cpu", "--workers", "0"]
    arguments += ["--project", str(tmp_path / "runs"), "--name", "tiny", "--output", str(output)]
    arguments += ["--lr0", "0.02", "--lrf", "0.2", "--warmup-epochs", "0.5", "--close-mosaic", "1"]

    assert main(arguments) == 0

    assert output.is_file()
    assert (tmp_path / "runs" / "tiny" / "weights" / "best.pt").is_file()
    detector = Detector(ModelSettings(weights=output, device="cpu", imgsz=64))
    assert detector.names == {0: "cigarette"}
    assert len(detector.detect([np.zeros((64, 64, 3), dtype=np.uint8)])) == 1

    card = output.with_suffix(".md").read_text()
    assert str((tiny_dataset / "data.yaml").resolve()) in card
    assert "yolov9t.yaml" in card
    assert "--epochs 1 --imgsz 64" in card
    assert "| image size | 64 |" in card
    assert "| 1 |" in card  # The row of epoch 1 in the metrics table.
    assert "--lr0 0.02 --lrf 0.2 --warmup-epochs 0.5 --close-mosaic 1" in card
    assert "| optimizer | SGD, lr0 0.02 decaying linearly to 0.2 of it |" in card
    assert "weights:" in capsys.readouterr().out

    run_arguments = yaml.safe_load((tmp_path / "runs" / "tiny" / "args.yaml").read_text())
    assert run_arguments["optimizer"] == "SGD"
    assert run_arguments["lr0"] == 0.02
    assert run_arguments["lrf"] == 0.2
    assert run_arguments["warmup_epochs"] == 0.5
    assert run_arguments["close_mosaic"] == 1


@pytest.mark.slow
def test_train_fine_tunes_checkpoint(tiny_dataset, tmp_path):
    start = tmp_path / "start.pt"
    shutil.copyfile(DEFAULT_WEIGHTS, start)
    arguments = ["train", "--data", str(tiny_dataset / "data.yaml"), "--model", str(start)]
    arguments += ["--epochs", "1", "--imgsz", "64", "--batch", "4", "--device", "cpu", "--workers", "0"]
    arguments += ["--project", str(tmp_path / "runs"), "--name", "tuned", "--output", str(tmp_path / "tuned.pt")]

    assert main(arguments) == 0

    run_arguments = yaml.safe_load((tmp_path / "runs" / "tuned" / "args.yaml").read_text())
    assert run_arguments["optimizer"] == "SGD"
    assert run_arguments["lr0"] == 0.001
    assert run_arguments["warmup_epochs"] == 0.0
    assert run_arguments["close_mosaic"] == 1  # Mosaic off for the whole one-epoch run.
    card = (tmp_path / "tuned.md").read_text()
    assert "| warm-up | none |" in card


@pytest.mark.slow
def test_train_resume_continues_interrupted_run(tiny_dataset, tmp_path, capsys, caplog):
    dataset = shutil.copytree(tiny_dataset, tmp_path / "dataset")
    run = tmp_path / "runs" / "two"
    base = ["train", "--project", str(tmp_path / "runs"), "--name", "two", "--output", str(tmp_path / "two.pt")]
    first = [*base, "--data", str(dataset), "--epochs", "2", "--imgsz", "64", "--batch", "4"]
    assert main([*first, "--device", "cpu", "--workers", "0"]) == 0
    capsys.readouterr()

    assert main([*base, "--resume"]) == 1
    assert "already finished" in capsys.readouterr().err
    (tmp_path / "two.pt").unlink()
    with pytest.raises(SystemExit) as exit_info:
        main(first)
    assert exit_info.value.code == 2
    assert "weights of a finished run" in capsys.readouterr().err

    # An interruption during epoch 2 leaves epoch 1's checkpoint, optimizer included, as last.pt.
    shutil.copyfile(run / "weights" / "epoch0.pt", run / "weights" / "last.pt")
    results = (run / "results.csv").read_text().splitlines()
    (run / "results.csv").write_text("\n".join(results[:2]) + "\n")
    with pytest.raises(SystemExit) as exit_info:
        main(first)
    assert exit_info.value.code == 2
    assert "continue it with --resume" in capsys.readouterr().err
    dataset.rename(tmp_path / "moved")
    assert main([*base, "--resume"]) == 1
    assert "its dataset is no longer usable" in capsys.readouterr().err
    (tmp_path / "moved").rename(dataset)
    caplog.set_level("WARNING", logger="detector")
    assert main([*base, "--resume", "--epochs", "5", "--lr0", "0.1"]) == 0

    assert "ignoring --epochs, --lr0" in caplog.text
    epochs = [line.split(",")[0] for line in (run / "results.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2"]
    card = (tmp_path / "two.md").read_text()
    assert "| model | `yolov9t.yaml` |" in card  # Not the last.pt that Ultralytics records on resume.
    assert "--device cpu" in card  # As the run started, not the resume's default of auto.
    assert "2 run of 2 requested" in card
    assert "continued with --resume" in card


def test_train_rejects_official_output_name(tiny_dataset, tmp_path):
    output = tmp_path / "yolov8n.pt"
    arguments = ["train", "--data", str(tiny_dataset / "data.yaml"), "--model", "yolov9t.yaml", "--output", str(output)]

    with pytest.raises(SystemExit) as exit_info:
        main(arguments)

    assert exit_info.value.code == 2
    assert not output.exists()


@pytest.mark.parametrize(
    "output",
    ["card.md", "no-suffix", "blocker/inside.pt"],
)
def test_train_rejects_bad_output_before_training(tiny_dataset, tmp_path, capsys, output):
    (tmp_path / "blocker").write_text("a file where a folder is needed")
    arguments = ["train", "--data", str(tiny_dataset), "--project", str(tmp_path / "runs"), "--output", str(tmp_path / output)]

    with pytest.raises(SystemExit) as exit_info:
        main(arguments)

    assert exit_info.value.code == 2
    assert "output" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "option",
    [
        ["--epochs", "0"],
        ["--imgsz", "0"],
        ["--batch", "0"],
        ["--lr0", "nan"],
        ["--lr0", "1.5"],
        ["--lrf", "0"],
        ["--warmup-epochs", "inf"],
        ["--warmup-epochs", "-1"],
        ["--close-mosaic", "-2"],
        ["--workers", "-1"],
    ],
)
def test_train_rejects_out_of_range_option(tiny_dataset, capsys, option):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(tiny_dataset), *option])

    assert exit_info.value.code == 2
    assert f"argument {option[0]}" in capsys.readouterr().err


def test_train_never_runs_download_entry(tiny_dataset, tmp_path, capsys):
    marker = tmp_path / "download-ran"
    data = tmp_path / "data.yaml"
    data.write_text(
        f"path: {tiny_dataset}\ntrain: train/images\nval: missing/images\nnames: ['cigarette']\n"
        f"download: \"open('{marker}', 'w').write('x')\"\n"
    )
    arguments = ["train", "--data", str(data), "--project", str(tmp_path / "runs"), "--output", str(tmp_path / "out.pt")]

    assert main(arguments) == 1

    assert "val path" in capsys.readouterr().err
    assert not marker.exists()
    assert not (tmp_path / "runs").exists()


def test_training_yaml_has_absolute_paths(tiny_dataset, tmp_path, monkeypatch):
    data = tiny_dataset / "relative-root.yaml"
    data.write_text("path: .\ntrain: train/images\nval: valid/images\ntest: absent/images\nnames: ['cigarette']\n")
    monkeypatch.chdir(tmp_path)  # Ultralytics would resolve "path: ." against this folder.

    written = yaml.safe_load(write_training_yaml(check_training_data(data), tmp_path / "run").read_text())

    assert written["train"] == str(tiny_dataset / "train" / "images")
    assert written["val"] == str(tiny_dataset / "valid" / "images")
    assert "test" not in written
    assert "download" not in written
    assert written["names"] == {0: "cigarette"}


def test_train_rejects_unknown_model_suffix(tiny_dataset, tmp_path, capsys):
    script = tmp_path / "train.py"
    script.write_text("print('not a model')\n")
    arguments = ["train", "--data", str(tiny_dataset), "--model", str(script), "--output", str(tmp_path / "out.pt")]

    assert main(arguments) == 1
    assert "neither a .pt checkpoint nor a .yaml architecture" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value"),
    [("--project", "file"), ("--name", ""), ("--name", "a/b"), ("--output", "existing.pt")],
)
def test_train_rejects_unusable_location(tiny_dataset, tmp_path, monkeypatch, option, value):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("a file where a folder is needed")
    (tmp_path / "existing.pt").write_bytes(b"published weights")
    arguments = ["train", "--data", str(tiny_dataset), option, value]
    if option != "--output":
        arguments += ["--output", str(tmp_path / "out.pt")]

    with pytest.raises(SystemExit) as exit_info:
        main(arguments)

    assert exit_info.value.code == 2
    assert (tmp_path / "existing.pt").read_bytes() == b"published weights"


def test_train_needs_data_unless_resuming(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--model", "yolov9t.yaml"])

    assert exit_info.value.code == 2
    assert "--data is required" in capsys.readouterr().err


def test_train_resume_without_run(tmp_path, capsys):
    arguments = ["train", "--resume", "--project", str(tmp_path / "runs"), "--name", "absent", "--output", str(tmp_path / "x.pt")]

    assert main(arguments) == 1
    assert "last.pt not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("not-a-checkpoint.pt", "not a loadable checkpoint"),
        ("yolov9tt.yaml", "does not exist"),
        ("data.yaml", "missing key"),
    ],
)
def test_train_unloadable_model(tiny_dataset, tmp_path, capsys, model, reason):
    (tmp_path / "not-a-checkpoint.pt").write_text("plain text")
    model_path = tiny_dataset / "data.yaml" if model == "data.yaml" else model
    if model.endswith(".pt"):
        model_path = tmp_path / model
    arguments = ["train", "--data", str(tiny_dataset), "--model", str(model_path), "--device", "cpu"]
    arguments += ["--project", str(tmp_path / "runs"), "--output", str(tmp_path / "out.pt")]

    assert main(arguments) == 1

    error = capsys.readouterr().err
    assert "could not be loaded" in error
    assert reason in error
    assert "Traceback" not in error
    assert not (tmp_path / "runs").exists()


def test_train_broken_data_yaml(tmp_path, capsys):
    data = tmp_path / "data.yaml"
    data.write_text("train: [\n")

    assert main(["train", "--data", str(data), "--output", str(tmp_path / "out.pt")]) == 1

    assert f"{data}:2:1: invalid YAML: " in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "is_asset"),
    [
        ("yolov9t.pt", True),
        ("yolo11n-seg.pt", True),
        ("sam_b.pt", True),
        ("FastSAM-s.pt", True),
        ("rtdetr-l.pt", True),
        ("sample.pt", False),
        ("samurai-cigarette.pt", False),
        ("cigarette-yolov9t.pt", False),
    ],
)
def test_release_asset_names(name, is_asset):
    assert is_release_asset_name(name) is is_asset


def test_amp_check_never_downloads(tmp_path, monkeypatch):
    import ultralytics.utils

    monkeypatch.setattr(ultralytics.utils, "WEIGHTS_DIR", tmp_path)  # No yolo26n.pt in it.

    def original(model):
        raise AssertionError("Ultralytics' check would download yolo26n.pt")

    check_amp = _check_amp_offline(original)

    assert check_amp(torch.nn.Linear(1, 1)) is False
    cuda_model = SimpleNamespace(parameters=lambda: iter([SimpleNamespace(device=torch.device("cuda", 0))]))
    assert check_amp(cuda_model) is True


def test_train_rejects_official_model_name(tiny_dataset, tmp_path, capsys):
    checkpoint = tmp_path / "yolov9t.pt"
    checkpoint.write_bytes(b"")  # Never loaded: the name check runs first.
    arguments = ["train", "--data", str(tiny_dataset / "data.yaml"), "--model", str(checkpoint)]
    arguments += ["--project", str(tmp_path / "runs"), "--output", str(tmp_path / "out.pt")]

    assert main(arguments) == 1
    assert "release asset" in capsys.readouterr().err


def test_train_missing_data(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(tmp_path / "absent.yaml")])

    assert exit_info.value.code == 2


def test_schedule_scratch_defaults(tmp_path):
    schedule = schedule_for(TrainSettings(data=tmp_path / "data.yaml", model="yolov9t.yaml", epochs=40))

    assert schedule.optimizer == "SGD"
    assert schedule.lr0 == 0.01
    assert schedule.warmup_epochs == 3.0
    assert schedule.close_mosaic == 10


def test_schedule_fine_tune_defaults(tmp_path):
    schedule = schedule_for(TrainSettings(data=tmp_path / "data.yaml", model="runs/best.pt", epochs=6))

    assert schedule.optimizer == "SGD"
    assert schedule.lr0 == 0.001
    assert schedule.lrf == 0.5
    assert schedule.warmup_epochs == 0.0
    assert schedule.close_mosaic == 6


def test_schedule_given_values_win(tmp_path):
    settings = TrainSettings(
        data=tmp_path / "data.yaml", model="best.pt", optimizer="AdamW", lr0=0.003, lrf=0.1, warmup_epochs=1, close_mosaic=2
    )

    schedule = schedule_for(settings)

    assert schedule.optimizer == "AdamW"
    assert schedule.lr0 == 0.003
    assert schedule.lrf == 0.1
    assert schedule.warmup_epochs == 1
    assert schedule.close_mosaic == 2


@pytest.mark.parametrize(
    "values",
    [{"lr0": 0.0}, {"lr0": -0.01}, {"lrf": 0.0}, {"lrf": 1.5}, {"warmup_epochs": -1.0}, {"close_mosaic": -1}],
)
def test_schedule_rejects_invalid(tmp_path, values):
    settings = TrainSettings(data=tmp_path / "data.yaml", model="yolov9t.yaml", **values)

    with pytest.raises(TrainingError, match="invalid"):
        schedule_for(settings)


def test_train_unknown_optimizer_exits_2(tiny_dataset):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(tiny_dataset / "data.yaml"), "--optimizer", "Lion"])

    assert exit_info.value.code == 2


def test_model_card_rows(tmp_path):
    settings = TrainSettings(data=tmp_path / "data.yaml", model="yolov9t.yaml", epochs=3, imgsz=320)
    rows = [
        {"epoch": 1, "metrics/precision(B)": 0.5, "metrics/recall(B)": 0.25, "metrics/mAP50(B)": 0.125, "metrics/mAP50-95(B)": 0.0625},
        {"epoch": 2, "metrics/precision(B)": 0.75, "metrics/recall(B)": 0.5, "metrics/mAP50(B)": 0.25, "metrics/mAP50-95(B)": 0.125},
    ]

    card = render_model_card(tmp_path / "tiny.pt", tmp_path / "best.pt", settings, rows, "smokedet train --epochs 3")

    assert "| 1 | 0.5000 | 0.2500 | 0.1250 | 0.0625 |" in card
    assert "| 2 | 0.7500 | 0.5000 | 0.2500 | 0.1250 |" in card
    assert "2 run of 3 requested" in card
    assert "`smokedet train --epochs 3`" in card


def test_resumed_run_settings_from_args(tmp_path):
    (tmp_path / "args.yaml").write_text(
        "data: /data/cig.yaml\nmodel: yolov9t.yaml\nepochs: 30\nimgsz: 320\nbatch: 8\noptimizer: SGD\nlr0: 0.004\n"
    )
    given = TrainSettings(data=tmp_path / "other.yaml", model="last.pt", epochs=10, resume=True)

    settings = _settings_of_run(tmp_path, given)

    assert settings.data.as_posix() == "/data/cig.yaml"
    assert settings.model == "yolov9t.yaml"
    assert settings.epochs == 30
    assert settings.imgsz == 320
    assert settings.batch == 8
    assert settings.optimizer == "SGD"
    assert settings.lr0 == 0.004
    assert settings.lrf is None  # Not in args.yaml, so the schedule default applies.


# ---------------------------------------------------------------------------
# eval
# ---------------------------------------------------------------------------


def outcome_totals(outcomes) -> tuple[int, int]:
    positives = outcomes.positives_found + outcomes.positives_missed
    negatives = outcomes.negatives_clean + outcomes.negatives_false_alarm
    return positives, negatives


@pytest.mark.parametrize(
    ("has_box", "detected", "field"),
    [
        (True, True, "positives_found"),
        (True, False, "positives_missed"),
        (False, False, "negatives_clean"),
        (False, True, "negatives_false_alarm"),
    ],
)
def test_image_outcomes_add(has_box, detected, field):
    outcomes = ImageOutcomes()
    outcomes.add(has_box=has_box, detected=detected)

    assert getattr(outcomes, field) == 1
    assert sum(outcome_totals(outcomes)) == 1


@pytest.mark.slow
def test_eval_generated_dataset(tiny_dataset):
    # Confidence 0 keeps every raw detection, so every image counts as detected.
    report = evaluate(DEFAULT_WEIGHTS, tiny_dataset, split="test", confidence=0.0, imgsz=96, device="cpu", workers=0)

    assert report.metrics.images == 8
    assert report.outcomes.positives_found == 6
    assert report.outcomes.negatives_false_alarm == 2
    for metric in ("precision", "recall", "map50", "map50_95"):
        assert 0.0 <= getattr(report.metrics, metric) <= 1.0
    assert sorted(report.source_metrics) == ["street", "studio"]
    assert [metrics.images for metrics in report.source_metrics.values()] == [4, 4]
    # Sources alternate and every fourth image is a negative, so all negatives are street images.
    assert outcome_totals(report.source_outcomes["studio"]) == (4, 0)
    assert outcome_totals(report.source_outcomes["street"]) == (2, 2)
    assert not (tiny_dataset / "test" / "labels.cache").exists()


@pytest.mark.slow
def test_eval_real_images(real_subset, capsys):
    # The shipped checkpoint is an early from-scratch model: its confidences on these positives are 0.1-0.3.
    arguments = ["eval", "--weights", str(DEFAULT_WEIGHTS), "--data", str(real_subset), "--device", "cpu"]
    assert main([*arguments, "--conf", "0.1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)

    assert report["split"] == "test"
    assert report["metrics"]["images"] == 2 * REAL_IMAGES_PER_KIND
    image_level = report["image_level"]
    assert image_level["positives_found"] + image_level["positives_missed"] == REAL_IMAGES_PER_KIND
    assert image_level["negatives_clean"] + image_level["negatives_false_alarm"] == REAL_IMAGES_PER_KIND
    # A broken eval path (wrong labels, wrong image paths) gives zeros here.
    assert image_level["positives_found"] >= 1
    assert report["metrics"]["map50"] > 0.0
    assert set(report["sources"]) == {"cigarettev6"}


def test_eval_missing_split(tiny_dataset, tmp_path):
    data = tmp_path / "data.yaml"
    data.write_text(f"path: {tiny_dataset}\ntrain: train/images\nval: valid/images\nnames: ['cigarette']\n")

    with pytest.raises(TrainingError, match="no 'test' split"):
        evaluate(DEFAULT_WEIGHTS, data, split="test", device="cpu")


# ---------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------


def box_iou(first: np.ndarray, second: np.ndarray) -> float:
    x1, y1 = np.maximum(first[:2], second[:2])
    x2, y2 = np.minimum(first[2:], second[2:])
    intersection = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area = (first[2] - first[0]) * (first[3] - first[1]) + (second[2] - second[0]) * (second[3] - second[1])
    return float(intersection / (area - intersection))


def assert_matched(first, second, index: int, names: str) -> None:
    """Assert each box of ``first`` above SURE_CONFIDENCE has a box in ``second`` with IoU > 0.9 and close confidence."""
    for box, confidence in zip(first.xyxy, first.confidence):
        if confidence < SURE_CONFIDENCE:
            continue
        assert len(second) > 0, f"frame {index}: {names}: box at confidence {confidence:.2f} has no counterpart"
        overlaps = [box_iou(box, other) for other in second.xyxy]
        best = int(np.argmax(overlaps))
        assert overlaps[best] > 0.9, f"frame {index}: {names}: best IoU {overlaps[best]:.3f}"
        assert abs(second.confidence[best] - confidence) < 0.05, f"frame {index}: {names}: confidences differ"


@pytest.mark.slow
def test_export_onnx_matches_pytorch(tmp_path, real_subset):
    exported = tmp_path / "cigarette.onnx"
    assert main(["export", "--weights", str(DEFAULT_WEIGHTS), "--format", "onnx", "--device", "cpu", "--out", str(exported)]) == 0
    assert exported.is_file()
    assert not list(tmp_path.glob(".smokedet-export-*"))

    frames = [cv2.imread(str(path)) for path in sorted((real_subset / "test" / "images").iterdir())]
    # Detect down to LOW_CONFIDENCE but compare boxes from SURE_CONFIDENCE up, so a box whose
    # confidence sits right at a threshold cannot make the comparison fail.
    pytorch = Detector(ModelSettings(weights=DEFAULT_WEIGHTS, device="cpu", confidence=LOW_CONFIDENCE)).detect(frames)
    onnx = Detector(ModelSettings(weights=exported, device="cpu", confidence=LOW_CONFIDENCE)).detect(frames)

    sure_boxes = sum(int((detections.confidence >= SURE_CONFIDENCE).sum()) for detections in pytorch)
    assert sure_boxes >= 1  # Otherwise the comparison proves nothing.
    for index, (expected, found) in enumerate(zip(pytorch, onnx)):
        assert_matched(expected, found, index, "PyTorch -> ONNX")
        assert_matched(found, expected, index, "ONNX -> PyTorch")


@pytest.mark.slow
def test_export_openvino_loads(tmp_path, real_subset):
    exported = tmp_path / "cigarette_openvino_model"
    arguments = ["export", "--weights", str(DEFAULT_WEIGHTS), "--format", "openvino", "--device", "cpu"]
    assert main([*arguments, "--out", str(exported)]) == 0
    assert (exported / "cigarette-yolov9t.xml").is_file()

    frames = [cv2.imread(str(path)) for path in sorted((real_subset / "test" / "images").iterdir())]
    pytorch = Detector(ModelSettings(weights=DEFAULT_WEIGHTS, device="cpu", confidence=LOW_CONFIDENCE)).detect(frames)
    openvino = Detector(ModelSettings(weights=exported, device="cpu", confidence=LOW_CONFIDENCE)).detect(frames)

    for index, (expected, found) in enumerate(zip(pytorch, openvino)):
        assert_matched(expected, found, index, "PyTorch -> OpenVINO")
        assert_matched(found, expected, index, "OpenVINO -> PyTorch")


def test_export_rejects_wrong_output_name(tmp_path, capsys):
    arguments = ["export", "--weights", str(DEFAULT_WEIGHTS), "--format", "openvino", "--out", str(tmp_path / "model")]

    assert main(arguments) == 1
    assert "_openvino_model" in capsys.readouterr().err


def test_export_engine_needs_cuda():
    with pytest.raises(TrainingError, match="CUDA GPU"):
        check_export_requirements("engine", half=False, cuda_available=False)


def test_export_onnx_half_needs_cuda():
    with pytest.raises(TrainingError, match="--half"):
        check_export_requirements("onnx", half=True, cuda_available=False)


def test_export_unloadable_weights(tmp_path, capsys):
    weights = tmp_path / "cigarette.pt"
    weights.write_text("plain text")

    assert main(["export", "--weights", str(weights), "--format", "onnx", "--device", "cpu"]) == 1

    error = capsys.readouterr().err
    assert f"weights '{weights}' could not be loaded" in error
    assert not list(tmp_path.glob("*.onnx"))


def test_export_output_under_file(tmp_path, capsys):
    (tmp_path / "blocker").write_text("a file where a folder is needed")
    output = tmp_path / "blocker" / "cigarette.onnx"
    arguments = ["export", "--weights", str(DEFAULT_WEIGHTS), "--format", "onnx", "--device", "cpu", "--out", str(output)]

    assert main(arguments) == 1
    assert "cannot be written" in capsys.readouterr().err


@pytest.mark.parametrize(
    "weights",
    ["folder", "notes.md"],
)
def test_eval_unusable_weights(tiny_dataset, tmp_path, capsys, weights):
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.md").write_text("# not a model")
    arguments = ["eval", "--weights", str(tmp_path / weights), "--data", str(tiny_dataset), "--device", "cpu"]

    assert main(arguments) == 1

    error = capsys.readouterr().err
    assert str(tmp_path / weights) in error
    assert "Traceback" not in error


def test_eval_quiet_prints_only_tables(tiny_dataset):
    command = [sys.executable, "-m", "detector.cli", "-q", "eval", "--weights", str(DEFAULT_WEIGHTS)]
    command += ["--data", str(tiny_dataset), "--device", "cpu", "--imgsz", "96", "--workers", "0"]

    result = subprocess.run(command, capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"{DEFAULT_WEIGHTS} on the test split")
    assert "Ultralytics" not in result.stdout + result.stderr


@pytest.mark.parametrize("option", ["--workers", "--max-warnings"])
def test_data_check_rejects_negative_count(tiny_dataset, option):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "check", str(tiny_dataset), option, "-1"])

    assert exit_info.value.code == 2


def test_data_check_invalid_names(tmp_path, capsys):
    (tmp_path / "data.yaml").write_text("train: train/images\nval: valid/images\nnames: {a: cigarette}\n")

    assert main(["data", "check", str(tmp_path)]) == 1
    assert "invalid 'names'" in capsys.readouterr().err


def test_export_keeps_existing_folder(tmp_path, capsys):
    folder = tmp_path / "keep.onnx"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    arguments = ["export", "--weights", str(DEFAULT_WEIGHTS), "--format", "onnx", "--device", "cpu", "--out", str(folder)]

    assert main(arguments) == 1

    assert "is a folder" in capsys.readouterr().err
    assert (folder / "notes.txt").read_text() == "precious"


def test_export_missing_weights(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--weights", str(tmp_path / "absent.pt"), "--format", "onnx"])

    assert exit_info.value.code == 2
