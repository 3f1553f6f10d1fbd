"""Tests for ``smokedet train``, ``eval`` and ``export`` on generated datasets and a few real images."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
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
    _settings_of_run,
    check_export_requirements,
    evaluate,
    render_model_card,
    schedule_for,
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
    assert "| warm-up | 0 epochs |" in card


def test_train_rejects_official_output_name(tiny_dataset, tmp_path):
    output = tmp_path / "yolov8n.pt"
    arguments = ["train", "--data", str(tiny_dataset / "data.yaml"), "--model", "yolov9t.yaml", "--output", str(output)]

    assert main(arguments) == 1
    assert not output.exists()


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


def test_train_invalid_lr0_exits_1(tiny_dataset, tmp_path, capsys):
    arguments = ["train", "--data", str(tiny_dataset / "data.yaml"), "--model", "yolov9t.yaml", "--lr0", "-0.1"]
    arguments += ["--project", str(tmp_path / "runs"), "--output", str(tmp_path / "out.pt")]

    assert main(arguments) == 1
    assert "lr0=-0.1" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


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


def test_export_missing_weights(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--weights", str(tmp_path / "absent.pt"), "--format", "onnx"])

    assert exit_info.value.code == 2
