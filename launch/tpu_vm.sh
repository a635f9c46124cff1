#!/usr/bin/env bash
# Cloud TPU VM pod slice: create it, copy this checkout to every worker, install, train, delete.
# Every worker runs the same `python -m ncf_jax.main`; jax finds the other workers by itself
# (ncf_jax.distributed detects the TPU VM), so no coordinator flags are passed.
set -euo pipefail

readonly PROG="launch/tpu_vm.sh"

usage() {
  cat <<'EOF'
Usage:
  launch/tpu_vm.sh create [options]
  launch/tpu_vm.sh setup  [options]
  launch/tpu_vm.sh run    [options] --config=configs/<name>.py --workdir=gs://BUCKET/DIR [main flags...]
  launch/tpu_vm.sh delete [options]

Subcommands:
  create   gcloud compute tpus tpu-vm create (add --spot for a cheaper, preemptible slice)
  setup    copy this checkout (tracked and untracked, not ignored files) to every worker and
           install Python 3.11, requirements.txt and jax[tpu] into ~/ncf_jax_venv there
  run      setup (unless --skip_setup), then start ncf_jax.main on all workers at once;
           output streams here and is kept in ~/ncf_jax_logs/ on each worker
  delete   gcloud compute tpus tpu-vm delete

Options (environment variable in brackets):
  --name=NAME              TPU VM name [TPU_NAME]; default: ncf-jax
  --project=PROJECT        GCP project [PROJECT]; default: gcloud's configured project
  --zone=ZONE              zone [ZONE]; default: gcloud's configured compute/zone
  --accelerator_type=TYPE  e.g. v5litepod-16, v5p-32, v6e-16, v4-32 [ACCELERATOR_TYPE];
                           default: v5litepod-16 (4 hosts)
  --version=VERSION        TPU runtime [RUNTIME_VERSION]; default from the type: v4 tpu-ubuntu2204-base,
                           v5litepod v2-alpha-tpuv5-lite, v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e
  --spot                   create: a Spot slice (can be preempted at any time)
  --skip_setup             run: do not copy the code or reinstall (a quick restart)
  --allow_local_workdir    run: accept a --workdir that is not gs:// (only sound on one host)
  --dry_run                print the commands instead of running them
  -h, --help               this message

Every flag that is not an option above is passed to ncf_jax.main. To resume after a
preemption, recreate the slice and rerun `run` with the same --workdir.

Example:
  launch/tpu_vm.sh create --zone=us-west4-a --accelerator_type=v5litepod-16 --spot
  launch/tpu_vm.sh run --zone=us-west4-a --config=configs/ml20m_mlperf.py --workdir=gs://my-bucket/ncf/ml20m
  launch/tpu_vm.sh delete --zone=us-west4-a
EOF
}

die() {
  echo "$PROG: $*" >&2
  echo "Run '$PROG --help' for usage." >&2
  exit 2
}

# ---------------------------------------------------------------- arguments

if [ $# -lt 1 ]; then
  usage >&2
  exit 2
fi
subcommand=$1
shift
case "$subcommand" in
  create | setup | run | delete) ;;
  -h | --help) usage; exit 0 ;;
  *) die "unknown subcommand '$subcommand' (create, setup, run or delete)." ;;
esac

name=${TPU_NAME:-ncf-jax}
project=${PROJECT:-}
zone=${ZONE:-}
accelerator_type=${ACCELERATOR_TYPE:-v5litepod-16}
version=${RUNTIME_VERSION:-}
spot=0
skip_setup=0
allow_local_workdir=0
dry_run=0
workdir=""
has_config=0
forward=()
while [ $# -gt 0 ]; do
  case "$1" in
    --name=*) name=${1#*=} ;;
    --project=*) project=${1#*=} ;;
    --zone=*) zone=${1#*=} ;;
    --accelerator_type=*) accelerator_type=${1#*=} ;;
    --version=*) version=${1#*=} ;;
    --name | --project | --zone | --accelerator_type | --version)
      die "write $1=VALUE (with '=')." ;;
    --spot) spot=1 ;;
    --skip_setup) skip_setup=1 ;;
    --allow_local_workdir) allow_local_workdir=1 ;;
    --dry_run) dry_run=1 ;;
    -h | --help) usage; exit 0 ;;
    --coordinator_address* | --num_processes* | --process_id*)
      die "${1%%=*}: jax finds the TPU workers itself; do not pass it." ;;
    --workdir=*) workdir=${1#*=}; forward+=("$1") ;;
    --workdir) die "write --workdir=DIR (with '=')." ;;
    --config | --config=*) has_config=1; forward+=("$1") ;;
    *) forward+=("$1") ;;
  esac
  shift
done

if [ -z "$version" ]; then
  case "$accelerator_type" in
    v4-*) version=tpu-ubuntu2204-base ;;
    v5litepod-* | v5e-*) version=v2-alpha-tpuv5-lite ;;
    v5p-*) version=v2-alpha-tpuv5 ;;
    v6e-*) version=v2-alpha-tpuv6e ;;
    *) die "no default runtime for --accelerator_type=$accelerator_type; pass --version=RUNTIME." ;;
  esac
fi

