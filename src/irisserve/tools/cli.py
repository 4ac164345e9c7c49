"""The ``irisserve`` command: train, package, serve, bundle-function, example, bench."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Any

from irisserve.core.errors import IrisServeError

# irisserve-bench (bench/ in the repository) is a distribution of its own, so the serving wheel carries no benchmark.
BENCH_MISSING = "irisserve bench: the benchmark is a separate distribution; install it with `pip install -e bench` (make venv does)."
FORCE_HELP = (
    "Replace an earlier artifact of the same name and version at --out (only the files irisserve wrote there); "
    "without it an existing artifact is never overwritten."
)
PACKAGE_DESCRIPTION = (
    "Check, convert to ONNX and write a fitted estimator as a served artifact. Packaging loads the model file: a "
    "joblib/pickle file runs whatever code it holds when loaded, so give it only files you trust (yours, or from "
    "a source you trust). A .skops file is the safe format: it is loaded with skops.io and an explicit list of "
    "trusted scikit-learn and NumPy types, and refused if it holds anything else."
)


def _train(args: argparse.Namespace) -> int:
    from irisserve.tools.training import train

    out = args.out or Path("models") / "iris" / args.version
    manifest = train(out, version=args.version, force=args.force, random_state=args.random_state)
    metrics = manifest["metrics"]
    check = manifest["onnx"]["export_check"]
    print(
        f"Wrote {out}: holdout accuracy {metrics['holdout_accuracy']:.3f}, "
        f"{metrics['cv_folds']}-fold CV {metrics['cv_accuracy_mean']:.3f} ± {metrics['cv_accuracy_std']:.3f}; "
        f"ONNX checked on {check['rows_checked']} points: {check['label_mismatches']} label mismatches, "
        f"max probability difference {check['max_probability_difference']:.1e}"
    )
    return 0


def _package(args: argparse.Namespace) -> int:
    from irisserve.tools.packaging import default_name, package_files

    started = time.perf_counter()
    name = default_name(args.model) if args.name is None else args.name  # --name "" is refused, not replaced
    out = args.out or Path("models") / name / args.version
    manifest = package_files(
        args.model, args.data, target_column=args.target, name=name, version=args.version, out_dir=out,
        eval_path=args.eval_data, force=args.force,
    )
    print(_package_summary(manifest, out, time.perf_counter() - started))
    return 0


def _package_summary(manifest: dict[str, Any], out: Path, seconds: float) -> str:
    """One line: what was packaged, how closely the ONNX export matched, the metrics, and the time taken."""
    check = manifest["onnx"]["export_check"]
    if manifest["task"] == "classification":
        outputs = f"classes {', '.join(manifest['targets'])}"
        agreement = (
            f"{check['label_mismatches']} label mismatches, max probability difference "
            f"{check['max_probability_difference']:.1e} (allowed {check['tolerance']:.0e})"
        )
    else:
        outputs = f"target {manifest['targets'][0]}"
        agreement = f"max abs difference {check['max_abs_difference']:.1e} (allowed {check['tolerance']:.1e})"
    metrics = ", ".join(f"{key} {value:.3f}" for key, value in manifest["metrics"].items()) or "no metrics (no --target)"
    if manifest.get("metrics_source"):
        metrics += f" ({manifest['metrics_source']})"
    return (
        f"Wrote {out}: {manifest['name']} {manifest['version']}, {manifest['task']}, "
        f"{len(manifest['features'])} features, {outputs}; ONNX checked on {check['rows_checked']} points: "
        f"{agreement}; {metrics}; {seconds:.1f} s"
    )


def _serve(args: argparse.Namespace) -> int:
    from irisserve.core.startup import pause_collection, resume_collection

    pause_collection()  # until the app is ready to serve (its lifespan), or the supervisor has checked the model
    import uvicorn

    from irisserve.core.settings import ENV_PREFIX, get_settings
    from irisserve.ops.lifecycle import exit_cleanly_on_signals, multiprocess_metrics_dir
    from irisserve.ops.repository_sync import repository_state_dir
    from irisserve.ops.request_log import configure_logging
    from irisserve.ops.server import BoundedHttpToolsProtocol, serve

    # Through the environment, so every uvicorn worker process sees them too (PORT is the variable that wins).
    if args.models and args.model_dir:
        raise IrisServeError("Give --models (a repository of <name>/<version>/ artifacts) or --model-dir (one artifact), not both.")
    given = {
        f"{ENV_PREFIX}MODEL_DIR": args.model_dir and str(args.model_dir.resolve()),
        f"{ENV_PREFIX}MODEL_REPOSITORY": args.models and str(args.models.resolve()),
        f"{ENV_PREFIX}DEFAULT_MODEL": args.default_model,
        "PORT": args.port and str(args.port),
        f"{ENV_PREFIX}HOST": args.host,
    }
    os.environ.update({name: value for name, value in given.items() if value})
    get_settings.cache_clear()
    settings = get_settings()
    if args.model_dir:  # the flag wins over a repository named in the environment
        settings = settings.model_copy(update={"model_repository": None})
        os.environ.pop(f"{ENV_PREFIX}MODEL_REPOSITORY", None)
    # A missing, malformed or mismatched artifact (the manifest against the model itself), or a repository whose
    # default model has no version that loads: one line and exit 2, before any worker starts or the port is bound.
    # One worker serves from this process, so it keeps the model this loads instead of loading it a second time.
    one_worker = settings.workers == 1
    if one_worker:
        from irisserve.web.app import create_app  # first: the start-up marks follow the phases' order
    predictor = check_default_model(settings, keep=one_worker)
    if not one_worker:
        resume_collection()  # this process supervises; each worker starts (and ends its start-up) on its own
    exit_cleanly_on_signals()
    configure_logging(settings)  # the supervisor's own lines (several workers) in the same format as the app's
    config = uvicorn.Config(
        "irisserve.web.app:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        log_config=None,
        access_log=False,  # the app logs each request itself, in Cloud Logging's fields
        ws="none",  # no WebSocket route: not importing a WebSocket library saves 15-20 ms of cold start
        http=BoundedHttpToolsProtocol,
        # Cloud Run sends SIGKILL 10 s after SIGTERM: the drain (IRISSERVE_DRAIN_SECONDS, default 3), up to 1 s of
        # grace for connections already accepted, then at most IRISSERVE_FINISH_SECONDS (5) for requests in flight.
        timeout_graceful_shutdown=settings.finish_seconds,
    )
    with multiprocess_metrics_dir(settings.workers), repository_state_dir():
        get_settings.cache_clear()  # a worker in this process (one worker) reads the state folder's setting
        if one_worker:
            config.app = create_app(get_settings(), predictor)
        serve(config)
    return 0


def check_default_model(settings: Any, *, keep: bool = False) -> Any:
    """Load the model /predict will answer with, as a worker would: its newest version that loads. ``keep``: return it
    loaded and warmed up (for a server in this process); else let it go and return None."""
    from irisserve.core.registry import latest, registry_from_settings, version_key

    registry = registry_from_settings(settings)
    folders = registry.discover()[registry.default_name]
    refusals = []
    for version in sorted(folders, key=version_key, reverse=True):
        try:
            predictor = registry.predictor_for(folders[version])
            if keep:
                predictor.load()
                return predictor
            predictor.check()
            return None
        except IrisServeError as exc:
            refusals.append(exc)
    if len(folders) == 1:
        raise refusals[0]
    raise IrisServeError(f"No version of the default model {registry.default_name!r} loads; the latest ({latest(folders)}): {refusals[0]}")


def _bundle_function(args: argparse.Namespace) -> int:
    from irisserve.core.settings import get_settings
    from irisserve.tools.bundle import build_bundle

    info = build_bundle(args.out, args.model_dir or get_settings().model_dir, force=args.force)
    print(f"Wrote {info.path}: {len(info.files)} files, {info.size_mb:.2f} MB (model {info.model_version})")
    return 0


def _example(args: argparse.Namespace) -> int:
    """Print the artifact's first example row as one line of JSON: a request body its /predict accepts."""
    import json

    from irisserve.core.artifact import read_manifest
    from irisserve.core.spec import ModelSpec

    print(json.dumps(ModelSpec.from_manifest(read_manifest(args.model_dir)).example))
    return 0


