"""The benchmark tool: the web service and the Cloud Function compared, locally or at their URLs."""

from irisserve.bench.cli import main
from irisserve.bench.errors import BenchError

__all__ = ["BenchError", "main"]
