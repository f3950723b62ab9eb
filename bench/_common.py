"""Shared by the benchmarks: machine description, /proc readings, RESULTS.md,
the generated data's options."""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from etl_gate.gen import GenSpec

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
POM = ROOT / "scripts" / "kafka" / "pom.xml"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def cpu_model() -> str:
    m = re.search(r"^model name\s*:\s*(.+)$", _read("/proc/cpuinfo"), re.M)
    return m.group(1).strip() if m else platform.processor() or "unknown"


def ram_gib() -> float:
    m = re.search(r"^MemTotal:\s+(\d+) kB", _read("/proc/meminfo"), re.M)
    return int(m.group(1)) / 2**20 if m else 0.0


def kafka_version() -> str:
    m = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", _read(POM))
    return m.group(1) if m else "unknown"


def command_line() -> str:
    env = [f"PYTHONPATH={os.environ['PYTHONPATH']}"] if os.environ.get("PYTHONPATH") else []
    return " ".join([*env, shlex.join([Path(sys.executable).name, *sys.argv])])


def machine_lines() -> list[str]:
    """Markdown bullet lines describing where the figures come from."""
    import confluent_kafka
    import orjson

    load = " ".join(_read("/proc/loadavg").split()[:3])
    ck = confluent_kafka.version()
    ck_version = ck[0] if isinstance(ck, tuple) else ck
    return [
        f"- machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
        f"{cpu_model()}, {ram_gib():.1f} GiB RAM; load average at start {load}",
        f"- software: Python {platform.python_version()}, confluent-kafka "
        f"{ck_version} (librdkafka {confluent_kafka.libversion()[0]}), "
        f"orjson {orjson.__version__}",
    ]


def _git(*args: str) -> str:
    import subprocess

    try:
        r = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                           timeout=10)
        return r.stdout.strip() if r.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def code_dir() -> Path:
    """Where the ``etl_gate`` this process imports lives."""
    import etl_gate

    return Path(etl_gate.__file__).resolve().parent


def code_state() -> str:
    """Which etl_gate code is measured: the working tree (commit, modified files) or elsewhere."""
    head = _git("rev-parse", "--short", "HEAD") or "unknown"
    pkg = code_dir()
    if pkg != ROOT / "etl_gate":
        return f"etl_gate imported from {pkg} (repository HEAD {head})"
    changed = _git("status", "--porcelain", "--", "etl_gate").splitlines()
    return (f"etl_gate from the working tree at {head}, "
            + (f"{len(changed)} file(s) modified or new" if changed else "unmodified"))


def code_fingerprint() -> tuple[tuple[str, int, int], ...]:
    """(path, mtime, size) of every source file of the imported etl_gate: compare two
    of them to tell whether the code changed while a benchmark ran."""
    out = []
    for f in sorted(code_dir().rglob("*.py")):
        st = f.stat()
        out.append((str(f), st.st_mtime_ns, st.st_size))
    return tuple(out)


def compile_package() -> str:
    """Write the etl_gate package's bytecode (.pyc), as ``pip install`` does for
    a regular install, so a timed CLI run measures the CLI, not Python
    compiling it: an editable install with PYTHONDONTWRITEBYTECODE=1 (set on
    these machines) compiles every module from source at each start (+0.1-0.15
    s of CPU for ``etl-gate ctl``). Returns a line for the results."""
    import compileall

    import etl_gate

    compileall.compile_dir(Path(etl_gate.__file__).parent, quiet=1)
    return ("the etl_gate package's bytecode was compiled before the run (compileall), as pip does "
            "on a regular install")


def section_header(title: str) -> list[str]:
    return [f"## {time.strftime('%Y-%m-%d %H:%M %Z')}: {title}", ""]


def append_results(lines: list[str]) -> None:
    """Append one markdown section to bench/RESULTS.md (created with a title)."""
    new = not RESULTS.exists() or RESULTS.stat().st_size == 0
    with RESULTS.open("a") as f:
        if new:
            f.write("# etl-gate benchmark results\n\nAppended by `bench/throughput.py` and "
                    "`bench/core_bench.py`; see bench/README.md.\n")
        f.write("\n" + "\n".join(lines).rstrip() + "\n")


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths, strict=True)))

    return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *map(fmt, rows)])


# -- /proc readings (Linux) -------------------------------------------------

