"""How a load, an unload or a rescan reaches every worker process of one server.

``irisserve serve`` gives its workers one state folder (IRISSERVE_STATE_DIR, a fresh temporary folder). The
repository's ``RepositoryState`` (what is unloaded, what is pinned, a generation) is a JSON file there, changed
under a file lock. Each worker follows it: every ``POLL_SECONDS`` it looks at the file's generation and, when it
grew, reconciles its registry with the disk and the state (``core/registry.py``), then writes the generation it
now serves to its own acknowledgement file. A load call answered by one worker builds and warms the version
first (so a broken one is refused before anything changes), writes the state, serves it, and waits until every
live worker acknowledged it (at most ``IRISSERVE_SWITCH_WAIT_SECONDS``), so when the call returns every worker
serves the new version. SIGHUP (to the supervisor or a worker) adds one to the generation: every worker rescans.

Without a state folder (an app built in-process, the Cloud Function) the state lives in the registry alone.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from irisserve.core.registry import ModelRegistry, RepositoryState

logger = logging.getLogger("irisserve")

STATE_DIR_ENV = "IRISSERVE_STATE_DIR"
STATE_FILE = "repository-state.json"
LOCK_FILE = "repository-state.lock"
ACK_PREFIX = "worker-"
POLL_SECONDS = 0.1


def read_state(state_dir: Path) -> RepositoryState:
    try:
        return RepositoryState.from_json(json.loads((state_dir / STATE_FILE).read_text()))
    except (OSError, ValueError):
        return RepositoryState()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Written whole to a temporary name, then renamed: a reader sees the old file or the new one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(data))
    temporary.replace(path)


@contextmanager
def locked_state(state_dir: Path) -> Iterator[RepositoryState]:
    """The current state, under the state folder's lock (one writer at a time across workers)."""
    with open(state_dir / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield read_state(state_dir)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def request_rescan(state_dir: Path) -> int:
    """One more generation, nothing else changed: every worker following the folder rescans the repository."""
    with locked_state(state_dir) as state:
        state.generation += 1
        _write_json(state_dir / STATE_FILE, state.to_json())
    return state.generation


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RepositorySync:
    """One worker's side: apply load/unload calls, follow the state file, acknowledge what it serves."""

    def __init__(self, registry: ModelRegistry, state_dir: Path | None, *, workers: int = 1, wait_seconds: float = 10.0) -> None:
        self.registry = registry
        self.state_dir = state_dir
        self.workers = workers
        self.wait_seconds = wait_seconds
        self.applied = -1

    # --- calls (run on a worker thread: loading a model takes a while) --------------------------------

    def start(self) -> list[str]:
        """Serve the repository as the state folder says (this worker just started); the problems found."""
        state = read_state(self.state_dir) if self.state_dir is not None else None
        problems = self.registry.reconcile(state)
        self._acknowledge(self.registry.state.generation)
        return problems

    def load(self, name: str, version: str | None) -> dict[str, Any]:
        """Build and warm the version, then serve it everywhere; raises (nothing changed) when it cannot load."""
        with self._writing() as adopt:
            state, record = self.registry.plan_load(name, version)
            adopt(state)
            self.registry.reconcile(state, ready={(record.name, record.version): record})
        return self._answer(name, state, record.version)

    def unload(self, name: str, version: str | None) -> dict[str, Any]:
        with self._writing() as adopt:
            state = self.registry.plan_unload(name, version)
            adopt(state)
            self.registry.reconcile(state)
        return self._answer(name, state, None)

    def rescan(self) -> None:
        if self.state_dir is not None:
            request_rescan(self.state_dir)  # this worker's poll applies it, as every other worker's does
        else:
            self.registry.reconcile()

    @contextmanager
    def _writing(self) -> Iterator[Callable[[RepositoryState], None]]:
        """Plan on the newest state (another worker may have changed it), and write the planned state."""
        if self.state_dir is None:
            yield lambda state: None
            return
        with locked_state(self.state_dir) as newest:
            if newest.generation > self.registry.state.generation:
                self.registry.state = newest
            yield lambda state: _write_json(self.state_dir / STATE_FILE, state.to_json())  # type: ignore[operator]

    def _answer(self, name: str, state: RepositoryState, version: str | None) -> dict[str, Any]:
        self.applied = state.generation
        self._acknowledge(state.generation)
        switched = self._wait_for_workers(state.generation)
        serving = self.registry.snapshot.serving.get(name)
        return {
            "name": name,
            "version": version,
            "serving_version": serving.version if serving is not None else None,
            "workers_switched": switched,
            "workers": self.workers,
        }

    # --- following the state file -----------------------------------------------------------------------

    async def follow(self) -> None:
        """Poll the state file; reconcile when its generation grew. Runs for the worker's life."""
        assert self.state_dir is not None
        path = self.state_dir / STATE_FILE
        seen = -1
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                stamp = path.stat().st_mtime_ns
            except OSError:
                continue
            if stamp == seen:
                continue
            seen = stamp
            state = read_state(self.state_dir)
            if state.generation > self.applied:
                try:
                    await asyncio.to_thread(self._apply, state)
                except Exception:  # a broken repository must not stop the worker from following it
                    logger.exception("Applying the model repository's state (generation %d) failed", state.generation)

    def _apply(self, state: RepositoryState) -> None:
        if state.generation <= self.applied:
            return
        self.registry.reconcile(state)
        self.applied = state.generation
        self._acknowledge(state.generation)

    def _acknowledge(self, generation: int) -> None:
        self.applied = max(self.applied, generation)
        if self.state_dir is not None:
            _write_json(self.state_dir / f"{ACK_PREFIX}{os.getpid()}.json", {"generation": self.applied})

    def _wait_for_workers(self, generation: int) -> int:
        """How many live workers serve ``generation``, waiting (bounded) until all ``workers`` do."""
        if self.state_dir is None:
            return 1
        deadline = time.monotonic() + self.wait_seconds
        while True:
            done = 0
            for ack in self.state_dir.glob(f"{ACK_PREFIX}*.json"):
                with suppress(OSError, ValueError):
                    pid = int(ack.stem.removeprefix(ACK_PREFIX))
                    if _alive(pid) and json.loads(ack.read_text())["generation"] >= generation:
                        done += 1
            if done >= self.workers or time.monotonic() >= deadline:
                if done < self.workers:
                    logger.warning("Only %d of %d workers serve generation %d after %.1f s", done, self.workers, generation, self.wait_seconds)
                return done
            time.sleep(POLL_SECONDS / 2)


def rescan_on_sighup(sync: RepositorySync) -> Callable[[], None]:
    """SIGHUP rescans the repository: through the state file (every worker follows it), or, without one, here on a
    worker thread. Returns the undo."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only (test clients)
        return lambda: None
    previous = signal.getsignal(signal.SIGHUP)
    loop = asyncio.get_running_loop()

    def rescan() -> None:
        if sync.state_dir is not None:
            logger.info("SIGHUP: rescanning the model repository (generation %d)", request_rescan(sync.state_dir))
        else:
            logger.info("SIGHUP: rescanning the model repository")
            sync.registry.reconcile()

    def handler(sig: int, frame: Any) -> None:
        # On a worker thread: the state file's lock may be held by a load in progress, and the event loop must not wait.
        loop.call_soon_threadsafe(lambda: loop.run_in_executor(None, rescan))

    signal.signal(signal.SIGHUP, handler)

    def restore() -> None:
        if signal.getsignal(signal.SIGHUP) is handler:
            signal.signal(signal.SIGHUP, previous)

    return restore


@contextmanager
def repository_state_dir() -> Iterator[Path]:
    """A fresh state folder for one server's workers (IRISSERVE_STATE_DIR), removed when the server stops: what a
    load or unload changed lasts as long as the server, as in Triton; the repository on disk is never written."""
    folder = Path(tempfile.mkdtemp(prefix="irisserve-state-"))
    os.environ[STATE_DIR_ENV] = str(folder)
    try:
        yield folder
    finally:
        os.environ.pop(STATE_DIR_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)
