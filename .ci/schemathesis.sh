#!/usr/bin/env bash
# Schema fuzzing: schemathesis (pinned, in a venv of its own) against a live
# service's /openapi.json, every /v1 operation, with every check it has
# (positive_data_acceptance and negative_data_rejection included: what the
# schema allows must be accepted, what it refuses must be refused) and all
# phases: coverage, fuzzing, and the stateful phase, which follows the
# OpenAPI links from an upload's 201 to the task's routes (the examples
# phase has none to run). Settings are in .ci/schemathesis.toml, each with
# why: the check left out for the one operation whose rule no schema can
# say (the `.zip` part of a local upload), the check left out for the
# reads of a task (a cancel keeps the task), the repository of the fake hub
# that some Hugging Face uploads name. Any failure or error fails the run.
#
# Upstreams: Hugging Face is the fake hub of the tests (examples/fake_hub.rs)
# serving acme/tiny-bert at several revisions, so uploads of it are accepted
# and run to DONE (their event streams end); GitHub is a plain HTTP server
# that answers 404 to everything, so GitHub uploads end in documented 404s.
# No upstream answers 5xx, so no 5xx is expected from the service.
#
# GET /v1/upload/events, a stream that never ends by design, is read for a
# few events or seconds each time (its settings in the config), and its
# events are checked like any others.
#
# Builds the debug binaries it runs (`cargo build --bin vectorize --example
# fake_hub`, as .ci/interop.sh does). Bounded in examples and time; a fixed
# seed keeps CI repeatable (set SCHEMATHESIS_SEED to explore). One worker:
# with two, CPython 3.11's AST constructor, which hypothesis calls to
# describe lambdas, fails now and then across threads ("AST constructor
# recursion depth mismatch"), an error of the tool.
set -euo pipefail
cd "$(dirname "$0")/.."

version=4.32.5
config="$PWD/.ci/schemathesis.toml"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vectorize-target}"
target="$CARGO_TARGET_DIR"
venv="$HOME/.cache/vectorize-schemathesis-$version"
if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$version"
fi

# Temporary folder, child processes, wait_until, free_port.
source .ci/lib.sh

cargo build --locked --quiet --bin vectorize --example fake_hub

# The revisions must be those of [dictionaries.hub-revisions] in the config.
"$target/debug/examples/fake_hub" --repo acme/tiny-bert \
  --revision main --revision v1.0 --revision v2.0 --revision v3.0 \
  --revision v4.0 --revision v5.0 --revision v6.0 --revision v7.0 >"$work/hub.url" &
pids+=($!)
wait_until 30 test -s "$work/hub.url"
hub=$(head -n1 "$work/hub.url")

github_port=$(free_port)
service_port=$(free_port)
mkdir "$work/empty"
python3 -m http.server "$github_port" --bind 127.0.0.1 --directory "$work/empty" >/dev/null 2>&1 &
pids+=($!)
github="http://127.0.0.1:$github_port"
VECTORIZE_ADDR="127.0.0.1:$service_port" VECTORIZE_DATA_DIR="$work/data" VECTORIZE_DB=mem:// \
  HF_ENDPOINT="$hub" GITHUB_API_URL="$github" GITHUB_SERVER_URL="$github" RUST_LOG=error \
  "$target/debug/vectorize" serve &
pids+=($!)
wait_until 60 python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$service_port/health', timeout=2)"

cd "$work"  # schemathesis keeps its state in the current folder
timeout 900 "$venv/bin/st" --config-file "$config" run "http://127.0.0.1:$service_port/openapi.json" \
  --max-examples 25 --request-timeout 10 --workers 1 --no-color \
  --seed "${SCHEMATHESIS_SEED:-20261127}"
