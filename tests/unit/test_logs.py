"""Logging setup: text or JSON lines, chosen by config, overridden by the env."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from etl_gate.config import ConfigError, parse_config
from etl_gate.logs import setup_logging


@pytest.fixture(autouse=True)
def _restore_root_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("ETL_GATE_LOG_JSON", raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def log_lines(log_format: str | None, level: str = "INFO") -> list[str]:
    out = io.StringIO()
    setup_logging(level, log_format, stream=out)
    log = logging.getLogger("etl_gate.test")
    log.info("hello %s", "world")
    log.debug("not shown at INFO")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("it failed")
    return out.getvalue().splitlines()


def test_json_lines_are_json_with_level_logger_and_msg() -> None:
    lines = [ln for ln in log_lines("json") if ln.startswith("{")]
    records = [orjson.loads(ln) for ln in lines]
    assert len(records) == 2  # one object per line, the traceback inside it
    first, second = records
    assert first["level"] == "INFO" and first["logger"] == "etl_gate.test"
    assert first["msg"] == "hello world"
    assert isinstance(first["ts"], float) and isinstance(first["pid"], int)
    assert second["level"] == "ERROR" and "RuntimeError: boom" in second["exc"]
    assert len(log_lines("json")) == 2


def test_text_is_the_default() -> None:
    for fmt in (None, "text"):
        lines = log_lines(fmt)
        assert " INFO etl_gate.test[" in lines[0] and lines[0].endswith(": hello world")
        assert not lines[0].startswith("{")


@pytest.mark.parametrize("env,fmt,expect_json", [
    ("1", "text", True), ("true", None, True), ("0", "json", False), ("false", "json", False),
    ("", "json", True),
])
def test_env_overrides_the_format(monkeypatch: pytest.MonkeyPatch, env: str, fmt: str | None,
                                  expect_json: bool) -> None:
    monkeypatch.setenv("ETL_GATE_LOG_JSON", env)
    assert log_lines(fmt)[0].startswith("{") is expect_json


def test_worker_style_call_with_the_level_only_still_works() -> None:
    # etl_gate/kafka/worker.py calls setup_logging(cfg.log_level).
    out = io.StringIO()
    setup_logging("WARNING", stream=out)
    logging.getLogger("x").warning("w")
    assert out.getvalue().rstrip().endswith(": w")


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log_format"):
        setup_logging("INFO", "xml")


def test_config_log_format() -> None:
    assert parse_config({}).log_format == "text"
    assert parse_config({"log_format": "json"}).log_format == "json"
    with pytest.raises(ConfigError, match=r"^log_format: one of text, json, got 'xml'$"):
        parse_config({"log_format": "xml"})
    with pytest.raises(ConfigError, match="log_format"):
        parse_config({"log_format": 1})
