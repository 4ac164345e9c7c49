"""Every served model at its own URL: ``/models/{name}/...`` answers with the version serving that name,
``/models/{name}/versions/{version}/...`` with that version. The seed routes (``/predict``, ``/model/*``) stay
the default model's.

Declared once here, generically (a row is an object of the model's features); each model's own schema, with its
features, is ``GET /models/{name}/openapi.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from irisserve.core.registry import ModelRegistry, ServedModel
from irisserve.core.schemas import ModelInfo, ModelInputs, StatsResponse, model_info_body, model_inputs_body
from irisserve.core.settings import Settings
from irisserve.web.handlers import predict_handler
from irisserve.web.routing import ServedRoute, served_by

BY_NAME = "/models/{model_name}"
BY_VERSION = "/models/{model_name}/versions/{model_version}"
ROW_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "For /predict, one row: each of the model's features by name. For /predict/batch, "
                    '{"instances": [row, ...]}. The model\'s own schema: GET /models/{model_name}/openapi.json.',
                }
            }
        },
    }
}


class ServedModelSummary(BaseModel):
    name: str
    serving_version: str = Field(..., description="The version /models/{name}/... answers with.")
    versions: list[str] = Field(..., description="Every loaded version, oldest first; each at /models/{name}/versions/{version}/.")
    default: bool = Field(..., description="Whether /predict, /model/* and the page answer for this model.")


class ServedModels(BaseModel):
    default_model: str
    models: list[ServedModelSummary]


def models_body(registry: ModelRegistry) -> dict[str, Any]:
    snapshot = registry.snapshot
    models = [
        {
            "name": name,
            "serving_version": snapshot.serving[name].version,
            "versions": list(versions),
            "default": name == registry.default_name,
        }
        for name, versions in sorted(snapshot.loaded.items())
    ]
    return {"default_model": registry.default_name, "models": models}


def build_models_router(
    registry: ModelRegistry,
    settings: Settings,
    *,
    model_openapi: Callable[[ServedModel], dict[str, Any]],
    stats_body: Callable[[ServedModel], dict[str, Any]],
) -> APIRouter:
    router = APIRouter(tags=["models"], route_class=ServedRoute)
    errors: dict[int | str, dict[str, Any]] = {code: {"description": "See detail."} for code in (401, 404, 503)}

    @router.get("/models", response_model=ServedModels)
    async def read_models() -> Any:
        """Every loaded model: its versions, the one answering its name, and which model is the default."""
        return models_body(registry)

    @router.get(f"{BY_NAME}/openapi.json", responses=errors)
    async def read_model_openapi(model_name: str) -> Any:
        """The OpenAPI document of the version serving the model: its rows' features, its answers."""
        return model_openapi(registry.resolve(model_name))

    for base in (BY_NAME, BY_VERSION):
        which = "the version serving the model" if base == BY_NAME else "this version of the model"
        for suffix, batch in (("/predict", False), ("/predict/batch", True)):
            what = "one row" if not batch else 'many rows, {"instances": [...]}'
            router.add_api_route(
                base + suffix, served_by(predict_handler(registry, batch=batch, read_timeout=settings.read_timeout_seconds))(
                    _declared(base)
                ),
                methods=["POST"], tags=["models"], responses={**errors, 400: {}, 413: {}, 422: {}}, openapi_extra=ROW_BODY,
                summary=f"Predict {what} with {which}", name=f"predict{'_batch' if batch else ''}{'_version' if base == BY_VERSION else ''}",
            )
        for suffix, model, answer in (
            ("/info", ModelInfo, lambda record: model_info_body(record.predictor)),
            ("/inputs", ModelInputs, lambda record: model_inputs_body(record.spec)),
            ("/stats", StatsResponse, stats_body),
        ):
            router.add_api_route(
                base + suffix, _answering(registry, base, answer), methods=["GET"], response_model=model, responses=errors,
                summary=f"{suffix[1:].capitalize()} of {which}",
                name=f"read_model_{suffix[1:]}{'_version' if base == BY_VERSION else ''}",
            )
    return router


def _declared(base: str) -> Callable[..., Any]:
    """A route's documented signature (its path parameters); the served_by handler answers it."""
    if base == BY_NAME:

        async def by_name(model_name: str) -> None: ...

        return by_name

    async def by_version(model_name: str, model_version: str) -> None: ...

    return by_version


def _answering(registry: ModelRegistry, base: str, answer: Callable[[ServedModel], Any]) -> Callable[..., Any]:
    if base == BY_NAME:

        async def by_name(model_name: str) -> Any:
            return answer(registry.resolve(model_name))

        return by_name

    async def by_version(model_name: str, model_version: str) -> Any:
        return answer(registry.resolve(model_name, model_version))

    return by_version
