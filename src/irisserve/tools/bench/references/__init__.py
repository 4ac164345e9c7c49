"""Fixed reference programs the benchmark measures beside irisserve, with the same installed libraries:
what a bare stack does for the same job, so irisserve's figures are read as ratios to them.

Each is started as ``uvicorn irisserve.tools.bench.references.<module>:app`` (or functions-framework for
the function), with ``IRISSERVE_MODEL_DIR`` naming the artifact. They are deliberately minimal and are
not used by the service."""
