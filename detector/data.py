"""Dataset pull from Roboflow and checks of a YOLO detection dataset before training.

The checks follow the rules of Ultralytics 8.4 ``verify_image_label``, which drops
an image from training with only a log line when one line of its label file is
invalid. Invalid lines have the wrong number of values, a NaN, a coordinate outside
[0, 1] (with 1% slack) or a class id beyond ``names``. Polygon and box lines in one
file also drop the image.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from detector.config import describe_yaml_error

logger = logging.getLogger(__name__)

# Ultralytics' IMG_FORMATS (8.4), kept here so a check does not import Ultralytics.
IMAGE_SUFFIXES = frozenset(
    f".{suffix}"
    for suffix in ("avif", "bmp", "dng", "heic", "heif", "jp2", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp")
)
SPLIT_KEYS = ("train", "val", "test")
REQUIRED_SPLIT_KEYS = ("train", "val")
COORDINATE_SLACK = 0.01  # Ultralytics accepts coordinates up to 1.01 and down to -0.01.
MIN_IMAGE_SIDE = 10  # Ultralytics rejects images with a side under 10 pixels.
API_KEY_IN_URL = re.compile(r"(api_key=)[^&\s'\"]+")


class DataError(RuntimeError):
    """A dataset could not be downloaded or read."""


# ---------------------------------------------------------------------------
# Roboflow pull
# ---------------------------------------------------------------------------


def redact(text: str, secret: str) -> str:
    """Replace the secret and any ``api_key=`` query value in ``text`` with ``***``."""
    if secret:
        text = text.replace(secret, "***")
    return API_KEY_IN_URL.sub(r"\1***", text)


def default_pull_folder(project: str, version: int) -> Path:
    return Path("data") / f"{project}-{version}"


def pull_dataset(
    api_key: str,
    workspace: str,
    project: str,
    version: int,
    export_format: str = "yolov9",
    output: Path | None = None,
) -> Path:
    """Download a Roboflow dataset version and move it to ``output`` only once it is complete.

    The download goes to a hidden temporary folder beside ``output``, so a failed
    pull (rejected key, missing version, dropped connection, broken zip) leaves
    nothing at ``output``. Raises DataError with the API key removed from the message.
    """
    if not api_key:
        raise DataError("missing Roboflow API key: set the ROBOFLOW_API_KEY environment variable")
    output = Path(output) if output is not None else default_pull_folder(project, version)
    if output.exists():
        raise DataError(f"output folder {str(output)!r} already exists: remove it or pass another --out")
    output.parent.mkdir(parents=True, exist_ok=True)

    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent))
    download_folder = staging / "download"
    dataset_id = f"{workspace}/{project}/{version}"
    try:
        _download_version(api_key, workspace, project, version, export_format, download_folder)
        if not (download_folder / "data.yaml").is_file():
            raise DataError(f"Roboflow download of {dataset_id} has no data.yaml: check the export format {export_format!r}")
        os.rename(download_folder, output)
    except DataError:
        raise
    except Exception as error:  # The roboflow package raises RuntimeError, RoboflowError, requests and zip errors.
        message = redact(str(error), api_key).strip().splitlines()
        first_line = message[0][:300] if message else type(error).__name__
        raise DataError(f"Roboflow pull of {dataset_id} failed ({type(error).__name__}): {first_line}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    logger.info("pulled %s (%s) into %s", dataset_id, export_format, output)
    return output


def _download_version(
    api_key: str, workspace: str, project: str, version: int, export_format: str, location: Path
) -> None:
    # roboflow reads API_URL from the environment when it is first imported.
    import roboflow

    client = roboflow.Roboflow(api_key=api_key)
    dataset_version = client.workspace(workspace).project(project).version(version)
    dataset_version.download(export_format, location=str(location), overwrite=True)


# ---------------------------------------------------------------------------
# Dataset layout
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetLayout:
    """Dataset root, class names and image sources per split, as a data.yaml sets them."""

    yaml_path: Path
    root: Path
    names: dict[int, str]
    splits: dict[str, list[Path]]  # Split key -> image folders or .txt image lists.


def find_data_yaml(path: Path) -> Path:
    """Return the data.yaml for a dataset folder or yaml path; raise DataError when there is none."""
    path = Path(path)
    if path.is_dir():
        path = path / "data.yaml"
    if not path.is_file():
        raise DataError(f"dataset file {str(path)!r} not found: pass a dataset folder with a data.yaml, or the yaml itself")
    return path


def _resolve_split_path(root: Path, value: str) -> Path:
    # Same fallback as Ultralytics' check_det_dataset: Roboflow writes "../train/images".
    candidate = (root / value).resolve()
    if not candidate.exists() and value.startswith("../"):
        candidate = (root / value[3:]).resolve()
    return candidate


def load_layout(path: Path) -> DatasetLayout:
    """Read a data.yaml and resolve its splits the way Ultralytics does."""
    yaml_path = find_data_yaml(path)
    try:
        content = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise DataError(f"{describe_yaml_error(yaml_path, error)}; fix the file or export the dataset again") from error
    except UnicodeDecodeError as error:
        raise DataError(f"{yaml_path}: not UTF-8 text ({error.reason}); fix the file or export the dataset again") from error
    if not isinstance(content, dict):
        raise DataError(f"{yaml_path}: expected a mapping with train, val and names keys")

    raw_names = content.get("names")
    if isinstance(raw_names, list):
        names = dict(enumerate(str(name) for name in raw_names))
    elif isinstance(raw_names, dict):
        try:
            names = {int(key): str(value) for key, value in raw_names.items()}
        except (TypeError, ValueError):
            raise DataError(
                f"{yaml_path}: invalid 'names': map class ids to names, for example names: {{0: cigarette}}"
            ) from None
    else:
        raise DataError(f"{yaml_path}: missing or invalid 'names': list the class names, for example names: ['cigarette']")

    root_value = content.get("path")
    root = yaml_path.parent.resolve() if not root_value else Path(root_value)
    if not root.is_absolute():
        root = (yaml_path.parent / root).resolve()

    splits: dict[str, list[Path]] = {}
    for key in SPLIT_KEYS:
        value = content.get(key)
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        splits[key] = [_resolve_split_path(root, str(item)) for item in values]
    return DatasetLayout(yaml_path=yaml_path, root=root, names=names, splits=splits)


def list_split_images(sources: Iterable[Path]) -> list[Path]:
    """List the image files of one split from image folders (searched recursively) or .txt lists."""
    images: list[Path] = []
    for source in sources:
        if source.is_dir():
            images.extend(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif source.is_file() and source.suffix == ".txt":
            for line in source.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line:
                    image = Path(line) if Path(line).is_absolute() else (source.parent / line)
                    images.append(image.resolve())
    return sorted(images)


def label_path_for(image: Path) -> Path:
    """Return the label file Ultralytics reads for an image: last ``images`` folder -> ``labels``, suffix -> .txt."""
    parts = list(image.parts)
    for index in range(len(parts) - 2, -1, -1):
        if parts[index] == "images":
            parts[index] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


# ---------------------------------------------------------------------------
# Dataset check
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One finding of a dataset check.

    Findings with ``error`` set make Ultralytics drop or misread an image, or leak
    images between splits; the others are worth a look but train correctly.
    """

    path: Path
    line: int | None
    message: str
    error: bool = True

    def location(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else str(self.path)


@dataclass
class SplitCounts:
    """Image and box counts of one split."""

    images: int = 0
    labelled: int = 0  # Images with at least one box.
    empty: int = 0  # Images with an empty label file: negatives.
    missing_labels: int = 0  # Images without a label file, which Ultralytics also trains as negatives.
    boxes: int = 0
    errors: int = 0
    warnings: int = 0


@dataclass
class CheckReport:
    """Result of ``check_dataset``: counts per split and every problem found."""

    layout: DatasetLayout
    splits: dict[str, SplitCounts] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.error]

    @property
    def warnings(self) -> list[Problem]:
        return [problem for problem in self.problems if not problem.error]

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class _ImageResult:
    split: str
    image: Path
    digest: str | None
    label_state: str  # "boxes", "empty", "missing" or "invalid"
    boxes: int
    problems: list[Problem]


