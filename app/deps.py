"""Typed dependencies shared by the routers: `State`, `Db`, `AppSettings`, `Engine`,
`Registry`, `PredictionLog`. Every one is async and reads the request directly: a plain `def`
dependency would cost a hop through the thread pool on every request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.ml.registry import ModelRegistry
from app.services.analytics.engine import AnalyticsEngine
from app.services.prediction_log import PredictionLogWriter
from app.settings import Settings
from app.state import AppState


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.app_state
    return state


async def get_db(request: Request) -> AsyncDatabase[Document]:
    return (await get_state(request)).db


async def get_app_settings(request: Request) -> Settings:
    return (await get_state(request)).settings


async def get_engine(request: Request) -> AnalyticsEngine:
    return (await get_state(request)).analytics


async def get_registry(request: Request) -> ModelRegistry:
    return (await get_state(request)).registry


async def get_prediction_log(request: Request) -> PredictionLogWriter:
    return (await get_state(request)).prediction_log


State = Annotated[AppState, Depends(get_state)]
Db = Annotated[AsyncDatabase[Document], Depends(get_db)]
AppSettings = Annotated[Settings, Depends(get_app_settings)]
Engine = Annotated[AnalyticsEngine, Depends(get_engine)]
Registry = Annotated[ModelRegistry, Depends(get_registry)]
PredictionLog = Annotated[PredictionLogWriter, Depends(get_prediction_log)]