def proc_cpu_seconds(pid: int) -> float | None:
    """user+sys CPU seconds of one live process (not its children)."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def proc_peak_rss_mib(pid: int) -> float | None:
    """Peak resident set size (VmHWM) of a live process."""
    m = re.search(r"^VmHWM:\s+(\d+) kB", _read(f"/proc/{pid}/status"), re.M)
    return int(m.group(1)) / 1024 if m else None


def proc_cmdline(pid: int) -> str:
    return _read(f"/proc/{pid}/cmdline").replace("\0", " ")


def children(pid: int) -> list[int]:
    """Live children of one process (from /proc/PID/task/*/children)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        out += [int(c) for c in _read(f"/proc/{pid}/task/{tid}/children").split()]
    return out


def descendants(root: int) -> list[int]:
    """Live descendants of ``root``."""
    out: list[int] = []
    todo = [root]
    while todo:
        kids = children(todo.pop())
        out += kids
        todo += kids
    return out


class MachineCpu:
    """Whole-machine CPU use between two readings of /proc/stat."""

    def __init__(self) -> None:
        self.start = self._read()

    @staticmethod
    def _read() -> list[int]:
        line = _read("/proc/stat").splitlines()[0]
        return [int(x) for x in line.split()[1:]]

    def _delta(self) -> list[int]:
        # user nice system idle iowait irq softirq steal (guest time is inside user)
        d = [b - a for a, b in zip(self.start, self._read(), strict=False)]
        return (d + [0] * 8)[:8]

    def busy_and_steal(self) -> tuple[float, float]:
        """(share of CPU time busy, share stolen by the hypervisor), 0..1."""
        d = self._delta()
        total = sum(d) or 1
        return (total - d[3] - d[4] - d[7]) / total, d[7] / total

    def busy_seconds(self) -> float:
        """CPU seconds spent busy, all CPUs together."""
        d = self._delta()
        return (sum(d) - d[3] - d[4] - d[7]) / CLK_TCK


# -- the broker -------------------------------------------------------------

KAFKA_SH = Path(__file__).resolve().parent.parent / "scripts" / "kafka.sh"


def free_port(taken: set[int]) -> int:
    """A free loopback port not in ``taken`` (and now in it)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in taken:
            taken.add(port)
            return port


class Broker:
    """Our own broker via scripts/kafka.sh (free ports, temp data dir), or a given one."""

    def __init__(self, bootstrap: str | None = None) -> None:
        self.bootstrap = bootstrap or ""
        self.own = not bootstrap
        self.env: dict[str, str] | None = None
        self.pid: int | None = None

    def start(self) -> None:
        if not self.own:
            return
        taken: set[int] = set()
        port = free_port(taken)
        self.env = {**os.environ, "KAFKA_DATA_DIR": tempfile.mkdtemp(prefix="etl-gate-bench-kafka-"),
                    "KAFKA_PORT": str(port), "KAFKA_CONTROLLER_PORT": str(free_port(taken))}
        r = subprocess.run(["bash", str(KAFKA_SH), "start"], env=self.env, capture_output=True,
                           text=True, timeout=600)
        if r.returncode != 0:
            self.wipe()
            raise RuntimeError(f"scripts/kafka.sh start failed:\n{r.stdout}\n{r.stderr}")
        self.bootstrap = f"127.0.0.1:{port}"
        self.pid = int(Path(self.env["KAFKA_DATA_DIR"], "kafka.pid").read_text())

    def wipe(self) -> None:
        if self.env is not None:
            subprocess.run(["bash", str(KAFKA_SH), "wipe"], env=self.env, capture_output=True,
                           timeout=120)
            self.env = None

    def cpu_seconds(self) -> float | None:
        return proc_cpu_seconds(self.pid) if self.pid else None

    def jit_cpu_seconds(self) -> float | None:
        """CPU seconds the broker's JIT compiler threads (C1, C2) used so far: a
        fresh JVM compiles its hot paths in its first minute under load
        (measured: C2 10.7 CPU-s of a broker's first 67 s beside a 20k
        events/s stream), which competes with whatever is measured then."""
        if not self.pid:
            return None
        total = 0
        for task in Path(f"/proc/{self.pid}/task").glob("*"):
            if _read(task / "comm").startswith(("C1_Compiler", "C2_Compiler")):
                fields = _read(task / "stat").rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
        return total / CLK_TCK

    def threads(self) -> str:
        """The request threads scripts/kafka.sh gave our broker (sized to the
        machine), for the results; "" for a given broker."""
        if self.env is None:
            return ""
        props = Path(self.env["KAFKA_DATA_DIR"], "server.properties")
        found = dict(line.split("=", 1) for line in _read(props).splitlines() if "=" in line)
        return (f"{found.get('num.network.threads', '3')} network + "
                f"{found.get('num.io.threads', '8')} I/O threads")


# -- generated data: the same mix in every harness ------------------------------


def add_data_args(p: argparse.ArgumentParser) -> None:
    """The generated events' shape (etl_gate.gen), shared by the harnesses."""
    p.add_argument("--size", type=int, default=350, help="approximate bytes per event")
    p.add_argument("--unregistered", type=float, default=0.10, help="share of traffic")
    p.add_argument("--sampled", type=float, default=0.10, help="share of rules sampled")
    p.add_argument("--malformed", type=float, default=0.005, help="share of traffic")
    p.add_argument("--seed", type=int, default=1)


def gen_spec(args: argparse.Namespace, count: int, **extra: Any) -> GenSpec:
    return GenSpec(count=count, size=args.size, unregistered_share=args.unregistered,
                   sampled_share=args.sampled, malformed_share=args.malformed, seed=args.seed,
                   **extra)