def check_label_lines(label: Path, lines: list[str], class_count: int, image_shape: tuple[int, int] | None) -> tuple[int, list[Problem]]:
    """Check the lines of one YOLO label file; return the number of boxes (box and polygon lines) and the problems.

    ``image_shape`` is (height, width) in pixels, used to flag boxes under one pixel.
    """
    problems: list[Problem] = []
    box_lines: list[int] = []
    polygon_lines: list[int] = []
    seen: dict[tuple[str, ...], int] = {}

    for number, text in enumerate(lines, start=1):
        tokens = text.split()
        if not tokens:
            continue
        if tuple(tokens) in seen:
            problems.append(Problem(label, number, f"duplicate of line {seen[tuple(tokens)]}; Ultralytics drops it", error=False))
            continue
        seen[tuple(tokens)] = number
        try:
            values = [float(token) for token in tokens]
        except ValueError:
            problems.append(Problem(label, number, f"non-numeric value in {text.strip()!r}"))
            continue

        if len(values) == 5:
            box_lines.append(number)
        elif len(values) > 6 and len(values) % 2 == 1:
            polygon_lines.append(number)
        else:
            problems.append(Problem(label, number, f"{len(values)} values: a box line has 5 (class x y w h), a polygon line 7 or more"))
            continue

        if not all(math.isfinite(value) for value in values):
            problems.append(Problem(label, number, "NaN or infinite value"))
            continue
        problems.extend(_check_class_id(label, number, values[0], class_count))
        coordinates = values[1:]
        if max(coordinates) > 1 + COORDINATE_SLACK or min(coordinates) < -COORDINATE_SLACK:
            problems.append(Problem(label, number, "coordinate outside [0, 1]: labels must be normalised to the image size"))
            continue
        if len(values) == 5:
            problems.extend(_check_box_size(label, number, values[3], values[4], image_shape))

    if box_lines and polygon_lines:
        problems.append(
            Problem(
                label,
                polygon_lines[0],
                f"polygon line mixed with box line {box_lines[0]}; Ultralytics drops the whole image: convert the polygons to boxes",
            )
        )
    elif polygon_lines:
        problems.append(
            Problem(label, polygon_lines[0], f"{len(polygon_lines)} polygon line(s); Ultralytics trains on their bounding boxes", error=False)
        )
    return len(box_lines) + len(polygon_lines), problems


