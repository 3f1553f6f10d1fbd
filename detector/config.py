"""Typed settings of ``smokedet watch``, loaded from a YAML camera file.

Example::

    defaults:            # apply to every camera that does not set its own value
      min_duration: 3
      clear_after: 10
      cooldown: 60
      confidence: 0.35
    cameras:
      - name: loading-dock
        source: rtsp://user:password@192.0.2.10/stream1
        min_duration: 5
      - name: desk
        source: 0            # webcam index
      - name: demo
        source: demo.mp4     # relative to this file's folder
        loop: true

Errors name the camera, the key and what to change.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from detector.events import AlertSettings
from detector.sources import SourceKind, redact_url, source_kind

CAMERA_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


class ConfigError(ValueError):
    """A camera file that cannot be read or does not validate; the message lists every problem."""


class AlertThresholds(BaseModel):
    """Alert timing and detection threshold; every field may be left out to inherit."""

    # YAML reads .nan and .inf as floats, which no threshold accepts.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    min_duration: float | None = Field(
        default=None, ge=0, le=3600, description="seconds smoking must persist before an alert is raised"
    )
    clear_after: float | None = Field(
        default=None, gt=0, le=3600, description="seconds without a detection after which an alert clears"
    )
    cooldown: float | None = Field(
        default=None, ge=0, le=86_400, description="seconds after an alert clears during which no new alert is raised"
    )
    confidence: float | None = Field(
        default=None, ge=0, le=1, description="minimum detection confidence that counts as smoking (0-1)"
    )

    def resolve(self, fallback: AlertSettings) -> AlertSettings:
        """Return ``fallback`` with the fields set here replaced."""
        return AlertSettings(
            min_duration=fallback.min_duration if self.min_duration is None else self.min_duration,
            clear_after=fallback.clear_after if self.clear_after is None else self.clear_after,
            cooldown=fallback.cooldown if self.cooldown is None else self.cooldown,
            min_positive_fraction=fallback.min_positive_fraction,
            confidence=fallback.confidence if self.confidence is None else self.confidence,
        )


class CameraConfig(AlertThresholds):
    """One camera: its name, where its frames come from, and its own thresholds."""

    name: str = Field(
        pattern=CAMERA_NAME_PATTERN,
        description="unique camera name used in logs, the event log and evidence file names "
        "(letters, digits, '-' and '_', at most 64 characters)",
    )
    source: str = Field(
        min_length=1, description="webcam index (0, 1, ...), rtsp:// or http(s):// stream URL, or video file path"
    )
    loop: bool = Field(default=False, description="restart a video file at its end; only for file sources")

    @field_validator("source", mode="before")
    @classmethod
    def _source_as_text(cls, value: Any) -> Any:
        # YAML reads `source: 0` as an integer webcam index.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @model_validator(mode="after")
    def _loop_only_for_files(self) -> CameraConfig:
        if self.loop and source_kind(self.source) is not SourceKind.FILE:
            raise ValueError("loop: only a video file can loop; remove 'loop' for webcams and streams")
        return self

    @property
    def kind(self) -> SourceKind:
        return source_kind(self.source)


class WatchConfig(BaseModel):
    """The camera file: shared defaults and the cameras one process watches."""

    model_config = ConfigDict(extra="forbid")

    defaults: AlertThresholds = Field(
        default_factory=AlertThresholds, description="thresholds for cameras that do not set their own"
    )
    cameras: list[CameraConfig] = Field(min_length=1, max_length=64, description="the cameras to watch")

    @model_validator(mode="after")
    def _unique_names(self) -> WatchConfig:
        seen: set[str] = set()
        for camera in self.cameras:
            if camera.name in seen:
                raise ValueError(f"camera name {camera.name!r} is used twice; give every camera its own name")
            seen.add(camera.name)
        return self

    def settings_for(self, camera: CameraConfig, fallback: AlertSettings) -> AlertSettings:
        """Return the camera's alert settings: its own values, then the file's defaults, then ``fallback``."""
        return camera.resolve(self.defaults.resolve(fallback))


def load_watch_config(path: Path) -> WatchConfig:
    """Read and validate a YAML camera file; relative file sources are resolved against its folder.

    Raises ConfigError naming the camera and the key of every problem.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the camera file ({error.strerror or error})") from error
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"camera file {path} is not UTF-8 text (invalid byte at offset {error.start}); save it as UTF-8"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(describe_yaml_error(path, error)) from None
    if data is None:
        raise ConfigError(f"camera file {path} is empty; list the cameras under 'cameras:'")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with a 'cameras' list at the top, found {type(data).__name__}")
    try:
        config = WatchConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{path}: invalid camera file:\n" + "\n".join(_describe_errors(error, data))) from None

    problems = []
    for camera in config.cameras:
        if camera.kind is SourceKind.FILE:
            file_path = Path(camera.source).expanduser()
            if not file_path.is_absolute():
                file_path = path.parent / file_path
            if not file_path.is_file():
                problems.append(f"  camera {camera.name!r}: source: video file {str(file_path)!r} not found; fix the path")
            camera.source = str(file_path)
    if problems:
        raise ConfigError(f"{path}: invalid camera file:\n" + "\n".join(problems))
    return config


