#!/usr/bin/env bash
# N processes of ncf_jax.main on this machine, each with its own CPU devices, joined through
# jax.distributed over localhost: the multi-host code path (per-process data, global
# arrays, cross-process collectives, process-0-only logging) without a cluster.
#
# Portable to macOS's bash 3.2: no `wait -n`, no associative arrays; every array expansion
# is non-empty under `set -u`.
set -euo pipefail

readonly PROG="launch/local_multiprocess.sh"

usage() {
  cat <<'EOF'
Usage: launch/local_multiprocess.sh N [options] --config=configs/<name>.py --workdir=DIR [main flags...]

Starts N processes of `python -m ncf_jax.main` on localhost, each with
--coordinator_address=localhost:PORT --num_processes=N --process_id=I, JAX_PLATFORMS=cpu
and its own CPU device count. All other flags (--config, --workdir, --config.x=y, ...) are
passed to every process unchanged. If any process fails, the others are stopped and the
launcher exits with that process's exit code. SIGTERM or Ctrl-C is passed to every process
(each saves a checkpoint and exits 0); the launcher then exits 0 after SIGTERM, 130 after
Ctrl-C, or the exit code of a process that failed to stop cleanly.

Options:
  --devices_per_process=K  CPU devices per process (XLA_FLAGS=--xla_force_host_platform_device_count=K); default 1
  --port=P                 coordinator port; default: a free port
  --log_dir=DIR            per-process logs process_<i>.log; default: WORKDIR/logs
                           (a local temporary folder when WORKDIR is a gs:// URL)
  --dry_run                print the commands instead of running them
  -h, --help               this message

Environment:
  PYTHON                   interpreter to run (default: python, i.e. the active environment)

Example:
  launch/local_multiprocess.sh 2 --devices_per_process=4 --config=configs/test.py --workdir=/tmp/ncf_mp
EOF
}

die() {
  echo "$PROG: $*" >&2
  echo "Run '$PROG --help' for usage." >&2
  exit 2
}

# A decimal integer >= 1: digits only, no leading zero.
is_positive() {
  case "$1" in '' | 0* | *[!0-9]*) return 1 ;; *) return 0 ;; esac
}

# ---------------------------------------------------------------- arguments

if [ $# -lt 1 ]; then
  usage >&2
  exit 2
fi
case "$1" in -h | --help) usage; exit 0 ;; esac
num_processes=$1
shift
is_positive "$num_processes" ||
  die "N (the first argument) must be a positive integer, got '$num_processes'."

devices=1
port=""
log_dir=""
dry_run=0
workdir=""
has_config=0
forward=()
while [ $# -gt 0 ]; do
  case "$1" in
    --devices_per_process=*) devices=${1#*=} ;;
    --port=*) port=${1#*=} ;;
    --log_dir=*) log_dir=${1#*=} ;;
    --devices_per_process | --port | --log_dir)
      [ $# -ge 2 ] || die "$1 needs a value."
      case "$1" in
        --devices_per_process) devices=$2 ;;
        --port) port=$2 ;;
        --log_dir) log_dir=$2 ;;
      esac
      shift
      ;;
    --dry_run) dry_run=1 ;;
    -h | --help) usage; exit 0 ;;
    --coordinator_address | --coordinator_address=* | --num_processes | --num_processes=* | \
      --process_id | --process_id=*)
      die "${1%%=*} is set by this launcher; do not pass it." ;;
    --workdir=*) workdir=${1#*=}; forward+=("$1") ;;
    --workdir)
      [ $# -ge 2 ] || die "--workdir needs a value."
      workdir=$2
      forward+=("$1" "$2")
      shift
      ;;
    --config | --config=*) has_config=1; forward+=("$1") ;;
    *) forward+=("$1") ;;
  esac
  shift
done

[ -n "$workdir" ] || die "--workdir=DIR is required (checkpoints, metrics and, by default, logs go there)."
[ "$has_config" = 1 ] || die "--config=configs/<name>.py is required."
is_positive "$devices" ||
  die "--devices_per_process must be a positive integer, got '$devices'."
[ -z "$port" ] || { is_positive "$port" && [ "$port" -le 65535 ]; } ||
  die "--port must be a TCP port number, got '$port'."

PYTHON=${PYTHON:-python}
command -v "$PYTHON" >/dev/null 2>&1 ||
  die "cannot run '$PYTHON': activate the project's environment or set PYTHON=/path/to/python."

if [ -z "$port" ]; then
  # Let the OS pick a port that is free now; the coordinator binds it a moment later.
  port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')
fi
if [ -z "$log_dir" ]; then
  case "$workdir" in
    *://*) log_dir="${TMPDIR:-/tmp}/ncf_jax_local_multiprocess_logs" ;;
    *) log_dir="$workdir/logs" ;;
  esac
