"""The web service mounted under /iris/, as a path-prefix proxy would serve it (for test_ui_browser.py):
``uvicorn --app-dir tests --factory ui_prefix_app:create``. Starlette runs no lifespan for a mounted app, so the
model is loaded here first."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Mount

from irisserve.core.predictor import Predictor
from irisserve.core.settings import get_settings
from irisserve.web.app import create_app

PREFIX = "/iris"


def create() -> Starlette:
    settings = get_settings()
    predictor = Predictor(settings.model_dir, backend=settings.backend)
    predictor.load()
    return Starlette(routes=[Mount(PREFIX, app=create_app(settings, predictor))])
