"""Seed-compatible entry point: ``uvicorn main:app --port 8000``."""

from irisserve.web.app import create_app

app = create_app()
