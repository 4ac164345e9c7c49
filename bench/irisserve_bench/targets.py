"""The targets, read from docs/benchmark.md, and their PASS/MISS verdicts, computed from a run's figures.

The bounds are data: the table between ``<!-- bench:targets -->`` and ``<!-- /bench:targets -->`` in the
document, one row per target (the figure's name from ``figures.FIGURES``, what it is, how it is measured, the
bound as ``≥ 1.2 ×`` or ``≤ 20 µs``). A run is judged against that table, and ``--update-docs`` rewrites the
section between ``<!-- bench:verdicts -->`` and ``<!-- /bench:verdicts -->`` with the verdicts."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irisserve_bench.errors import BenchError
from irisserve_bench.figures import FIGURES, model_blocks, model_label
from irisserve_bench.report import verdict_table

# The repository's document (the bench is installed editable from bench/); --targets names another.
DEFAULT_DOC = Path(__file__).resolve().parents[2] / "docs" / "benchmark.md"
TARGETS_SECTION = "targets"
VERDICTS_SECTION = "verdicts"
PASS, MISS = "PASS", "MISS"
COMPARE: dict[str, Callable[[float, float], bool]] = {"≤": operator.le, "≥": operator.ge}
BOUND = re.compile(r"^(?P<sign>[≤≥])\s*(?P<bound>\d[\d,]*(?:\.\d+)?)\s*(?P<unit>\S*)$")
COLUMNS = ("Figure", "Target", "Bound")
ERROR_CHARS = 160


@dataclass(frozen=True)
class Target:
    """One row of the targets table."""

    figure: str
    name: str
    sign: str
    bound: float
    unit: str

    def judge(self, figure: dict[str, Any], model: str) -> dict[str, Any]:
        """PASS when the figure was measured, none of its requests failed and it meets the bound; MISS otherwise."""
        measured = figure["value"]
        finite = isinstance(measured, (int, float)) and math.isfinite(measured)
        reference = figure["reference"]
        if figure["errors"]:
            error = figure["first_error"]
            shown = error if len(error) <= ERROR_CHARS else error[: ERROR_CHARS - 1] + "…"
            reference = f"{figure['errors']:,} failed requests ({shown}); {reference}"
        met = not figure["errors"] and finite and COMPARE[self.sign](measured, self.bound)
        return {
            "figure": self.figure, "target": self.name, "model": model, "measured": measured if finite else None,
            "bound": self.bound, "unit": self.unit, "sign": self.sign, "reference": reference,
            "errors": figure["errors"], "verdict": PASS if met else MISS,
        }


def _markers(section: str) -> tuple[str, str]:
    return f"<!-- bench:{section} -->", f"<!-- /bench:{section} -->"


def _section(text: str, section: str, path: Path) -> tuple[int, int]:
    """Where the text between the section's two markers starts and ends."""
    begin, end = _markers(section)
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise BenchError(f"{path}: no {section} section (a line {begin}, then a line {end}).")
    return start + len(begin), stop


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def read_targets(path: Path = DEFAULT_DOC) -> list[Target]:
    """The targets table of ``path``, checked: known figure names, bounds of the form ``≤ number unit``."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise BenchError(f"cannot read the targets from {path} ({exc.strerror}); give the document with --targets.") from None
    start, stop = _section(text, TARGETS_SECTION, path)
    rows = [_cells(line) for line in text[start:stop].splitlines() if line.strip().startswith("|")]
    if not rows or any(column not in rows[0] for column in COLUMNS):
        raise BenchError(f"{path}: the targets table needs the columns {', '.join(COLUMNS)}.")
    index = {column: rows[0].index(column) for column in COLUMNS}
    targets = []
    for row in rows[2:]:  # after the header and its |---| line
        figure, name, bound = (row[index[column]] for column in COLUMNS)
        figure = figure.strip("`")
        if figure not in FIGURES:
            raise BenchError(f"{path}: target {name!r} names the figure {figure!r}; the figures are {', '.join(FIGURES)}.")
        match = BOUND.match(bound)
        if match is None:
            raise BenchError(f"{path}: target {name!r} has the bound {bound!r}; write it as '≤ 20 µs' or '≥ 1.2 ×'.")
        targets.append(Target(figure, name, match["sign"], float(match["bound"].replace(",", "")), match["unit"]))
    if not targets:
        raise BenchError(f"{path}: the targets table has no rows.")
    return targets


def judge(results: dict[str, Any], targets: list[Target]) -> list[dict[str, Any]]:
    """A verdict for each target whose figure each model block has (``block["figures"]``), in the table's order."""
    return [
        target.judge(block["figures"][target.figure], model_label(block))
        for block in model_blocks(results)
        for target in targets
        if target.figure in block.get("figures", {})
    ]


def update_doc(path: Path, results: dict[str, Any], verdicts: list[dict[str, Any]]) -> None:
    """Rewrite the verdicts section of ``path`` from this run; the rest of the document is left as it is."""
    text = path.read_text()
    start, stop = _section(text, VERDICTS_SECTION, path)
    m, plan = results["machine"], results["plan"]
    passed = sum(v["verdict"] == PASS for v in verdicts)
    summary = (
        f"Written by `irisserve bench --local --update-docs` from the run started {results.get('started_at', '?')}: "
        f"{m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}, load average {m['load_average_at_start'][0]:.1f} "
        f"at the start; medians of {plan['repeats']} repeats, "
        f"{plan['concurrency']} clients, batches of {plan['batch_rows']:,} rows, a {plan['memory_requests']:,}-request soak. "
        f"{passed} of {len(verdicts)} targets met."
    )
    section = "\n".join(["", summary, "", *verdict_table(verdicts), ""])
    path.write_text(text[:start] + section + text[stop:])
