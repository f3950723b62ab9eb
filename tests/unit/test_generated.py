"""Generated protobuf code stays generated and fenced off (STYLE: "generated
code apart"): etl_gate/pb is exactly what scripts/gen_proto.sh makes from
proto/, and only the control plane's serde (messages) and server/client
(gRPC stubs) import it."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import etl_gate

PACKAGE = Path(etl_gate.__file__).resolve().parent
ROOT = PACKAGE.parent
PB = PACKAGE / "pb"

# Which modules may import which part of etl_gate.pb.
ALLOWED = {
    "etl_gate/control/serde.py": lambda name: name.endswith("_pb2"),
    "etl_gate/control/server.py": lambda name: name.endswith("_pb2_grpc"),
    "etl_gate/control/client.py": lambda name: name.endswith("_pb2_grpc"),
}


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def test_committed_code_is_what_the_script_generates(tmp_path: Path) -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "gen_proto.sh"), str(tmp_path)], check=True,
                   capture_output=True, timeout=120)
    fresh = files_under(tmp_path / "etl_gate" / "pb")
    committed = files_under(PB)
    assert sorted(fresh) == sorted(committed)
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"etl_gate/pb is out of date, run scripts/gen_proto.sh: {stale}"


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Absolute names of what ``path`` imports: ``import a.b`` gives a.b,
    ``from a import b`` gives a.b; relative imports resolved."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_only_serde_server_and_client_import_the_generated_code() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if PB in path.parents:
            continue
        rel = str(path.relative_to(ROOT))
        for name in imported_modules(path):
            if name == "etl_gate.pb" or name.startswith("etl_gate.pb."):
                allowed = ALLOWED.get(rel)
                if allowed is None or not allowed(name):
                    offenders.append(f"{rel}: {name}")
    assert offenders == []


def test_the_fence_check_sees_relative_and_absolute_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "etl_gate" / "control"
    pkg.mkdir(parents=True)
    probe = pkg / "probe.py"
    probe.write_text("from ..pb.control.v1 import control_pb2\nfrom etl_gate import pb\n"
                     "import etl_gate.pb.control.v1.control_pb2_grpc\n")
    assert imported_modules(probe, tmp_path) >= {"etl_gate.pb.control.v1.control_pb2", "etl_gate.pb",
                                                 "etl_gate.pb.control.v1.control_pb2_grpc"}
