"""The evaluation report training writes beside each model version
(`ARTIFACTS_DIR/<model>/<version>/report.html`, see training/report.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.errors import NotFoundError
from app.ml import artifacts


def report_path(root: Path, name: str, version: str) -> Path:
    """Where the report of `name`/`version` lives; 404 for an unknown model or a string that
    is no version (so nothing but a version directory under the model's can be named)."""
    if name not in artifacts.MODEL_NAMES:
        raise NotFoundError(f"no model {name!r}; models: {', '.join(artifacts.MODEL_NAMES)}")
    if not artifacts.VERSION_RE.match(version):
        raise NotFoundError(f"no version {version!r} of model {name!r}")
    return artifacts.version_dir(root, name, version) / artifacts.REPORT_FILE


async def model_report(root: Path, name: str, version: str) -> bytes:
    """The report's bytes (read off the event loop: a report holds a few hundred KB of PNG)."""
    path = report_path(root, name, version)
    try:
        return await asyncio.to_thread(path.read_bytes)
    except (FileNotFoundError, NotADirectoryError):
        if not path.parent.is_dir():
            raise NotFoundError(f"no version {version!r} of model {name!r}") from None
        raise NotFoundError(
            f"version {version!r} of model {name!r} has no report (trained with --no-report?)"
        ) from None
