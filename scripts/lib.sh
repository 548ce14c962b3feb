# Shared helpers of the benchmark scripts (sourced, not run).

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_port PORT LOG_DIR: returns once something listens on 127.0.0.1:PORT; after 10 s exits the
# script with an error that points at the logs in LOG_DIR.
wait_port() {
  for _ in $(seq 100); do
    (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "error: nothing listens on 127.0.0.1:$1 after 10 s (see $2/*.log)" >&2
  exit 1
}

# Release binaries the scripts run; built when either is missing.
bin=target/release
need_release_bins() {
  if [[ ! -x $bin/tokengun || ! -x $bin/tokengun-agent ]]; then
    cargo build --release -p tokengun -p tokengun-agent
  fi
}

# Processes a script started (append their pids); kill_started stops them all.
pids=()
kill_started() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
