"""FastAPI dependencies shared by the routers.

``async def`` on purpose: FastAPI runs a plain ``def`` dependency on its thread pool, a thread hop per
request that cost /predict and /health about a third of their throughput."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from irisserve.core.predictor import Predictor
from irisserve.core.settings import Settings


async def get_predictor(request: Request) -> Predictor:
    return request.app.state.predictor


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


PredictorDep = Annotated[Predictor, Depends(get_predictor)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
