"""irisserve: one ONNX model artifact, served as a FastAPI web service and as a Cloud Function."""

__version__ = "1.0.0"
