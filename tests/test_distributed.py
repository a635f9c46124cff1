"""ncf_jax.distributed: cluster detection, flag validation, and real multi-process runs.

Anything that calls jax.distributed.initialize runs in a subprocess: it can only happen once
per process, before the backend starts, and a failure aborts the process.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest

from configs import default
from ncf_jax import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Variables by which jax (and our detection) recognises a cluster; cleared for every test so
# that running the suite inside a SLURM job or a Kubernetes pod changes nothing.
CLUSTER_VARS = (
  "OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
  "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS",
  "SLURM_PROCID", "SLURM_LOCALID", "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES",
  "TPU_SKIP_MDS_QUERY", "KUBERNETES_SERVICE_HOST", "JOB_COMPLETION_INDEX",
  "JAX_COORDINATOR_ADDRESS", "JAX_COORDINATOR_PORT", "JAX_LOCAL_DEVICE_IDS",
)


@pytest.fixture(autouse=True)
def no_cluster_env(monkeypatch: pytest.MonkeyPatch) -> None:
  for name in CLUSTER_VARS:
    monkeypatch.delenv(name, raising=False)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def subprocess_env() -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if k not in CLUSTER_VARS}
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, PYTHONUNBUFFERED="1",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  return env


# One process of a multi-process run: initialise through ncf_jax.distributed, then check
# what every process sees. argv: address|auto num_processes process_id timeout_s [mutate].
WORKER = textwrap.dedent("""
  import sys
  from configs import default
  from ncf_jax import distributed
  address, count, index, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
  config = default.get_config()
  config.distributed.initialization_timeout_s = timeout
  if address == "auto":  # no flags: the cluster environment must say it all
    distributed.initialize(config.distributed)
  else:
    distributed.initialize(config.distributed, address, count, index)

  import jax
  import numpy as np
  from jax.experimental import multihost_utils
  assert jax.process_count() == count, jax.process_count()
  assert jax.process_index() == index
  assert distributed.is_coordinator() == (index == 0)
  assert jax.device_count() == count and jax.local_device_count() == 1
  # A cross-process reduction: everyone contributes index + 1.
  gathered = np.asarray(multihost_utils.process_allgather(np.int32(index + 1)))
  assert gathered.tolist() == list(range(1, count + 1)), gathered
  print("SUM", int(gathered.sum()), flush=True)
  # The per-process id may differ between processes without failing the check.
  config.distributed.process_id = index
  distributed.check_same_config(config)
  print("SAME_CONFIG_OK", flush=True)
  if len(sys.argv) > 5 and index == 1:
    config.train.batch_size += 1
  try:
    distributed.check_same_config(config)
    print("NO_MISMATCH", flush=True)
  except ValueError as e:
    print("MISMATCH:", e, flush=True)