if [ "$subcommand" = run ]; then
  [ "$has_config" = 1 ] || die "run needs --config=configs/<name>.py."
  [ -n "$workdir" ] || die "run needs --workdir=gs://BUCKET/DIR."
  case "$workdir" in
    gs://*) ;;
    *) [ "$allow_local_workdir" = 1 ] ||
      die "--workdir=$workdir is not on GCS: every worker of a pod slice must see the same checkpoints. Use gs://BUCKET/DIR (or --allow_local_workdir on a single-host slice)." ;;
  esac
elif [ ${#forward[@]} -gt 0 ]; then
  die "$subcommand takes no ncf_jax.main flags (got: ${forward[*]})."
fi

# ---------------------------------------------------------------- commands

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Paths on the workers, expanded by the worker's shell (hence single quotes).
# shellcheck disable=SC2016
readonly REMOTE_DIR='$HOME/ncf_jax' VENV='$HOME/ncf_jax_venv' LOGS='$HOME/ncf_jax_logs'
archive="${TMPDIR:-/tmp}/ncf_jax_src_$$.tar.gz"
# Install exactly the jax that requirements.txt pins, with its TPU runtime (libtpu).
jax_version=$(sed -n 's/^jax==\([^ ]*\).*/\1/p' "$here/requirements.txt" | head -n 1)
[ -n "$jax_version" ] || die "no 'jax==VERSION' line in $here/requirements.txt."

# gcloud flags shared by every command; project and zone fall back to gcloud's config.
scope=()
[ -z "$project" ] || scope+=("--project=$project")
[ -z "$zone" ] || scope+=("--zone=$zone")

# Single-quotes a word for display unless it is plain, so --dry_run output stays readable
# and can be pasted into a shell.
quote() {
  case "$1" in
    '' | *[!A-Za-z0-9_./:=@%+,-]*) printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")" ;;
    *) printf '%s' "$1" ;;
  esac
}

run_cmd() {  # prints (--dry_run) or runs one command
  if [ "$dry_run" = 1 ]; then
    local word sep=""
    for word in "$@"; do
      printf '%s%s' "$sep" "$(quote "$word")"
      sep=" "
    done
    printf '\n'
  else
    "$@"
  fi
}

# ssh into all workers at once with a remote bash command line ($1).
ssh_all() {
  run_cmd gcloud compute tpus tpu-vm ssh "$name" ${scope[@]+"${scope[@]}"} --worker=all \
    --ssh-flag=-oServerAliveInterval=60 --command="$1"
}

do_create() {
  local extra=()
  [ "$spot" = 0 ] || extra+=(--spot)
  run_cmd gcloud compute tpus tpu-vm create "$name" ${scope[@]+"${scope[@]}"} \
    "--accelerator-type=$accelerator_type" "--version=$version" ${extra[@]+"${extra[@]}"}
}

do_setup() {
  # The working tree as it is (uncommitted edits included), without ignored files (.venv).
  if [ "$dry_run" = 1 ]; then
    printf '(cd %q && git ls-files -z --cached --others --exclude-standard | tar -czf %q --null -T -)\n' \
      "$here" "$archive"
  else
    (cd "$here" && git ls-files -z --cached --others --exclude-standard |
      tar -czf "$archive" --null -T -)
    trap 'rm -f "$archive"' EXIT
  fi
  run_cmd gcloud compute tpus tpu-vm scp "$archive" "$name:ncf_jax_src.tar.gz" \
    ${scope[@]+"${scope[@]}"} --worker=all
  # Ubuntu 22.04 TPU images ship Python 3.10; the pinned numpy needs 3.11.
  local steps=(
    "set -euo pipefail"
    "rm -rf $REMOTE_DIR"
    "mkdir -p $REMOTE_DIR $LOGS"
    "tar -xzf \$HOME/ncf_jax_src.tar.gz -C $REMOTE_DIR"
    "if ! command -v python3.11 >/dev/null; then sudo apt-get -qq update && sudo DEBIAN_FRONTEND=noninteractive apt-get -qq install -y python3.11 python3.11-venv; fi"
    "[ -x $VENV/bin/python ] || python3.11 -m venv $VENV"
    "$VENV/bin/pip install -q --upgrade pip"
    # gcsfs: orbax (through etils.epath) needs it for the gs:// workdir.
    "$VENV/bin/pip install -q -r $REMOTE_DIR/requirements.txt 'jax[tpu]==$jax_version' gcsfs"
  )
  # One line, so that --dry_run prints one line per command.
  local joined
  joined=$(printf '%s; ' "${steps[@]}")
  ssh_all "${joined%; }"
}

do_run() {
  local main_args
  main_args=$(printf '%q ' "${forward[@]}")
  # pipefail: the worker's exit status is python's, not tee's.
  ssh_all "set -o pipefail; cd $REMOTE_DIR && PYTHONUNBUFFERED=1 $VENV/bin/python -m ncf_jax.main ${main_args}2>&1 | tee -a $LOGS/train.log"
}

do_delete() {
  run_cmd gcloud compute tpus tpu-vm delete "$name" ${scope[@]+"${scope[@]}"} --quiet
}

if [ "$dry_run" = 0 ]; then
  command -v gcloud >/dev/null 2>&1 ||
    die "gcloud not found: install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install)."
fi
case "$subcommand" in
  create) do_create ;;
  setup) do_setup ;;
  run)
    if [ "$skip_setup" = 0 ]; then do_setup; fi
    do_run
    ;;
  delete) do_delete ;;
esac