fi
coordinator="localhost:$port"
# Appended last so it wins over a device count already in the caller's XLA_FLAGS.
xla_flags="${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$devices"

# Sets the array `cmd` to the command line of process $1.
command_for() {
  cmd=(env JAX_PLATFORMS=cpu "XLA_FLAGS=$xla_flags" PYTHONUNBUFFERED=1
    "$PYTHON" -m ncf_jax.main "${forward[@]}"
    "--coordinator_address=$coordinator" "--num_processes=$num_processes" "--process_id=$1")
}

if [ "$dry_run" = 1 ]; then
  i=0
  while [ "$i" -lt "$num_processes" ]; do
    command_for "$i"
    printf '%q ' "${cmd[@]}"
    if [ "$i" = 0 ]; then
      printf '2>&1 | tee %q &\n' "$log_dir/process_$i.log"
    else
      printf '> %q 2>&1 &\n' "$log_dir/process_$i.log"
    fi
    i=$((i + 1))
  done
  exit 0
fi

# ---------------------------------------------------------------- run

mkdir -p "$log_dir"
pids=()  # pids[i]: process i, or "" once it has exited and been reaped

alive_pids() {
  local pid
  [ ${#pids[@]} -gt 0 ] || return 0
  for pid in "${pids[@]}"; do
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
  done
}

# SIGTERM to every process still running (the trainer saves a checkpoint and exits), then
# SIGKILL whatever is left after $1 seconds: a process blocked in a collective whose peer
# died never reaches the step boundary where it would stop.
stop_all() {
  local grace_ticks=$(($1 * 5)) pid
  for pid in $(alive_pids); do kill -TERM "$pid" 2>/dev/null || true; done
  while [ -n "$(alive_pids)" ] && [ "$grace_ticks" -gt 0 ]; do
    sleep 0.2
    grace_ticks=$((grace_ticks - 1))
  done
  for pid in $(alive_pids); do kill -KILL "$pid" 2>/dev/null || true; done
}

# Stops every process (each checkpoints and exits 0), then exits with the first non-zero
# exit code of a process; if all exited 0: 0 for SIGTERM (a preemption that was handled,
# as the trainer itself reports it) and 130 for Ctrl-C.
on_signal() {
  local status=0 i=0 pid rc
  echo "$PROG: SIG$1; stopping all $num_processes processes (up to 60s to checkpoint)." >&2
  trap - INT TERM
  stop_all 60
  while [ "$i" -lt "$num_processes" ]; do
    pid=${pids[$i]}
    if [ -n "$pid" ]; then
      rc=0
      wait "$pid" || rc=$?
      pids[i]=""
      if [ "$rc" -ne 0 ] && [ "$status" = 0 ]; then
        echo "$PROG: process $i exited with code $rc." >&2
        status=$rc
      fi
    fi
    i=$((i + 1))
  done
  if [ "$status" = 0 ] && [ "$1" = INT ]; then status=130; fi
  exit "$status"
}
# Background processes of a script ignore SIGINT, so Ctrl-C must be forwarded by hand.
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'stop_all 0' EXIT

echo "$PROG: $num_processes processes x $devices CPU devices, coordinator $coordinator, logs in $log_dir/" >&2
i=0
while [ "$i" -lt "$num_processes" ]; do
  command_for "$i"
  log="$log_dir/process_$i.log"
  if [ "$i" = 0 ]; then
    # $! is python's pid, not tee's, so it can be waited for and stopped directly.
    "${cmd[@]}" > >(tee "$log") 2>&1 &
  else
    "${cmd[@]}" >"$log" 2>&1 &
  fi
  pids+=("$!")
  i=$((i + 1))
done

running=$num_processes
while [ "$running" -gt 0 ]; do
  i=0
  while [ "$i" -lt "$num_processes" ]; do
    pid=${pids[$i]}
    # bash reaps exited children as they go, so kill -0 fails once process i is done.
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      rc=0
      wait "$pid" || rc=$?
      pids[i]=""
      running=$((running - 1))
      if [ "$rc" -ne 0 ]; then
        echo "$PROG: process $i exited with code $rc; stopping the others." >&2
        if [ "$i" != 0 ]; then
          echo "$PROG: last lines of $log_dir/process_$i.log:" >&2
          tail -n 20 "$log_dir/process_$i.log" >&2 || true
        fi
        stop_all 10
        exit "$rc"
      fi
    fi
    i=$((i + 1))
  done
  if [ "$running" -gt 0 ]; then sleep 0.2; fi
done
echo "$PROG: all $num_processes processes finished." >&2
