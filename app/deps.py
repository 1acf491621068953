"""Typed dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.settings import Settings
from app.state import AppState


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.app_state
    return state


async def get_db(state: Annotated[AppState, Depends(get_state)]) -> AsyncDatabase[Document]:
    return state.db


async def get_app_settings(state: Annotated[AppState, Depends(get_state)]) -> Settings:
    return state.settings


State = Annotated[AppState, Depends(get_state)]
Db = Annotated[AsyncDatabase[Document], Depends(get_db)]
AppSettings = Annotated[Settings, Depends(get_app_settings)]
