"""The Open Inference Protocol (KServe V2 / Triton / MLServer REST): its objects and its tensor codec."""

PREFIX = "/v2"


def is_v2_path(path: str) -> bool:
    """The protocol's paths answer every error as ``{"error": ...}``, the shape its clients decode."""
    return path == PREFIX or path.startswith(PREFIX + "/")
