"""The decision core imports no I/O, Kafka, logging, metrics or concurrency
library (STYLE: "the decision is a pure function"); orjson and mmh3 only."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import mmh3
import orjson

import etl_gate

CORE = Path(etl_gate.__file__).parent / "core"

FORBIDDEN = (
    "confluent_kafka", "grpc", "google.protobuf", "prometheus_client", "pyarrow", "uvloop",
    "socket", "ssl", "select", "selectors", "http", "urllib", "asyncio", "concurrent",
    "threading", "multiprocessing", "subprocess", "signal", "logging", "tomllib", "sqlite3",
    "tempfile", "shutil",
    "etl_gate.kafka", "etl_gate.config", "etl_gate.replay", "etl_gate.rules_source",
    "etl_gate.logs", "etl_gate.cli", "etl_gate.gen",
)

# Without site (-S) the interpreter starts with a bare sys.modules, so whatever
# the import adds is the module's own doing, not a .pth file's.
PROBE = """
import json, sys
before = set(sys.modules)
import {module}
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def imported_by(module: str) -> set[str]:
    paths = [str(Path(etl_gate.__file__).parents[1]),
             str(Path(orjson.__file__).parents[1]), str(Path(mmh3.__file__).parent),
             sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    code = f"import sys; sys.path[:0] = {paths!r}\n" + PROBE.format(module=module)
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    return set(json.loads(proc.stdout))


def offenders(modules: set[str]) -> list[str]:
    return sorted(m for m in modules for f in FORBIDDEN if m == f or m.startswith(f + "."))


def test_core_imports_no_io_library() -> None:
    added = imported_by("etl_gate.core")
    assert {"etl_gate.core.decide", "etl_gate.core.rules", "orjson", "mmh3"} <= added
    assert offenders(added) == []


def test_the_probe_can_see_an_io_import() -> None:
    # The rules file source is an adapter: it logs. The same probe must notice.
    assert "logging" in offenders(imported_by("etl_gate.rules_source"))


ALLOWED_IMPORTS = {"__future__", "collections", "dataclasses", "decimal", "functools", "math",
                   "operator", "re", "typing", "mmh3", "orjson", "msgspec"}


def test_core_source_imports_only_allowed_modules() -> None:
    files = sorted(CORE.glob("*.py"))
    assert len(files) >= 5
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: another core module
                    continue
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in ALLOWED_IMPORTS, f"{path.name} imports {name}"
