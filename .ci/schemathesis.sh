#!/usr/bin/env bash
# Schema fuzzing: schemathesis (pinned, in a venv of its own) against a live
# service's /openapi.json, every /v1 operation, with the checks
# not_a_server_error, status_code_conformance, content_type_conformance and
# response_schema_conformance. Upstreams are a plain HTTP server that
# answers 404 to everything, so uploads end in documented errors quickly.
# Needs the debug binary that `cargo test` builds. Bounded in examples and
# time; a fixed seed keeps CI repeatable (set SCHEMATHESIS_SEED to explore).
# One worker: with two, CPython 3.11's AST constructor, which hypothesis
# calls to describe lambdas, fails now and then across threads
# ("AST constructor recursion depth mismatch"), an error of the tool.
set -euo pipefail

version=4.32.5
target="${CARGO_TARGET_DIR:-target}"
venv="$HOME/.cache/vectorize-schemathesis-$version"
if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$version"
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
upstream_port=$(free_port)
service_port=$(free_port)
mkdir "$work/empty"
python3 -m http.server "$upstream_port" --bind 127.0.0.1 --directory "$work/empty" >/dev/null 2>&1 &
pids+=($!)
upstream="http://127.0.0.1:$upstream_port"
VECTORIZE_ADDR="127.0.0.1:$service_port" VECTORIZE_DATA_DIR="$work/data" VECTORIZE_DB=mem:// \
  HF_ENDPOINT="$upstream" GITHUB_API_URL="$upstream" GITHUB_SERVER_URL="$upstream" RUST_LOG=warn \
  "$target/debug/vectorize" serve &
pids+=($!)

python3 - "$service_port" <<'PY'
import sys, time, urllib.request
deadline = time.time() + 60
while time.time() < deadline:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=2)
        sys.exit(0)
    except Exception:
        time.sleep(0.1)
sys.exit("the service did not become healthy")
PY

cd "$work"  # schemathesis keeps its state in the current folder
timeout 900 "$venv/bin/st" run "http://127.0.0.1:$service_port/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples 25 --request-timeout 10 --workers 1 --no-color \
  --seed "${SCHEMATHESIS_SEED:-20261127}"