def describe_yaml_error(path: Path, error: yaml.YAMLError) -> str:
    """Return one line naming the file, and the 1-based line and column where PyYAML found the problem."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    if mark is None:
        return f"{path}: invalid YAML: {problem}"
    return f"{path}:{mark.line + 1}:{mark.column + 1}: invalid YAML: {problem}"


def _describe_errors(error: ValidationError, data: dict[str, Any]) -> list[str]:
    lines = []
    for item in error.errors():
        location = item["loc"]
        where = "top level"
        keys = [str(part) for part in location]
        if len(location) >= 2 and location[0] == "cameras" and isinstance(location[1], int):
            where = f"camera {_camera_label(data, location[1])}"
            keys = [str(part) for part in location[2:]]
        elif location and location[0] == "defaults":
            where = "defaults"
            keys = [str(part) for part in location[1:]]
        key = ".".join(keys) or "(whole entry)"
        if item["type"] == "value_error":
            # Messages of this file's own validators already name the change to make.
            lines.append(f"  {where}: {redact_url(str(item['ctx']['error']))}")
        else:
            lines.append(f"  {where}: {key}: {redact_url(item['msg'])}; {_fix_hint(item, keys)}")
    return lines


def _camera_label(data: dict[str, Any], index: int) -> str:
    cameras = data.get("cameras")
    name = None
    if isinstance(cameras, list) and index < len(cameras) and isinstance(cameras[index], dict):
        name = cameras[index].get("name")
    return f"{name!r} (cameras[{index}])" if name else f"cameras[{index}]"


def _fix_hint(item: dict[str, Any], keys: list[str]) -> str:
    kind = item["type"]
    if kind == "extra_forbidden":
        owners = {"cameras": CameraConfig, "defaults": AlertThresholds}
        owner = owners.get(item["loc"][0], WatchConfig)
        return f"remove it or fix its spelling; allowed keys: {', '.join(owner.model_fields)}"
    if kind == "missing":
        field = _field_of(keys)
        return f"add it ({field.description})" if field is not None and field.description else "add it"
    field = _field_of(keys)
    if field is not None and field.description:
        return f"set it to {field.description}"
    return "fix the value"


def _field_of(keys: list[str]):
    if not keys:
        return None
    name = keys[-1]
    for model in (CameraConfig, WatchConfig, AlertThresholds):
        if name in model.model_fields:
            return model.model_fields[name]
    return None


def single_camera(source: str, loop: bool = False) -> WatchConfig:
    """Build the config of a plain ``--source`` run: one camera named after the kind of source."""
    kind = source_kind(source)
    if kind is SourceKind.FILE:
        name = re.sub(r"[^A-Za-z0-9_-]", "_", Path(source).stem)[:64] or "file"
        name = name if re.match(CAMERA_NAME_PATTERN, name) else f"file_{name}"[:64]
    elif kind is SourceKind.WEBCAM:
        name = f"webcam{int(source)}"
    else:
        name = "stream"
    if loop and kind is not SourceKind.FILE:
        raise ConfigError(f"--loop applies only to a video file; drop it for {kind.value} source {redact_url(source)!r}")
    try:
        return WatchConfig(cameras=[CameraConfig(name=name, source=source, loop=loop)])
    except ValidationError as error:
        # Pydantic's own message repeats the input, which may be a URL with a password.
        problems = "; ".join(line.strip() for line in _describe_errors(error, {"cameras": [{"name": name}]}))
        raise ConfigError(f"invalid --source {redact_url(source)!r}: {problems}") from None
