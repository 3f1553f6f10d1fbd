"""Generate tiny YOLO detection datasets: noise images with one bright bar labelled as class 0."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import yaml

SPLIT_FOLDERS = {"train": "train", "val": "valid", "test": "test"}


def write_image(path: Path, rng: np.random.Generator, size: int, box: tuple[int, int, int, int] | None) -> None:
    """Write a noise image, with a filled white rectangle at ``box`` (x1, y1, x2, y2) when given."""
    image = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8)
    if box is not None:
        cv2.rectangle(image, box[:2], box[2:], (255, 255, 255), thickness=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")


def write_dataset(
    root: Path,
    counts: dict[str, int] | None = None,
    size: int = 96,
    negative_every: int = 4,
    sources: tuple[str, ...] = (),
    seed: int = 0,
) -> Path:
    """Write a Roboflow-layout dataset under ``root`` and return its data.yaml.

    Every ``negative_every``-th image of a split is a negative with an empty label
    file. With ``sources``, images are assigned to them in turn and listed in a
    manifest.csv (file, source, source_key, split, boxes).
    """
    counts = counts or {"train": 8, "val": 4}
    rng = np.random.default_rng(seed)
    manifest_rows = []
    for split, count in counts.items():
        folder = SPLIT_FOLDERS[split]
        for index in range(count):
            name = f"{folder}-{index:03d}.jpg"
            image = root / folder / "images" / name
            label = root / folder / "labels" / f"{folder}-{index:03d}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            if index % negative_every == negative_every - 1:
                write_image(image, rng, size, None)
                label.write_text("")
                boxes = 0
            else:
                width, height = int(rng.integers(size // 5, size // 2)), int(rng.integers(size // 10, size // 5))
                x1, y1 = int(rng.integers(0, size - width)), int(rng.integers(0, size - height))
                write_image(image, rng, size, (x1, y1, x1 + width - 1, y1 + height - 1))
                centre_x, centre_y = (x1 + width / 2) / size, (y1 + height / 2) / size
                label.write_text(f"0 {centre_x:.6f} {centre_y:.6f} {width / size:.6f} {height / size:.6f}\n")
                boxes = 1
            if sources:
                source = sources[index % len(sources)]
                manifest_rows.append([f"{folder}/images/{name}", source, f"key-{folder}-{index}", folder, boxes])

    data = {split: f"{SPLIT_FOLDERS[split]}/images" for split in counts}
    data.update({"nc": 1, "names": ["cigarette"]})
    data_yaml = root / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    if sources:
        with open(root / "manifest.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "source", "source_key", "split", "boxes"])
            writer.writerows(manifest_rows)
    return data_yaml
