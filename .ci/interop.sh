#!/usr/bin/env bash
# Interop with the real programs people use beside vectorize, each run for
# real against the real binary:
#   1. The fake Hugging Face Hub of the tests (examples/fake_hub.rs) serves
#      a small model; `vectorize serve` downloads two revisions of it, asked
#      by the command-line client (`vectorize upload huggingface --json`).
#   2. Python's huggingface_hub, safetensors and numpy (pinned, in a cached
#      venv) read the service's Hugging Face store with HF_HUB_OFFLINE=1 and
#      a dead HF_ENDPOINT; then huggingface_hub downloads the same revisions
#      from the fake hub into a cache of its own, and the two caches must
#      hold the same blobs/, snapshots/ and refs/ names
#      (.ci/hf_cache_check.py).
#   3. Debian's Chromium (installed if missing) renders /docs headless; every
#      /v1 operation must be listed and show its documentation, and a
#      screenshot is saved under the target dir (.ci/swagger_ui_check.py).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vectorize-target}"
target="$CARGO_TARGET_DIR"
huggingface_hub=2.4.0
safetensors=0.8.0
numpy=2.4.6
venv="$HOME/.cache/vectorize-interop-hf$huggingface_hub-st$safetensors-np$numpy"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import huggingface_hub, safetensors, numpy' 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "huggingface_hub==$huggingface_hub" "safetensors==$safetensors" "numpy==$numpy"
fi

echo "== build the service and the fake hub"
cargo build --locked --quiet --bin vectorize --example fake_hub

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Whatever the caller's environment says about the hub, these runs use ours.
unset HF_TOKEN HF_ENDPOINT HF_HUB_CACHE HF_HOME HF_HUB_OFFLINE VECTORIZE_API_KEY
export HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_PROGRESS_BARS=1

wait_until() {  # wait_until SECONDS COMMAND...: polls until COMMAND succeeds
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then echo "timed out waiting for: $*" >&2; return 1; fi
    sleep 0.1
  done
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

repo=acme/tiny-bert
"$target/debug/examples/fake_hub" --repo "$repo" --revision main --revision v1.0 \
  --manifest "$work/hub.json" >"$work/hub.url" &
pids+=($!)
wait_until 30 test -s "$work/hub.url"
hub=$(head -n1 "$work/hub.url")

port=$(free_port)
VECTORIZE_ADDR="127.0.0.1:$port" VECTORIZE_DATA_DIR="$work/data" HF_ENDPOINT="$hub" RUST_LOG=warn \
  "$target/debug/vectorize" serve &
pids+=($!)
export VECTORIZE_URL="http://127.0.0.1:$port"
wait_until 60 python3 -c "import urllib.request; urllib.request.urlopen('$VECTORIZE_URL/health', timeout=2)"

echo "== vectorize downloads $repo (main, v1.0) from the fake hub"
for revision in main v1.0; do
  "$target/debug/vectorize" upload huggingface "$repo" --revision "$revision" --json >"$work/task-$revision.json"
  python3 -c 'import json, sys; t = json.load(open(sys.argv[1])); print("ok  %s: %s" % (t["model_tag"], t["task_status"]))' "$work/task-$revision.json"
done

echo "== huggingface_hub $huggingface_hub + safetensors $safetensors read the service's store offline"
HF_HOME="$work/hf-home" HF_HUB_CACHE="$work/data/models/huggingface" HF_HUB_OFFLINE=1 \
  HF_ENDPOINT="http://127.0.0.1:9" "$venv/bin/python" .ci/hf_cache_check.py read "$work/hub.json"

echo "== huggingface_hub downloads the same revisions from the fake hub"
HF_HOME="$work/hf-home" HF_HUB_CACHE="$work/hf-cache" HF_ENDPOINT="$hub" \
  "$venv/bin/python" .ci/hf_cache_check.py download "$work/hub.json"

echo "== both caches hold the same names"
"$venv/bin/python" .ci/hf_cache_check.py compare \
  "$work/data/models/huggingface" "$work/hf-cache" "$work/hub.json"

echo "== Swagger UI in headless Chromium"
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then echo "chromium is missing and this is not root to install it" >&2; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
python3 .ci/swagger_ui_check.py "$VECTORIZE_URL" "$target/swagger-ui"
