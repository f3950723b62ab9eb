"""Compiling and loading the C fast path (``_fastpath.c``) on first use.

Why at run time and not in ``pip install``: the module must link to the same
librdkafka as confluent-kafka (the wheel bundles its own, in
``confluent_kafka.libs``), so that the worker's consumer and its producer run
one client library; that library is only known once confluent-kafka is
installed. The build needs a C compiler, Python's headers and librdkafka's
headers (``scripts/native.sh install``: Debian's gcc and librdkafka-dev; the
API is the same across librdkafka versions). It takes about two seconds and is
cached under a digest of the sources, the library and the Python version, so
workers after the first load it at once; ``python -m etl_gate.fastpath``
makes it ahead of time (the Dockerfile does; ``ETL_GATE_CACHE`` picks the
directory).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
SOURCES = (HERE / "_fastpath.c", HERE / "gate_json.h")
INSTALL_HINT = "scripts/native.sh install (apt-get install -y gcc librdkafka-dev)"


class FastpathUnavailable(RuntimeError):
    """The C fast path cannot be built or loaded here."""


def cache_dir() -> Path:
    env = os.environ.get("ETL_GATE_CACHE")
    if env:
        return Path(env) / "fastpath"
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return home / "etl-gate" / "fastpath"


def bundled_librdkafka() -> Path | None:
    """The librdkafka confluent-kafka's wheel bundles, if it bundles one."""
    spec = importlib.util.find_spec("confluent_kafka")
    if spec is None or spec.origin is None:
        return None
    libs = Path(spec.origin).parent.parent / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka*.so*")) if libs.is_dir() else []
    return found[0] if found else None


def _target() -> tuple[Path, list[str]]:
    lib = bundled_librdkafka()
    link = ([f"-L{lib.parent}", f"-l:{lib.name}", f"-Wl,-rpath,{lib.parent}"] if lib
            else ["-lrdkafka"])
    h = hashlib.sha256()
    for src in SOURCES:
        h.update(src.read_bytes())
    # Not sys.executable: `python` and `python3.11` (a Docker image's build step
    # and its entry point) are one interpreter and must share the build.
    h.update(f"{lib}|{sys.version}".encode())
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    return cache_dir() / f"_fastpath-{h.hexdigest()[:16]}{suffix}", link


def build() -> Path:
    """The compiled module's path, building it if this combination of sources,
    library and interpreter has none yet."""
    out, link = _target()
    if out.exists():
        return out
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise FastpathUnavailable(f"no C compiler: {INSTALL_HINT}")
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").exists():
        raise FastpathUnavailable(f"no Python.h in {include} (install the python3-dev package)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        out = Path(tempfile.gettempdir()) / "etl-gate-fastpath" / out.name
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            return out
    # Two workers building at once: each writes its own file, then renames.
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    cmd = [cc, "-O2", "-Wall", "-shared", "-fPIC", f"-I{include}", f"-I{HERE}",
           "-o", str(tmp), str(SOURCES[0]), *link]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise FastpathUnavailable(f"_fastpath.c did not build ({INSTALL_HINT}):\n{r.stderr[-3000:]}")
    tmp.replace(out)
    return out


_module: ModuleType | None = None


def load() -> ModuleType:
    """The fast path module, built first if needed."""
    global _module
    if _module is None:
        path = build()
        name = "etl_gate.fastpath._fastpath"
        loader = importlib.machinery.ExtensionFileLoader(name, str(path))
        spec = importlib.util.spec_from_file_location(name, path, loader=loader)
        if spec is None:
            raise FastpathUnavailable(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
        sys.modules[name] = module
        _module = module
    return _module

