"""Seed-compatible entry point: ``python benchmark.py --cloud-run-url URL --cloud-function-url URL
--num-requests 20 --output benchmark_results.json``, or ``python benchmark.py --local``."""

import sys

from irisserve_bench.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="benchmark.py"))
