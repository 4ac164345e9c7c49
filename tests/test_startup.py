"""Start-up holds the cycle collector (imports build ~70,000 long-lived objects and no garbage worth collecting) and
gives it back, with that heap frozen, once the process serves: every way a process starts ends with the collector on.
Each case runs in its own interpreter, since collector state is per process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support import FUNCTION_SOURCE, REPO_ROOT

REPORT = "import gc; print(gc.isenabled(), gc.get_freeze_count() > 0)"


def run_python(code: str, *, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_mark_ready_ends_the_hold_and_freezes(tmp_path: Path) -> None:
    report = run_python(
        f"""
        import gc
        from irisserve.core.startup import mark_ready, pause_collection
        pause_collection()
        assert not gc.isenabled()
        mark_ready()
        {REPORT}
        """,
        cwd=tmp_path,
    )
    assert report == "True True"


def test_irisserve_serve_collects_again_once_the_app_is_ready(model_dir: Path) -> None:
    """`irisserve serve` (one worker) up to its first answer: the server itself is replaced by the app's lifespan."""
    report = run_python(
        f"""
        import asyncio, sys
        import irisserve.ops.server as server

        def lifespan_only(config):
            config.load()
            async def start():
                sent = []
                messages = [{{"type": "lifespan.startup"}}]
                async def receive():
                    return messages.pop() if messages else await asyncio.Event().wait()
                async def send(message):
                    sent.append(message["type"])
                task = asyncio.create_task(config.loaded_app({{"type": "lifespan", "asgi": {{"version": "3.0"}}, "state": {{}}}}, receive, send))
                while not sent:
                    await asyncio.sleep(0.01)
                assert sent == ["lifespan.startup.complete"], sent
                task.cancel()
            asyncio.run(start())
            {REPORT}

        server.serve = lifespan_only
        from irisserve.tools.cli import main
        sys.argv = ["irisserve", "serve", "--model-dir", {str(model_dir)!r}, "--port", "1"]
        main()
        """,
        cwd=REPO_ROOT,
    )
    assert report == "True True"


@pytest.mark.parametrize("load", ["lazy", "import"])
def test_the_function_collects_again_before_gunicorn_forks(model_dir: Path, load: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "IRISSERVE_MODEL_DIR": str(model_dir), "IRISSERVE_FUNCTION_LOAD": load}
    report = run_python(
        f"""
        import sys
        sys.path.insert(0, {str(FUNCTION_SOURCE.parent)!r})
        import main
        {REPORT}
        """,
        cwd=REPO_ROOT,
        env=env,
    )
    assert report == "True True"
