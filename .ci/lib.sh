# What the CI scripts that start the service share; sourced, not run.
#   work        a temporary folder, removed on exit
#   pids        processes to kill on exit (append with pids+=($!))
#   wait_until  SECONDS COMMAND...: polls until COMMAND succeeds
#   free_port   a loopback port nothing listens on now

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

wait_until() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then echo "timed out waiting for: $*" >&2; return 1; fi
    sleep 0.1
  done
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
