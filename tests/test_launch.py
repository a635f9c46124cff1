"""launch/: script syntax and lint, --dry_run commands, process supervision, GKE manifests.

The cloud launchers are checked through --dry_run (nothing here talks to gcloud, SLURM or
Kubernetes); local_multiprocess.sh really runs, with a stand-in for python and once with
real jax processes.
"""

from __future__ import annotations

import glob
import math
import os
import pathlib
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch")
SCRIPTS = sorted(glob.glob(os.path.join(LAUNCH, "*.sh")) + glob.glob(os.path.join(LAUNCH,
                                                                                   "*.sbatch")))
MANIFESTS = sorted(glob.glob(os.path.join(LAUNCH, "gke", "*.yaml")))
LOCAL = os.path.join(LAUNCH, "local_multiprocess.sh")
TPU_VM = os.path.join(LAUNCH, "tpu_vm.sh")
SLURM = os.path.join(LAUNCH, "slurm.sbatch")


def run(args: list[str], timeout: float = 30, **kwargs) -> subprocess.CompletedProcess:
  return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                        **kwargs)


def executable(path: str, text: str) -> str:
  with open(path, "w") as f:
    f.write(text)
  os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
  return path


def pinned_jax() -> str:
  with open(os.path.join(ROOT, "requirements.txt")) as f:
    return re.search(r"^jax==(\S+)", f.read(), re.M).group(1)


def container(manifest: dict) -> dict:
  return manifest["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"][
    "containers"][0]


def load(path: str) -> dict:
  with open(path) as f:
    [doc] = list(yaml.safe_load_all(f))
  return doc


# ---------------------------------------------------------------- syntax and lint


