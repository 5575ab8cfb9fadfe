"""The calibrator artifact: the one file of ``calibration/`` that touches the disk.

A versioned JSON per task: method, temperature, threshold and how it was chosen, the
sizes of the disjoint splits, when it was fitted, a fingerprint of the student it was
fitted for, and its metrics before and after scaling. The gateway refuses an artifact
whose fingerprint does not match the student it serves. A free-text task's calibrator may
be logistic instead (``feature = "text"``: the probability that the judge accepts, from
``features.text_features``, with its coefficients in ``logistic``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from calibration.features import TEXT_FEATURES, Feature, confidence, text_features
from calibration.logistic import LogisticCalibrator

__all__ = [
    "ARTIFACT_VERSION",
    "Calibration",
    "load_calibration",
    "save_calibration",
    "student_fingerprint",
]

ARTIFACT_VERSION = 1
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def student_fingerprint(student_dir: str | Path) -> str:
    """sha256 over the files that decide the student's outputs: a whole model's config,
    weights (one file or shards) and tokenizer; for a LoRA adapter, its own configuration
    (less the base's path, so moving the folders keeps it), weights and tokenizer, and its
    base's fingerprint."""
    folder = Path(student_dir)
    digest = hashlib.sha256()
    adapter = folder / "adapter_config.json"
    if adapter.is_file():
        config = json.loads(adapter.read_text())
        named = Path(config.pop("base_model_name_or_path", "") or ".")
        base = named if named.is_absolute() else (folder / named).resolve()
        digest.update(b"adapter_config.json" + json.dumps(config, sort_keys=True).encode())
        own = [n for n in _TOKENIZER_FILES if (folder / n).is_file()]  # else the base's
        _hash_files(digest, folder, ["adapter_model.safetensors", *own])
        digest.update(student_fingerprint(base).encode())
    else:
        _hash_files(digest, folder, ["config.json", *_weight_files(folder), *_TOKENIZER_FILES])
    return "sha256:" + digest.hexdigest()


def _weight_files(folder: Path) -> list[str]:
    if (folder / "model.safetensors").is_file() or not (folder / "config.json").is_file():
        return ["model.safetensors"]
    shards = sorted(p.name for p in folder.glob("model-*-of-*.safetensors"))
    return shards or ["model.safetensors"]


def _hash_files(digest: Any, folder: Path, names: Sequence[str]) -> None:
    for name in names:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: not a student folder")
        digest.update(name.encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)


@dataclass(frozen=True)
class Calibration:
    """A fitted calibrator: turns token logprobs (at ``temperature``) into accept/escalate."""

    temperature: float
    threshold: float
    student_fingerprint: str
    feature: Feature | Literal["text"] = "sequence"
    logistic: dict[str, Any] | None = None  # feature "text": LogisticCalibrator.to_json()
    method: str = "temperature_scaling"
    target_accuracy: float | None = None
    max_escalation: float | None = None
    delta: float = 0.05
    certified: bool = True
    error_bound: float | None = None
    n_temperature: int = 0
    n_threshold: int = 0
    fitted_at: str = ""
    metrics_before: dict[str, float] = field(default_factory=dict)
    metrics_after: dict[str, float] = field(default_factory=dict)
    version: int = ARTIFACT_VERSION

    @property
    def version_id(self) -> str:
        """A short content hash: which calibrator made a decision, quoted in captured records."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return "cal-" + hashlib.sha256(blob).hexdigest()[:16]

    def confidence(self, scaled_logprobs: Sequence[float]) -> float:
        if self.feature == "text":
            return self._text_model.predict_one(text_features(scaled_logprobs))
        return confidence(scaled_logprobs, self.feature)

    @cached_property
    def _text_model(self) -> LogisticCalibrator:
        if self.logistic is None:
            raise ValueError("a text calibrator needs its logistic coefficients")
        return LogisticCalibrator.from_json(self.logistic)


def save_calibration(calibration: Calibration, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(calibration), indent=2) + "\n")


def load_calibration(
    path: str | Path, *, student_dir: str | Path | None = None, fingerprint: str | None = None
) -> Calibration:
    """Read an artifact; with ``student_dir``, refuse it unless it was fitted for that student.

    ``fingerprint``: that student's fingerprint when the caller already has it (hashing a
    large student's weights twice is wasted start-up time).
    """
    path = Path(path)
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read calibrator: {exc}") from None
    if raw.get("version") != ARTIFACT_VERSION:
        raise ValueError(
            f"{path}: calibrator version {raw.get('version')!r}, expected {ARTIFACT_VERSION}"
        )
    try:
        calibration = Calibration(**raw)
    except TypeError as exc:
        raise ValueError(f"{path}: malformed calibrator: {exc}") from None
    if not calibration.temperature > 0:
        raise ValueError(f"{path}: temperature must be positive")
    if calibration.feature == "text":
        model = calibration.logistic or {}
        sizes = {len(model.get(k) or ()) for k in ("coef", "mean", "scale")}
        if sizes != {len(TEXT_FEATURES)} or not isinstance(model.get("intercept"), float | int):
            raise ValueError(f"{path}: a text calibrator needs {len(TEXT_FEATURES)} coefficients")
    if student_dir is not None:
        actual = fingerprint or student_fingerprint(student_dir)
        if actual != calibration.student_fingerprint:
            raise ValueError(
                f"{path} was fitted for student {calibration.student_fingerprint[:19]}…, but "
                f"{student_dir} is {actual[:19]}…; recalibrate with `distillgate calibrate`"
            )
    return calibration
