#!/usr/bin/env bash
# Regenerate etl_gate/pb/ (generated protobuf + gRPC code) from proto/.
# Never edit etl_gate/pb/ by hand; tests/unit/test_generated.py checks it is current.
# Usage: scripts/gen_proto.sh [OUT_DIR]   (default: the repo root)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-.}"
python3 -m grpc_tools.protoc -Iproto --python_out="$out" --pyi_out="$out" \
  --grpc_python_out="$out" $(find proto -name '*.proto' | sort)
# Packages for the generated tree.
find "$out/etl_gate/pb" -type d -exec sh -c 'f="$1/__init__.py"; [ -f "$f" ] || : > "$f"' _ {} \;