""")


def run_workers(count: int, timeout_s: int, *extra: str, address: str | None = None,
                indices: list[int] | None = None,
                env_of: Callable[[int], dict[str, str]] = lambda i: {},
                ) -> list[subprocess.CompletedProcess]:
  address = address or f"localhost:{free_port()}"
  procs = [subprocess.Popen(
    [sys.executable, "-c", WORKER, address, str(count), str(i), str(timeout_s), *extra],
    cwd=ROOT, env={**subprocess_env(), **env_of(i)}, stdout=subprocess.PIPE,
    stderr=subprocess.PIPE, text=True) for i in (range(count) if indices is None else indices)]
  results = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
  return results


# ---------------------------------------------------------------- in-process, no jax init


def test_single_process_without_cluster_is_a_noop() -> None:
  import jax

  distributed.initialize(default.get_config().distributed)
  assert not jax.distributed.is_initialized()
  assert jax.process_count() == 1 and distributed.is_coordinator()
  # check_same_config needs no collective with a single process.
  distributed.check_same_config(default.get_config())


SLURM_STEP = {"SLURM_JOB_ID": "42", "SLURM_STEP_NODELIST": "node[001-004]",
              "SLURM_PROCID": "3", "SLURM_LOCALID": "1"}


@pytest.mark.parametrize("env, on_tpu, expected", [
  ({}, False, None),
  ({**SLURM_STEP, "SLURM_NTASKS": "8"}, False, "slurm"),
  ({**SLURM_STEP, "SLURM_NTASKS": "1"}, False, None),
  # A batch script running python without srun: not a step, so a single process.
  ({"SLURM_JOB_ID": "42", "SLURM_NTASKS": "8"}, False, None),
  ({"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:1", "OMPI_COMM_WORLD_SIZE": "4"}, False,
   "openmpi"),
  ({"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:1", "OMPI_COMM_WORLD_SIZE": "1"}, False,
   None),
  ({"TPU_WORKER_HOSTNAMES": "h0,h1,h2,h3", "TPU_WORKER_ID": "1"}, True, "gke_tpu"),
  # Only a real TPU VM counts: jax itself requires libtpu and TPU chips.
  ({"TPU_WORKER_HOSTNAMES": "h0,h1"}, False, None),
  ({}, True, "cloud_tpu_vm"),
  ({"TPU_SKIP_MDS_QUERY": "1"}, True, None),
  ({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, False, None),  # a plain pod
])
def test_detect_cluster(env: dict[str, str], on_tpu: bool, expected: str | None) -> None:
  assert distributed.detect_cluster(env, on_cloud_tpu_vm=on_tpu) == expected


def test_detect_cluster_refuses_what_jax_cannot_bootstrap() -> None:
  with pytest.raises(RuntimeError, match="OMPI_MCA_orte_hnp_uri"):
    distributed.detect_cluster({"OMPI_COMM_WORLD_SIZE": "4"}, on_cloud_tpu_vm=False)
  if importlib.util.find_spec("kubernetes") is None:
    pod = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "JOB_COMPLETION_INDEX": "2"}
    with pytest.raises(RuntimeError, match="--process_id=\\$JOB_COMPLETION_INDEX"):
      distributed.detect_cluster(pod, on_cloud_tpu_vm=False)
    # Pod 0 may be a Job of one pod: a warning, and a single process.
    pod["JOB_COMPLETION_INDEX"] = "0"
    assert distributed.detect_cluster(pod, on_cloud_tpu_vm=False) is None


@pytest.mark.parametrize("fields, flags, message", [
  ({}, dict(coordinator_address="localhost:1234"),
   "--coordinator_address given but --num_processes, --process_id missing"),
  ({"coordinator_address": "localhost:1234", "num_processes": 2}, {},
   "--process_id missing"),
  ({}, dict(coordinator_address="localhost:1234", num_processes=2, process_id=2),
   "--process_id=2 is out of range for --num_processes=2"),
  ({"num_processes": 4}, dict(coordinator_address="h:1", num_processes=2, process_id=3),
   "out of range for --num_processes=2"),  # the flag wins over the config
  ({}, dict(coordinator_address="h:1", num_processes=0, process_id=0), "must be >= 1"),
  ({}, dict(coordinator_address="localhost", num_processes=2, process_id=0), "HOST:PORT"),
  ({}, dict(coordinator_address="h:99999", num_processes=2, process_id=0), "HOST:PORT"),
  ({"mode": "off"}, dict(coordinator_address="h:1", num_processes=2, process_id=0),
   "mode='off' forbids"),
  ({"mode": "on"}, {}, "mode must be one of"),
  ({"initialization_timeout_s": 0}, {}, "initialization_timeout_s must be a positive"),
])
def test_flag_validation(fields: dict, flags: dict, message: str) -> None:
  dist = default.get_config().distributed
  dist.update(fields)
  with pytest.raises(ValueError, match=message.replace("$", "\\$")):
    distributed.initialize(dist, **flags)


def test_config_fingerprint_ignores_process_id_only() -> None:
  a, b = default.get_config(), default.get_config()
  b.distributed.process_id = 3
  assert distributed.config_fingerprint(a) == distributed.config_fingerprint(b)
  b.model.factors += 1
  assert distributed.config_fingerprint(a) != distributed.config_fingerprint(b)


# ---------------------------------------------------------------- real processes


def test_unreachable_coordinator_fails_with_a_clear_message() -> None:
  address = f"127.0.0.1:{free_port()}"  # nobody listens there
  [result] = run_workers(2, 2, address=address, indices=[1])
  assert result.returncode != 0
  assert f"Could not reach the coordinator at {address} within 2s" in result.stderr
  assert "process 1 of 2" in result.stderr


def test_missing_processes_fail_with_a_clear_message() -> None:
  # Process 0 alone: jax would abort with a bare DEADLINE_EXCEEDED; we explain and exit 1.
  [result] = run_workers(2, 2, indices=[0])
  assert result.returncode == 1, result.stderr[-2000:]
  assert "did not complete within 2s" in result.stderr
  assert "not all processes joined" in result.stderr


def test_two_processes_over_localhost() -> None:
  results = run_workers(2, 30, "mutate")
  for i, r in enumerate(results):
    assert r.returncode == 0, f"process {i}:\n{r.stderr[-3000:]}"
    assert "SUM 3" in r.stdout
    assert "SAME_CONFIG_OK" in r.stdout
    # Both processes learn that process 1 disagrees, so neither hangs.
    assert "MISMATCH: process 1 has a different config" in r.stdout, r.stdout


def test_two_processes_auto_detected_from_a_slurm_step() -> None:
  # What srun sets for a 2-task step on this host; jax derives the coordinator from it.
  port = str(free_port())
  step = lambda i: {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "localhost",
                    "SLURM_NTASKS": "2", "SLURM_PROCID": str(i), "SLURM_LOCALID": str(i),
                    "JAX_COORDINATOR_PORT": port}
  results = run_workers(2, 30, address="auto", env_of=step)
  for i, r in enumerate(results):
    assert r.returncode == 0, f"process {i}:\n{r.stderr[-3000:]}"
    assert "SUM 3" in r.stdout
