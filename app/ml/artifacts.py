"""On-disk layout of model artifacts, shared by the training module (writer) and the
registry (reader):

    ARTIFACTS_DIR/<model>/<version>/model.joblib      the whole scikit-learn Pipeline
    ARTIFACTS_DIR/<model>/<version>/model_card.json   what it is and how well it does
    ARTIFACTS_DIR/<model>/<version>/report.html       the evaluation report
    ARTIFACTS_DIR/<model>/ACTIVE                      the version the service serves

Versions are UTC timestamps (`20250101T120000Z`), so that name order is age order. A version
directory appears in one `rename`, and `ACTIVE` is replaced in one `os.replace`, so readers
never see half of either.
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import UTC, datetime
from pathlib import Path

MODEL_NAMES = ("revenue", "hit", "engagement")
# Models an artifacts directory may lack (trained before they existed): their absence is no
# reason for `/ready` to fail; their endpoint answers 503 until a version is trained.
OPTIONAL_MODELS = frozenset({"engagement"})
# What each model must be (the registry refuses a card that says otherwise).
MODEL_TASKS = {"revenue": "regression", "hit": "classification", "engagement": "multi_regression"}
MODEL_FILE = "model.joblib"
CARD_FILE = "model_card.json"
REPORT_FILE = "report.html"
ACTIVE_FILE = "ACTIVE"
VERSION_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z(?:-[0-9]+)?$")


def model_dir(root: Path, name: str) -> Path:
    return root / name


def version_dir(root: Path, name: str, version: str) -> Path:
    if not VERSION_RE.match(version):
        raise ValueError(f"not a model version: {version!r}")
    return root / name / version


def new_version(root: Path, name: str, now: datetime | None = None) -> str:
    """A fresh, sortable version id (a suffix only if two trainings share a second)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    version, n = stamp, 1
    while (root / name / version).exists():
        version = f"{stamp}-{n}"
        n += 1
    return version


def list_versions(root: Path, name: str) -> list[str]:
    """Complete versions (those with both files), oldest first."""
    base = root / name
    if not base.is_dir():
        return []
    found = [
        p.name
        for p in base.iterdir()
        if p.is_dir()
        and VERSION_RE.match(p.name)
        and (p / MODEL_FILE).is_file()
        and (p / CARD_FILE).is_file()
    ]
    return sorted(found, key=_version_key)


def _version_key(version: str) -> tuple[str, int]:
    stamp, _, suffix = version.partition("-")
    return stamp, int(suffix or 0)


def read_active(root: Path, name: str) -> str | None:
    """The version `ACTIVE` names; without the file, the newest complete version."""
    pointer = root / name / ACTIVE_FILE
    try:
        version = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        versions = list_versions(root, name)
        return versions[-1] if versions else None
    return version or None


def write_active(root: Path, name: str, version: str) -> None:
    version_dir(root, name, version)  # validates the name
    pointer = root / name / ACTIVE_FILE
    tmp = pointer.with_name(f".{ACTIVE_FILE}.{os.getpid()}.tmp")
    tmp.write_text(version + "\n", encoding="utf-8")
    os.replace(tmp, pointer)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