def _bench(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("irisserve_bench") is None:
        print(BENCH_MISSING, file=sys.stderr)
        return 2
    from irisserve_bench.cli import main as bench_main

    return bench_main(args.args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="irisserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="Train the model and write the artifact folder.")
    train.add_argument("--out", type=Path, help="Artifact folder (default models/iris/<version>).")
    train.add_argument("--version", default="1.0.0", help="Model version recorded in the manifest.")
    train.add_argument("--force", action="store_true", help=FORCE_HELP)
    train.add_argument(
        "--random-state", type=int, default=42, help="The forest's seed (another seed: another model of the same data, a new version)."
    )
    train.set_defaults(handler=_train)

    package = commands.add_parser(
        "package",
        help="Package a fitted scikit-learn classifier or regressor (joblib or skops file + CSV) as an artifact folder.",
        description=PACKAGE_DESCRIPTION,
    )
    package.add_argument(
        "--model", type=Path, required=True,
        help="The fitted estimator: a .skops file (skops.io.dump; loaded with scikit-learn's types only), or a "
        "joblib/pickle file (joblib.dump), which is LOADED AS PYTHON CODE: only a file you trust.",
    )
    package.add_argument("--data", type=Path, required=True, help="CSV of training (or sample) rows; header = feature names.")
    package.add_argument("--target", help="The CSV's target column: scored for metrics, not a feature.")
    package.add_argument(
        "--eval-data", type=Path, metavar="CSV",
        help="A held-out CSV with the same columns and the target: the metrics are computed on it (without it, on --data, "
        "labelled in-sample).",
    )
    package.add_argument("--name", help="Model name, [a-z0-9][a-z0-9_.-]* (default: the model file's name).")
    package.add_argument("--version", default="1.0.0", help="Model version recorded in the manifest.")
    package.add_argument("--out", type=Path, help="Artifact folder (default models/<name>/<version>).")
    package.add_argument("--force", action="store_true", help=FORCE_HELP)
    package.set_defaults(handler=_package)

    serve = commands.add_parser("serve", help="Serve the web API with uvicorn (settings from IRISSERVE_* and PORT).")
    serve.add_argument("--model-dir", type=Path, help="Artifact to serve (default IRISSERVE_MODEL_DIR, else models/iris/1.0.0).")
    serve.add_argument(
        "--models", type=Path, metavar="DIR",
        help="A model repository: serve every DIR/<name>/<version>/ artifact (default IRISSERVE_MODEL_REPOSITORY).",
    )
    serve.add_argument(
        "--default-model", metavar="NAME",
        help="With --models: the model /predict, /model/* and the page answer for (needed when DIR holds several).",
    )
    serve.add_argument("--port", type=int, help="TCP port (default PORT or IRISSERVE_PORT, else 8000).")
    serve.add_argument("--host", help="Interface to bind (default IRISSERVE_HOST, else 127.0.0.1; 0.0.0.0 for every one).")
    serve.set_defaults(handler=_serve)

    bundle = commands.add_parser(
        "bundle-function", help="Write the Cloud Function source folder for `gcloud functions deploy --source`."
    )
    bundle.add_argument("--out", type=Path, default=Path("build/cloud_function"), help="Bundle folder: new or empty.")
    bundle.add_argument("--model-dir", type=Path, help="Artifact to ship (default IRISSERVE_MODEL_DIR).")
    bundle.add_argument(
        "--force", action="store_true",
        help="Replace an earlier bundle at --out (only the files its bundle.json lists); never a folder holding other files.",
    )
    bundle.set_defaults(handler=_bundle_function)

    example = commands.add_parser(
        "example", help="Print the artifact's example row as JSON (a /predict body; the deploy scripts' smoke test)."
    )
    example.add_argument("--model-dir", type=Path, required=True, help="The artifact folder (with manifest.json).")
    example.set_defaults(handler=_example)

    # The benchmark parses its own options: prefix_chars that match nothing hand every argument through.
    bench = commands.add_parser(
        "bench", help="Benchmark the web service against the function (--local, or their URLs; needs irisserve-bench); --help for options.",
        add_help=False, prefix_chars="\0",
    )
    bench.add_argument("args", nargs="*")
    bench.set_defaults(handler=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except IrisServeError as exc:
        print(f"irisserve: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
