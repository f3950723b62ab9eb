"""The supervisor process: the composition root of ``etl-gate run``.

Wires the rules authority (state dir, rules file), the worker pool, the
status board and the gRPC control plane, then runs the loop that restarts
workers until SIGTERM/SIGINT, when it drains the workers and exits.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from .config import ConfigError, GateConfig
from .control.authority import RulesAuthority
from .control.model import PropagationTimeout
from .control.status import StatusBoard
from .control.store import RulesStore
from .core import RulesError
from .kafka.pool import WorkerPool
from .observe import Observer
from .rules_source import RulesFileWatcher

log = logging.getLogger(__name__)


def _watch_rules_file(watcher: RulesFileWatcher, every_s: float, stop: threading.Event) -> None:
    while not stop.wait(every_s):
        try:
            watcher.poll()
        except PropagationTimeout as e:
            log.warning("rules file: %s", e)
        except RulesError as e:
            log.error("rules file rejected: %s", e)


def run_gate(cfg: GateConfig, max_events: int = 0, report_every_s: float = 10.0) -> dict[str, int]:
    """Run until SIGTERM/SIGINT (or until ``max_events`` were consumed)."""
    authority = RulesAuthority(RulesStore(cfg.path(cfg.control.state_dir)),
                               cfg.control.push_timeout_s)
    had_state = authority.load_state()
    watcher = None
    path = cfg.rules_path()
    if path is not None:
        watcher = RulesFileWatcher(path, authority.push_snapshot, lambda: authority.version)
        try:
            watcher.poll(strict=True)  # before any worker starts: nothing to wait for
        except RulesError:
            if not had_state:
                raise  # no rules at all: refuse to start on a bad file
            log.exception("rules file rejected at start; keeping the persisted rules")
    if authority.version is None:
        log.warning("no rules yet: workers wait (events stay in Kafka) until rules are pushed")

    pool = WorkerPool(cfg, authority)
    board = StatusBoard(pool, authority, cfg.control.instance)
    observer = Observer(cfg, authority)
    observer.start(pool.telemetry, pool.broadcast)
    pool.extra_sync = lambda: [("surge", b)] if (b := observer.surge_blob()) else []
    if cfg.observe.metrics_listen:
        from prometheus_client import start_http_server

        host, _, port = cfg.observe.metrics_listen.rpartition(":")
        try:
            start_http_server(int(port), addr=host or "0.0.0.0",
                              registry=observer.metrics.registry)
        except (OSError, ValueError) as e:
            raise ConfigError(f"observe.metrics_listen {cfg.observe.metrics_listen!r}: "
                              f"cannot serve metrics there: {e}") from None
        log.info("metrics on http://%s/metrics", cfg.observe.metrics_listen)
    server = None
    if cfg.control.enabled:
        from .control.server import build_server

        server = build_server(cfg, authority, board,
                              stats_source=observer if cfg.observe.stats_enabled else None)
        server.start()
        log.info("control plane listening on %s", cfg.control.listen)

    stop_flag = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: draining workers", signum)
        stop_flag.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    pool.start()
    if watcher is not None:
        threading.Thread(target=_watch_rules_file, args=(watcher, cfg.rules_reload_s, stop_flag),
                         daemon=True, name="rules-file").start()
    last_report = time.monotonic()
    try:
        while not stop_flag.wait(0.2):
            pool.check()
            board.tick()
            observer.tick(pool.slots, lambda slot: slot.running)
            totals = pool.totals()
            if max_events and totals["events_in"] >= max_events:
                break
            if time.monotonic() - last_report >= report_every_s:
                last_report = time.monotonic()
                log.info("totals %s", totals)
    finally:
        stop_flag.set()
        pool.stop()
        board.tick()
        observer.stop()
        if server is not None:
            server.stop(grace=1.0)
    totals = pool.totals()
    log.info("stopped; totals %s", totals)
    return totals
