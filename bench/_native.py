"""bench/native_gate.c's build and rules file: the "native" mode of throughput.py.

native_gate is the gate's data path in C (see its header comment): what a native
rewrite could reach on the same broker. It reads the allow-list as a small TSV
written here from the same rules document the gate gets, so both decide from
one source; the rules it cannot follow (monitor-mode apps, rate caps, dotted
sample keys) are refused here rather than decided differently.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from _rules import compile_rules

from etl_gate.core.decide import rate_text

# The librdkafka confluent-kafka bundles: native_gate links to it, so that it differs
# from the Python modes only in being C (as the gate's own fast path does).
from etl_gate.fastpath.build import bundled_librdkafka

SOURCE = Path(__file__).resolve().with_name("native_gate.c")
# The JSON reader it shares with the gate's own C fast path.
HEADER_DIR = Path(__file__).resolve().parent.parent / "etl_gate" / "fastpath"
BUILD_DIR = Path(tempfile.gettempdir()) / "etl-gate-native"
INSTALL_HINT = "scripts/native.sh install (apt-get install -y gcc librdkafka-dev)"


class NativeUnavailable(RuntimeError):
    """No C compiler or no librdkafka headers: the mode cannot run here."""


def build(dest_dir: Path = BUILD_DIR) -> Path:
    """Compiles native_gate.c into dest_dir, linked to confluent-kafka's librdkafka
    when the wheel bundles one, else to the system's (Debian's librdkafka-dev).
    Named by a digest of the source and the library, so that checkouts or
    environments that differ never share a binary; reused when it exists."""
    lib = bundled_librdkafka()
    link = ([f"-L{lib.parent}", f"-l:{lib.name}", f"-Wl,-rpath,{lib.parent}"] if lib
            else ["-lrdkafka"])
    digest = hashlib.sha256(SOURCE.read_bytes() + (HEADER_DIR / "gate_json.h").read_bytes()
                            + str(lib).encode()).hexdigest()[:12]
    out = dest_dir / f"native_gate-{digest}"
    if out.exists():
        return out
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise NativeUnavailable(f"no C compiler: {INSTALL_HINT}")
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}")  # two builds at once: each its own file
    r = subprocess.run([cc, "-O2", "-Wall", f"-I{HEADER_DIR}", "-o", str(tmp), str(SOURCE), *link],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise NativeUnavailable(f"native_gate.c did not build ({INSTALL_HINT}):\n"
                                f"{r.stderr[-2000:]}")
    tmp.replace(out)
    return out


def librdkafka_version(binary: Path) -> str:
    """The librdkafka version the binary runs with."""
    r = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=30)
    return r.stdout.strip()


def rules_tsv(rules: dict[str, Any]) -> str:
    """One line per rule: app, event, priority (-1 offline), sample threshold (-1: not
    sampled), the rule's sample key or "", the sample-rate header's text."""
    lines = []
    for (app, event), r in compile_rules(rules, "native_gate").items():
        key = r.keys[0] if r.keys else ""
        if any(c in x for x in (app, event, key) for c in "\t\n\0"):
            raise ValueError(f"native_gate: a tab, newline or NUL in rule {app}/{event}")
        thresh = -1 if r.threshold is None else r.threshold
        lines.append(f"{app}\t{event}\t{r.priority}\t{thresh}\t{key}\t{rate_text(r.rate).decode()}\n")
    return "".join(lines)