def _check_class_id(label: Path, number: int, class_id: float, class_count: int) -> list[Problem]:
    if class_id != int(class_id):
        return [Problem(label, number, f"non-integer class id {class_id}")]
    if not 0 <= class_id < class_count:
        return [Problem(label, number, f"class id {int(class_id)} not in names (0-{class_count - 1})")]
    return []


def _check_box_size(label: Path, number: int, width: float, height: float, image_shape: tuple[int, int] | None) -> list[Problem]:
    if width <= 0 or height <= 0:
        return [Problem(label, number, f"degenerate box: width {width:g}, height {height:g}")]
    if image_shape is not None and (width * image_shape[1] < 1 or height * image_shape[0] < 1):
        return [Problem(label, number, "box smaller than one pixel", error=False)]
    return []


def _check_image(split: str, image: Path, class_count: int) -> _ImageResult:
    problems: list[Problem] = []
    digest = None
    shape = None
    try:
        content = image.read_bytes()
    except OSError as error:
        problems.append(Problem(image, None, f"unreadable image: {error.strerror}"))
    else:
        digest = hashlib.sha256(content).hexdigest()
        decoded = cv2.imdecode(np.frombuffer(content, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if decoded is None:
            problems.append(Problem(image, None, "unreadable image: OpenCV cannot decode it"))
        elif min(decoded.shape[:2]) < MIN_IMAGE_SIDE:
            problems.append(Problem(image, None, f"image is {decoded.shape[1]}x{decoded.shape[0]} pixels; Ultralytics needs 10 or more per side"))
        else:
            shape = decoded.shape[:2]

    label = label_path_for(image)
    if not label.is_file():
        problems.append(Problem(label, None, "label file missing; the image trains as a negative", error=False))
        return _ImageResult(split, image, digest, "missing", 0, problems)
    try:
        lines = label.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        problems.append(Problem(label, None, f"unreadable label file: {error}"))
        return _ImageResult(split, image, digest, "invalid", 0, problems)

    boxes, label_problems = check_label_lines(label, lines, class_count, shape)
    problems.extend(label_problems)
    state = "boxes" if boxes else "empty"
    return _ImageResult(split, image, digest, state, boxes, problems)


def _orphan_labels(images: list[Path], sources: list[Path]) -> Iterator[Problem]:
    expected = {label_path_for(image) for image in images}
    for source in sources:
        if not source.is_dir():
            continue
        labels_dir = label_path_for(source / "x.jpg").parent
        if labels_dir == source or not labels_dir.is_dir():
            continue
        for label in sorted(labels_dir.rglob("*.txt")):
            if label not in expected:
                yield Problem(label, None, "label file without an image; Ultralytics ignores it", error=False)


def check_dataset(path: Path, workers: int | None = None) -> CheckReport:
    """Check a YOLO detection dataset: layout, image/label pairs, label lines and images shared by splits.

    Every image is read and decoded once, in ``workers`` threads (default: CPU count).
    Raises DataError when data.yaml itself is missing or unreadable; every other
    finding goes into the report.
    """
    layout = load_layout(path)
    report = CheckReport(layout=layout)

    if len(set(layout.names)) != len(layout.names) or sorted(layout.names) != list(range(len(layout.names))):
        report.problems.append(Problem(layout.yaml_path, None, "class ids in names must be 0..N-1 without gaps"))
    for key in REQUIRED_SPLIT_KEYS:
        if key not in layout.splits:
            report.problems.append(Problem(layout.yaml_path, None, f"missing {key!r} split key"))

    jobs: list[tuple[str, Path]] = []
    for key, sources in layout.splits.items():
        report.splits[key] = SplitCounts()
        missing = [source for source in sources if not source.exists()]
        _add_problems(report, key, [Problem(layout.yaml_path, None, f"{key} split {str(s)!r} not found") for s in missing])
        images = list_split_images(sources)
        if not images and not missing:
            _add_problems(report, key, [Problem(layout.yaml_path, None, f"{key} split has no images")])
        _add_problems(report, key, list(_orphan_labels(images, sources)))
        jobs.extend((key, image) for image in images)

    workers = workers or max(1, os.cpu_count() or 1)
    class_count = len(layout.names)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda job: _check_image(job[0], job[1], class_count), jobs))

    for result in results:
        counts = report.splits[result.split]
        counts.images += 1
        counts.boxes += result.boxes
        counts.labelled += result.label_state == "boxes"
        counts.empty += result.label_state == "empty"
        counts.missing_labels += result.label_state == "missing"
        _add_problems(report, result.split, result.problems)
    for split, problem in _duplicate_problems(results):
        _add_problems(report, split, [problem])
    logger.info("checked %d images of %s: %d errors", len(results), layout.yaml_path, len(report.errors))
    return report


def _add_problems(report: CheckReport, split: str, problems: list[Problem]) -> None:
    report.problems.extend(problems)
    counts = report.splits[split]
    for problem in problems:
        if problem.error:
            counts.errors += 1
        else:
            counts.warnings += 1


def _duplicate_problems(results: list[_ImageResult]) -> list[tuple[str, Problem]]:
    """Report images with identical bytes: across splits an error (evaluation leak), within a split a warning."""
    by_digest: dict[str, list[_ImageResult]] = defaultdict(list)
    for result in results:
        if result.digest is not None:
            by_digest[result.digest].append(result)

    problems = []
    for copies in by_digest.values():
        first = copies[0]
        for copy in copies[1:]:
            across = copy.split != first.split
            where = f"the {first.split} split" if across else "this split"
            problems.append((copy.split, Problem(copy.image, None, f"same image as {first.image} in {where}", error=across)))
    return problems
