"""What the lifespan owns and hands to requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.settings import Settings


@dataclass
class AppState:
    settings: Settings
    client: AsyncMongoClient[Document]
    db: AsyncDatabase[Document]
    # Filled by feature modules (analytics snapshot, model registry, ...) during startup.
    extras: dict[str, Any] = field(default_factory=dict)