def test_launchers_exist() -> None:
  names = {os.path.basename(p) for p in SCRIPTS + MANIFESTS}
  assert {"local_multiprocess.sh", "tpu_vm.sh", "slurm.sbatch", "tpu-jobset.yaml",
          "gpu-jobset.yaml"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_bash_syntax_strict_mode_and_usage(script: str) -> None:
  assert run(["bash", "-n", script]).returncode == 0
  with open(script) as f:
    assert "set -euo pipefail" in f.read()
  result = run(["bash", script, "--help"])
  assert result.returncode == 0 and "Usage" in result.stdout
  assert "--dry_run" in result.stdout


def embedded_scripts(tmp_path) -> list[str]:
  """The bash wrappers inside the GKE manifests, as files."""
  paths = []
  for manifest in MANIFESTS:
    path = tmp_path / (os.path.basename(manifest) + ".sh")
    path.write_text("#!/usr/bin/env bash\n" + container(load(manifest))["args"][0])
    paths.append(str(path))
  return paths


def test_shellcheck(tmp_path) -> None:
  if shutil.which("shellcheck") is None:
    pytest.skip("shellcheck is not installed (apt-get install shellcheck); launch scripts "
                "not linted")
  result = run(["shellcheck", "--shell=bash", *SCRIPTS, *embedded_scripts(tmp_path)])
  assert result.returncode == 0, result.stdout


# ---------------------------------------------------------------- local_multiprocess.sh


def test_local_dry_run_prints_one_command_per_process() -> None:
  result = run(["bash", LOCAL, "3", "--devices_per_process=2", "--config=configs/test.py",
                "--workdir", "/tmp/ncf mp", "--config.train.batch_size=64", "--dry_run"],
               env={k: v for k, v in os.environ.items() if k != "XLA_FLAGS"})
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 3
  coordinators, ids = set(), []
  for i, line in enumerate(lines):
    words = shlex.split(line)
    assert words[:4] == ["env", "JAX_PLATFORMS=cpu",
                         "XLA_FLAGS=--xla_force_host_platform_device_count=2", "PYTHONUNBUFFERED=1"]
    assert words[5:7] == ["-m", "ncf_jax.main"]
    # Forwarded flags, in order, with the space in the workdir intact.
    assert words[7:11] == ["--config=configs/test.py", "--workdir", "/tmp/ncf mp",
                           "--config.train.batch_size=64"]
    flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--") and "=" in w)
    coordinators.add(flags["coordinator_address"])
    assert flags["num_processes"] == "3"
    ids.append(int(flags["process_id"]))
    assert f"/tmp/ncf mp/logs/process_{i}.log" in words
    assert ("tee" in words) == (i == 0)  # only process 0 also prints to the terminal
  assert ids == [0, 1, 2]
  [coordinator] = coordinators
  assert re.fullmatch(r"localhost:\d+", coordinator)


@pytest.mark.parametrize("args, message", [
  (["2", "--workdir=/tmp/x"], "--config=configs/<name>.py is required"),
  (["2", "--config=c.py"], "--workdir=DIR is required"),
  (["0", "--config=c.py", "--workdir=/tmp/x"], "positive integer"),
  (["2", "--config=c.py", "--workdir=/tmp/x", "--process_id=1"], "set by this launcher"),
  (["2", "--config=c.py", "--workdir=/tmp/x", "--devices_per_process=0"], "positive integer"),
])
def test_local_rejects_bad_arguments(args: list[str], message: str) -> None:
  result = run(["bash", LOCAL, *args, "--dry_run"])
  assert result.returncode == 2 and message in result.stderr


FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for python: runs `-c` snippets (the launcher's free-port helper) for real.
if [ "$1" = "-c" ]; then exec {python} "$@"; fi
id=""
for arg in "$@"; do case "$arg" in --process_id=*) id=${{arg#*=}} ;; esac; done
echo "process $id: $* XLA_FLAGS=$XLA_FLAGS"
if [ "$id" = "${{FAIL_ID:-}}" ]; then sleep 0.3; echo "process $id failing" >&2; exit 3; fi
sleep "${{FAKE_SLEEP:-0}}" &
# Kill the sleep too: it would hold the launcher's output pipe open.
trap 'kill $!; echo "process $id got TERM"; exit ${{TERM_EXIT:-0}}' TERM
wait $!
echo "process $id done"
"""


def test_local_runs_all_processes_and_logs_each(tmp_path) -> None:
  fake = executable(str(tmp_path / "python"), FAKE_PYTHON.format(python=sys.executable))
  workdir = tmp_path / "work"
  result = run(["bash", LOCAL, "3", "--config=c.py", f"--workdir={workdir}", "--config.x=1"],
               env={**os.environ, "PYTHON": fake})
  assert result.returncode == 0, result.stderr
  assert "process 0 done" in result.stdout and "process 1" not in result.stdout
  for i in range(3):
    log = (workdir / "logs" / f"process_{i}.log").read_text()
    assert f"process {i} done" in log
    assert f"--config=c.py --workdir={workdir} --config.x=1 --coordinator_address=" in log


def test_local_stops_everyone_when_one_process_fails(tmp_path) -> None:
  fake = executable(str(tmp_path / "python"), FAKE_PYTHON.format(python=sys.executable))
  start = time.monotonic()
  result = run(["bash", LOCAL, "3", "--config=c.py", f"--workdir={tmp_path}"],
               env={**os.environ, "PYTHON": fake, "FAIL_ID": "1", "FAKE_SLEEP": "60"})
  assert result.returncode == 3
  assert time.monotonic() - start < 20  # not the 60 s the others would have run
  assert "process 1 exited with code 3; stopping the others" in result.stderr
  assert "process 1 failing" in result.stderr  # the tail of its log
  for i in (0, 2):
    assert f"process {i} got TERM" in (tmp_path / "logs" / f"process_{i}.log").read_text()


def _wait_for_process_1(tmp_path) -> pathlib.Path:
  """The launcher's process_1.log, once process 1 has started (15 s at most)."""
  log1 = tmp_path / "logs" / "process_1.log"
  deadline = time.monotonic() + 15
  while not (log1.exists() and "process 1:" in log1.read_text()):
    assert time.monotonic() < deadline, "process 1 did not start"
    time.sleep(0.1)
  return log1


def test_local_ctrl_c_stops_every_process(tmp_path) -> None:
  # Background processes of a script ignore SIGINT: the launcher must pass on a SIGTERM
  # (on which the trainer checkpoints).
  fake = executable(str(tmp_path / "python"), FAKE_PYTHON.format(python=sys.executable))
  # A shell ignores signals that were ignored when it started (as SIGINT is for anything a
  # non-interactive shell puts in the background, e.g. a CI runner): give the launcher the
  # default SIGINT a terminal's Ctrl-C would meet.
  proc = subprocess.Popen(["bash", LOCAL, "2", "--config=c.py", f"--workdir={tmp_path}"],
                          env={**os.environ, "PYTHON": fake, "FAKE_SLEEP": "60"}, cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  log1 = _wait_for_process_1(tmp_path)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=30)
  assert proc.returncode == 130, err
  assert "process 0 got TERM" in out and "process 1 got TERM" in log1.read_text()


@pytest.mark.parametrize("term_exit, expected", [(0, 0), (3, 3)])
def test_local_sigterm_exits_with_the_processes_status(tmp_path, term_exit, expected) -> None:
  # A preempted launcher passes SIGTERM on; when every process then stops cleanly (the
  # trainer checkpoints and exits 0) so does the launcher, else with the failing code.
  fake = executable(str(tmp_path / "python"), FAKE_PYTHON.format(python=sys.executable))
  env = {**os.environ, "PYTHON": fake, "FAKE_SLEEP": "60", "TERM_EXIT": str(term_exit)}
  proc = subprocess.Popen(["bash", LOCAL, "2", "--config=c.py", f"--workdir={tmp_path}"],
                          env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  log1 = _wait_for_process_1(tmp_path)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=30)
  assert proc.returncode == expected, err
  assert "process 0 got TERM" in out and "process 1 got TERM" in log1.read_text()
  assert ("exited with code 3" in err) == (term_exit == 3)


E2E_WORKER = textwrap.dedent("""
  import argparse
  from configs import default
  from ncf_jax import distributed
  parser = argparse.ArgumentParser()
  for name in ("coordinator_address", "workdir", "config"):
    parser.add_argument("--" + name)
  for name in ("num_processes", "process_id"):
    parser.add_argument("--" + name, type=int)
  args, _ = parser.parse_known_args()
  config = default.get_config()
  config.distributed.initialization_timeout_s = 30
  distributed.initialize(config.distributed, args.coordinator_address, args.num_processes,
                         args.process_id)
  distributed.check_same_config(config)
  import jax
  import numpy as np
  from jax.experimental import multihost_utils
  assert (jax.process_count(), jax.local_device_count(), jax.device_count()) == (2, 2, 4)
  total = np.asarray(multihost_utils.process_allgather(np.int32(jax.process_index()))).sum()
  print(f"E2E OK process {jax.process_index()} sum {total}", flush=True)
""")


def test_local_end_to_end_with_jax(tmp_path) -> None:
  # The launcher's real coordinator, ports, XLA_FLAGS and JAX_PLATFORMS, with a small
  # script in place of ncf_jax.main: two processes with two CPU devices each.
  worker = tmp_path / "worker.py"
  worker.write_text(E2E_WORKER)
  shim = executable(str(tmp_path / "python"), textwrap.dedent(f"""\
    #!/usr/bin/env bash
    if [ "$1" = "-m" ]; then shift 2; exec {sys.executable} {worker} "$@"; fi
    exec {sys.executable} "$@"
  """))
  env = {**os.environ, "PYTHON": shim, "PYTHONPATH": ROOT,
         "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}  # must be overridden
  result = run(["bash", LOCAL, "2", "--devices_per_process=2", "--config=configs/test.py",
                f"--workdir={tmp_path}"], env=env, timeout=90)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert "E2E OK process 0 sum 1" in result.stdout
  assert "E2E OK process 1 sum 1" in (tmp_path / "logs" / "process_1.log").read_text()


# ---------------------------------------------------------------- tpu_vm.sh


def dry(script: str, *args: str, **env: str) -> list[list[str]]:
  result = run(["bash", script, *args, "--dry_run"], env={**os.environ, **env})
  assert result.returncode == 0, result.stderr
  return [shlex.split(line) for line in result.stdout.strip().splitlines()]


def test_tpu_vm_create_and_delete() -> None:
  [create] = dry(TPU_VM, "create", "--project=p", "--zone=us-west4-a", "--spot")
  assert create[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"]
  assert create[5] == "ncf-jax"
  assert {"--project=p", "--zone=us-west4-a", "--accelerator-type=v5litepod-16",
          "--version=v2-alpha-tpuv5-lite", "--spot"} <= set(create)
  [create] = dry(TPU_VM, "create", "--accelerator_type=v5p-32", TPU_NAME="mine")
  assert create[5] == "mine" and "--version=v2-alpha-tpuv5" in create
  [delete] = dry(TPU_VM, "delete", "--zone=z")
  assert delete[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "ncf-jax"]
  assert "--quiet" in delete and "--zone=z" in delete


def test_tpu_vm_run_copies_installs_and_trains_on_all_workers() -> None:
  commands = dry(TPU_VM, "run", "--zone=z", "--config=configs/test.py",
                 "--workdir=gs://bucket/ncf", "--config.train.batch_size=64")
  pack, scp, setup, train = commands
  assert "git ls-files" in " ".join(pack)
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and "--worker=all" in scp
  for ssh in (setup, train):
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "ncf-jax"]
    assert "--worker=all" in ssh
  [setup_command] = [w for w in setup if w.startswith("--command=")]
  assert f"jax[tpu]=={pinned_jax()}" in setup_command and "requirements.txt" in setup_command
  [train_command] = [w for w in train if w.startswith("--command=")]
  remote = shlex.split(train_command.removeprefix("--command="))
  i = remote.index("ncf_jax.main")
  assert remote[i + 1:i + 4] == ["--config=configs/test.py", "--workdir=gs://bucket/ncf",
                                 "--config.train.batch_size=64"]
  assert not any(w.startswith("--coordinator_address") for w in remote)  # jax auto-detects
  # --skip_setup: straight to training.
  assert len(dry(TPU_VM, "run", "--skip_setup", "--config=c.py", "--workdir=gs://b/d")) == 1


@pytest.mark.parametrize("args, message", [
  (["run", "--config=c.py", "--workdir=/tmp/x"], "is not on GCS"),
  (["run", "--config=c.py", "--workdir=gs://b/d", "--process_id=0"], "jax finds the TPU"),
  (["create", "--accelerator_type=v9-8"], "pass --version"),
  (["create", "--config=c.py"], "takes no ncf_jax.main flags"),
  (["launch"], "unknown subcommand"),
])
def test_tpu_vm_rejects_bad_arguments(args: list[str], message: str) -> None:
  result = run(["bash", TPU_VM, *args, "--dry_run"])
  assert result.returncode == 2 and message in result.stderr


# ---------------------------------------------------------------- slurm.sbatch


def test_slurm_header_and_dry_run() -> None:
  with open(SLURM) as f:
    header = [line for line in f if line.startswith("#SBATCH")]
  options = {line.split()[1].split("=")[0] for line in header}
  assert {"--nodes", "--ntasks-per-node", "--gpus-per-node", "--requeue", "--signal",
          "--time"} <= options
  assert "#SBATCH --signal=TERM@120\n" in header
  [srun] = dry(SLURM, "--config=configs/test.py", "--workdir=/shared/ncf", "--config.a=1")
  assert srun[0] == "srun" and "--kill-on-bad-exit=1" in srun
  i = srun.index("-m")
  assert srun[i - 1:i + 5] == ["python", "-m", "ncf_jax.main", "--config=configs/test.py",
                               "--workdir=/shared/ncf", "--config.a=1"]
  # jax reads the coordinator, process count and ids from SLURM's environment.
  assert run(["bash", SLURM, "--config=c", "--workdir=/w", "--num_processes=2"]).returncode == 2


# ---------------------------------------------------------------- GKE manifests


def test_manifests_parse_as_jobsets() -> None:
  for path in MANIFESTS:
    manifest = load(path)
    assert manifest["apiVersion"] == "jobset.x-k8s.io/v1alpha2"
    assert manifest["kind"] == "JobSet"
    [rjob] = manifest["spec"]["replicatedJobs"]
    job = rjob["template"]["spec"]
    assert job["parallelism"] == job["completions"] and job["backoffLimit"] == 0
    pod = job["template"]["spec"]
    # podFailurePolicy needs restartPolicy Never; disruptions restart the JobSet freely.
    assert pod["restartPolicy"] == "Never"
    assert job["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["type"] == "DisruptionTarget"
    assert manifest["spec"]["failurePolicy"]["rules"][0]["action"] == \
      "RestartJobSetAndIgnoreMaxRestarts"
    script = container(manifest)["args"][0]
    assert "python -m ncf_jax.main" in script
    assert re.search(r"--config=configs/\S+\.py", script)
    assert re.search(r"--workdir=gs://\S+", script)


def test_tpu_manifest_matches_its_topology() -> None:
  manifest = load(os.path.join(LAUNCH, "gke", "tpu-jobset.yaml"))
  job = manifest["spec"]["replicatedJobs"][0]["template"]["spec"]
  selector = job["template"]["spec"]["nodeSelector"]
  assert selector["cloud.google.com/gke-tpu-accelerator"].startswith("tpu-v")
  chips = math.prod(int(n) for n in selector["cloud.google.com/gke-tpu-topology"].split("x"))
  per_host = int(container(manifest)["resources"]["limits"]["google.com/tpu"])
  assert per_host * job["parallelism"] == chips  # one pod per host of the slice
  assert "--coordinator_address" not in container(manifest)["args"][0]  # GKE + jax do it


def test_gpu_manifest_coordinator_is_pod_zero() -> None:
  manifest = load(os.path.join(LAUNCH, "gke", "gpu-jobset.yaml"))
  [rjob] = manifest["spec"]["replicatedJobs"]
  job = rjob["template"]["spec"]
  env = {e["name"]: e["value"] for e in container(manifest)["env"]}
  name = manifest["metadata"]["name"]
  # JobSet pod DNS: <jobset>-<replicatedJob>-<job index>-<pod index>.<subdomain = jobset>.
  host, port = env["COORDINATOR_ADDRESS"].rsplit(":", 1)
  assert host == f"{name}-{rjob['name']}-0-0.{name}"
  assert {"containerPort": int(port)} in container(manifest)["ports"]
  assert int(env["NUM_PROCESSES"]) == job["parallelism"] * rjob.get("replicas", 1)
  assert int(container(manifest)["resources"]["limits"]["nvidia.com/gpu"]) >= 1
  assert "cloud.google.com/gke-accelerator" in job["template"]["spec"]["nodeSelector"]


@pytest.mark.parametrize("manifest", MANIFESTS, ids=os.path.basename)
def test_manifest_wrapper_forwards_sigterm_and_exit_codes(manifest: str, tmp_path) -> None:
  # The pod's bash wrapper with a fake `python` on PATH: exit codes pass through, and a
  # SIGTERM reaches the trainer and ends the pod non-zero (so the JobSet restarts).
  executable(str(tmp_path / "python"), textwrap.dedent("""\
    #!/usr/bin/env bash
    echo "ARGS $*"
    sleep "$FAKE_SLEEP" &
    trap 'kill $!; echo trainer got TERM; exit 0' TERM
    wait $!
    exit "$FAKE_RC"
  """))
  spec = container(load(manifest))
  env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "JOB_COMPLETION_INDEX": "1",
         **{e["name"]: e["value"] for e in spec.get("env", [])}}
  script = spec["args"][0]
  done = run(["bash", "-c", script], env={**env, "FAKE_SLEEP": "0", "FAKE_RC": "5"})
  assert done.returncode == 5
  if "--process_id" in script:
    assert "--process_id=1" in done.stdout and "--num_processes=2" in done.stdout
  proc = subprocess.Popen(["bash", "-c", script], env={**env, "FAKE_SLEEP": "30",
                                                       "FAKE_RC": "0"},
                          stdout=subprocess.PIPE, text=True, cwd=ROOT)
  time.sleep(1.0)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=20)
  assert proc.returncode == 143 and "trainer got TERM" in out


def test_dockerfile_installs_the_pinned_jax() -> None:
  with open(os.path.join(LAUNCH, "gke", "Dockerfile")) as f:
    text = f.read()
  assert "requirements.txt" in text and "jax[${JAX_EXTRA}]" in text
  for manifest in MANIFESTS:
    assert container(load(manifest))["image"]
