"""Cloud Functions (gen2) entry point ``predict``: a thin shell over ``irisserve.function.handler``, served as ASGI by
the gunicorn and uvicorn workers that ``irisserve.function.server`` tunes.

Locally:  functions-framework --source cloud_function/main.py --target predict --port 8080
Deploy:   irisserve bundle-function --out build/cloud_function, then
          gcloud functions deploy iris-predict --gen2 --runtime python311 --source build/cloud_function \
              --entry-point predict --trigger-http
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import functions_framework.aio
from starlette.requests import Request

HERE = Path(__file__).resolve().parent

# In a bundle the package and the artifact sit beside this file. functions-framework appends this folder to
# sys.path, after site-packages, so put it first: the bundled code must win over any installed irisserve.
# In the repository neither exists and the installed package and models/iris/1.0.0 (from the cwd) serve.
if (HERE / "irisserve" / "__init__.py").is_file():
    sys.path.insert(0, str(HERE))
if (HERE / "model" / "manifest.json").is_file():
    os.environ.setdefault("IRISSERVE_MODEL_DIR", str(HERE / "model"))

from irisserve.core.startup import pause_collection, resume_collection  # noqa: E402

pause_collection()  # until the end of this file (import mode: until the model is loaded)

# sys.path and the model dir must be set before these imports. install() comes before the handler's import, so
# its logging is in place when import mode loads the model; it tunes the gunicorn functions-framework starts next
# (drain on SIGTERM, header limit and deadline: docs/function.md, "Shutdown, slow clients and logs").
from irisserve.function.server import answered_by, install  # noqa: E402

install()

from irisserve.function.handler import create_function_app, load_model  # noqa: E402

__all__ = ["load_model", "predict"]

function_app = create_function_app()
resume_collection()  # in gunicorn's arbiter, before it forks the worker


@functions_framework.aio.http
@answered_by(function_app)  # so the server may hand each request to function_app without the framework's wrapper
async def predict(request: Request) -> object:
    """POST a row (or ``{"instances": [...]}``) to predict; GET for health and the model.

    The returned ASGI app answers the request itself (functions-framework calls what a function returns with
    the request's scope, receive and send, as it does a Starlette Response)."""
    return function_app
