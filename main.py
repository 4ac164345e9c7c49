"""Seed-compatible entry point: ``uvicorn main:app --port 8000``, for local use.

Production runs ``irisserve serve`` (the image, ``make run`` and every deploy path do): it checks the artifact
before any worker starts, bounds request headers (431) and the time they take to arrive, drains on SIGTERM
without resetting kept-alive clients, and adds up several workers' metrics. Plain uvicorn serves the same app
without those protections (it reads a header of any size and resets connections at SIGTERM): don't expose it.
"""

from irisserve.web.app import create_app

app = create_app()
