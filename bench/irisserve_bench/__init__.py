"""The benchmark tool: the web service and the Cloud Function compared, locally or at their URLs."""

from irisserve_bench.cli import main
from irisserve_bench.errors import BenchError

__all__ = ["BenchError", "main"]
