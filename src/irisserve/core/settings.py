"""Process settings, read once from environment variables (prefix ``IRISSERVE_``; ``PORT`` as Cloud Run sets it)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "IRISSERVE_"
DEFAULT_MODEL_DIR = Path("models/iris/1.0.0")
MAX_BATCH_SIZE_CEILING = 100_000


class Settings(BaseSettings):
    """Everything a front door needs to know; documented in the README's settings table."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", protected_namespaces=())

    model_dir: Path = Field(DEFAULT_MODEL_DIR, description="Artifact folder holding manifest.json.")
    model_repository: Path | None = Field(
        None, description="A folder of <name>/<version>/ artifacts to serve, every one (instead of model_dir alone)."
    )
    default_model: str | None = Field(
        None, description="With a repository: the model /predict, /model/* and the page answer for (needed with several)."
    )
    state_dir: Path | None = Field(
        None, description="Set by `irisserve serve`: the folder its workers share the repository's state through."
    )
    switch_wait_seconds: float = Field(
        10.0, gt=0, le=300, description="How long a load or unload call waits for every worker to serve the change."
    )
    backend: Literal["onnx", "sklearn"] = Field("onnx", description="Inference backend.")
    host: str = Field("127.0.0.1", description="Interface to bind; the container sets 0.0.0.0.")
    port: int = Field(
        8000,
        ge=1,
        le=65535,
        validation_alias=AliasChoices("PORT", f"{ENV_PREFIX}PORT"),
        description="TCP port; Cloud Run's PORT wins.",
    )
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes.")
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_format: Literal["auto", "json", "text"] = Field(
        "auto", description="auto: JSON lines unless stderr is a terminal."
    )
    max_batch_size: int = Field(1000, ge=1, le=MAX_BATCH_SIZE_CEILING, description="Rows per batch request.")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body accepted (413 past it).")
    api_key: str | None = Field(None, description="When set, requests need 'Authorization: Bearer KEY' or 'X-API-Key'.")
    public_paths: list[str] = Field(
        default_factory=lambda: ["/health", "/v2/health/live", "/v2/health/ready", "/metrics"],
        description="Paths that stay open without the API key (probes, scraping).",
    )
    cors_origins: list[str] = Field(default_factory=list, description="Allowed CORS origins; ['*'] for any.")
    drain_seconds: float = Field(
        3.0,
        ge=0,
        le=30,
        description=(
            "After SIGTERM, keep answering (readiness 503, every answer with Connection: close) this long before "
            "closing the listener: 3 s, then at most 5 s to finish in-flight requests, fits Cloud Run's 10 s."
        ),
    )
    finish_seconds: int = Field(
        5,
        ge=0,
        le=30,
        description="After the drain, how long requests in flight may take before the process exits.",
    )
    read_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        description="How long a request's head may take to arrive (the connection closes past it) and its body (408).",
    )
    metrics_max_age_seconds: float = Field(
        1.0,
        ge=0,
        le=60,
        description="GET /metrics renders its text at most this often and serves it as rendered in between (0: every scrape).",
    )
    max_header_bytes: int = Field(
        65_536, ge=1024, description="Largest request line plus headers accepted (431 past it), checked as they arrive."
    )
    function_load: Literal["lazy", "import"] = Field(
        "lazy", description="Cloud Function: load the model on first request (lazy) or at import time."
    )
    ui: bool = Field(True, description="Serve the model page: GET / (web), a GET preferring text/html (function).")
    drift_psi_threshold: float = Field(
        0.2, gt=0, description="A feature whose PSI against training exceeds this is reported as drifted."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _lowercase_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, parsed on first use."""
    return Settings()
