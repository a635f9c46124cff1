"""Multi-host start-up: join the JAX distributed system once, before anything touches devices.

`main` calls `initialize(config.distributed, --coordinator_address, --num_processes,
--process_id)` and then `check_same_config(config)`. Three ways to run:

  * explicit: all three flags (or `config.distributed.*` fields) given, e.g. by
    launch/local_multiprocess.sh or the GKE GPU JobSet;
  * auto: no flags, and the environment is a multi-process cluster that jax can bootstrap
    itself from (Open MPI, SLURM `srun`, Cloud TPU VM / GKE TPU, Kubernetes Indexed Job);
  * single process: no flags and no such cluster (a laptop, one GPU box): nothing to join.

jax aborts the whole process (a C++ fatal error, not a Python exception) when the
coordinator cannot be reached or the other processes never show up, so this module checks
reachability itself and arms a watchdog that explains the failure before it happens.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from absl import logging

# Unset sentinels of config.distributed (configs/default.py); flags use None.
_UNSET_ADDRESS = ""
_UNSET_INT = -1
_MODES = ("auto", "off")
# jax gets this much longer than our own deadline, so that our watchdog (which explains
# what went wrong) fires before jax's fatal error (which does not).
_JAX_TIMEOUT_GRACE_S = 5
# Our cluster names -> jax's `cluster_detection_method`, so jax bootstraps from exactly the
# environment we detected (None: jax's K8sCluster has no name; it is found by elimination).
_JAX_DETECTION_METHOD = {
  "openmpi": "ompi",
  "slurm": "slurm",
  "gke_tpu": "gketpu",
  "cloud_tpu_vm": "gcetpu",
  "kubernetes": None,
}
# The variables jax's SlurmCluster needs; srun sets all of them, a bare batch script not.
_SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
               "SLURM_LOCALID")
_CHECK_ADVICE = (
  "Check that every process was started with the same --coordinator_address and "
  "--num_processes and a distinct --process_id in 0..N-1, that none of them crashed (see "
  "their logs), that the coordinator's host resolves and its port is open from every host "
  "(firewall, Kubernetes headless service), and that no HTTP(S)_PROXY variables are set. "
  "If processes start minutes apart, raise --config.distributed.initialization_timeout_s."
)


# ---------------------------------------------------------------- public API


def initialize(dist_config: Any, coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None) -> None:
  """Joins the JAX distributed system if this run has more than one process.

  Args:
    dist_config: `config.distributed` (mode 'auto'|'off', coordinator_address,
      num_processes, process_id, initialization_timeout_s; '' and -1 mean unset).
    coordinator_address, num_processes, process_id: command-line flags; a value that is
      not None overrides the config field of the same name.

  Must run before anything initialises a JAX backend (jax.devices(), an array, a jit).
  Idempotent: a second call only logs. Raises ValueError for inconsistent settings and
  RuntimeError when the coordinator cannot be reached or jax fails to start.
  """
  mode, address, count, index, timeout_s = _resolve(
    dist_config, coordinator_address, num_processes, process_id)
  if jax.distributed.is_initialized():
    logging.info("distributed: already initialised.")
    _log_topology("already initialised")
    return
  if mode == "off":
    _log_topology("config.distributed.mode='off': single process")
    return

  explicit = {"--coordinator_address": address, "--num_processes": count,
              "--process_id": index}
  given = [name for name, value in explicit.items() if value is not None]
  if len(given) == len(explicit):
    _join(address, count, index, timeout_s, cluster=None)
    return
  cluster = detect_cluster()
  if given and cluster is None:
    missing = [name for name in explicit if name not in given]
    raise ValueError(
      f"Multi-process settings are incomplete: {', '.join(given)} given but "
      f"{', '.join(missing)} missing, and no cluster environment (SLURM srun, Open MPI, "
      "Cloud TPU, Kubernetes Indexed Job) was detected to fill them in. Pass all three "
      "flags, e.g. --coordinator_address=HOST0:1234 --num_processes=2 --process_id=0 (or "
      "the config.distributed fields of the same names), or none of them.")
  if cluster is None:
    _log_topology("no cluster environment detected: single process")
    return
  # Values that were given win; jax auto-detects the rest from the cluster environment.
  _join(address, count, index, timeout_s, cluster=cluster)


def detect_cluster(environ: Mapping[str, str] | None = None,
                   on_cloud_tpu_vm: bool | None = None) -> str | None:
  """Names the multi-process cluster jax can bootstrap from, or None for a single process.

  Mirrors jax's own detection (jax/_src/clusters/, same order: the first environment
  present wins) using environment variables only: no network, no kubernetes API calls.
  Returns 'openmpi', 'slurm', 'gke_tpu', 'cloud_tpu_vm' or 'kubernetes'. Cloud TPU VMs
  count even with a single host (jax then forms a one-process cluster, as MaxText does).
  Raises RuntimeError where the environment clearly has several processes but jax could
  not bootstrap them, rather than letting each process train alone.
  """
  env = os.environ if environ is None else environ
  if on_cloud_tpu_vm is None:
    on_cloud_tpu_vm = _running_on_cloud_tpu_vm()

  # Open MPI (jax: OmpiCluster, present when mpirun/mpiexec set the ORTE URI).
  ompi_size = _int_env(env, "OMPI_COMM_WORLD_SIZE")
  if "OMPI_MCA_orte_hnp_uri" in env:
    return "openmpi" if ompi_size > 1 else None
  if ompi_size > 1:
    raise RuntimeError(
      f"Open MPI runs {ompi_size} ranks (OMPI_COMM_WORLD_SIZE) but does not set "
      "OMPI_MCA_orte_hnp_uri, which jax needs to find the coordinator (Open MPI 5 no "
      "longer sets it). Pass --coordinator_address=<rank 0 host>:<port> "
      f"--num_processes={ompi_size} --process_id=$OMPI_COMM_WORLD_RANK.")

  # SLURM (jax: SlurmCluster, present inside an `srun` step).
  if all(name in env for name in _SLURM_VARS):
    return "slurm" if _int_env(env, "SLURM_NTASKS") > 1 else None
  if "SLURM_JOB_ID" in env and _int_env(env, "SLURM_NTASKS") > 1:
    # A batch script calling python directly: every task would be the same single process.
    logging.warning(
      "SLURM job with SLURM_NTASKS=%s, but this process was not started by srun (no "
      "SLURM_STEP_NODELIST/SLURM_PROCID/SLURM_LOCALID): running a single process. Launch "
      "with `srun python -m ncf_jax.main ...` to use all tasks.", env.get("SLURM_NTASKS"))

  # Cloud TPU (jax: GkeTpuCluster, then GceTpuCluster; both need a TPU VM with libtpu).
  if on_cloud_tpu_vm:
    if "TPU_PROCESS_ADDRESSES" in env or "TPU_WORKER_HOSTNAMES" in env:
      return "gke_tpu"
    if "TPU_SKIP_MDS_QUERY" not in env:
      return "cloud_tpu_vm"

  # Kubernetes Indexed Job / JobSet (jax: K8sCluster, needs the `kubernetes` package and
  # RBAC to read its own pod and job; JOB_COMPLETION_INDEX is the process id).
  if "KUBERNETES_SERVICE_HOST" in env and "JOB_COMPLETION_INDEX" in env:
    if importlib.util.find_spec("kubernetes") is not None:
      return "kubernetes"
    message = (
      "a Kubernetes Indexed Job (JOB_COMPLETION_INDEX=%s) without the `kubernetes` package "
      "jax needs to discover the other pods. For several pods, pass --coordinator_address="
      "<jobset>-<replicatedjob>-0-0.<jobset>:<port> --num_processes=N "
      "--process_id=$JOB_COMPLETION_INDEX (see launch/gke/gpu-jobset.yaml) or "
      "`pip install 'jax[k8s]'`.")
    index = _int_env(env, "JOB_COMPLETION_INDEX")
    if index > 0:  # pod 0 may be a Job of one; any other pod certainly is not.
      raise RuntimeError("This pod is " + message % index)
    logging.warning("Running a single process in " + message, index)
  return None


def is_coordinator() -> bool:
  """True on process 0, the one that writes logs, metrics and checkpoint metadata."""
  return jax.process_index() == 0


def config_fingerprint(config: Any) -> str:
  """sha256 of `config.to_json()` with sorted keys, less the fields that differ per process."""
  data = json.loads(config.to_json())
  # A launcher may hand each process its id through the config instead of a flag.
  if isinstance(data.get("distributed"), dict):
    data["distributed"].pop("process_id", None)
  return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def check_same_config(config: Any) -> None:
  """Raises ValueError on every process unless all processes run the same config.

  Processes that disagree (a stale config file on one host, a missing --config.* override
  in one launcher line) would otherwise train with different shapes and hang in the first
  collective. A no-op for a single process. Call after `initialize`, on all processes.
  """
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils

  fingerprint = config_fingerprint(config)
  logging.info("distributed: config fingerprint %s on process %d.", fingerprint[:16],
               jax.process_index())
  local = np.frombuffer(bytes.fromhex(fingerprint), dtype=np.uint32)  # u32[8]
  everyone = np.asarray(multihost_utils.process_allgather(local))  # u32[processes, 8]
  differing = [i for i in range(everyone.shape[0]) if not np.array_equal(everyone[i],
                                                                          everyone[0])]
  if differing:
    which = ", ".join(str(i) for i in differing)
    raise ValueError(
      f"process {which} has a different config than process 0 (config fingerprints "
      "differ). Start every process with the same --config file and the same --config.* "
      "overrides; each process logs its fingerprint at startup.")


# ---------------------------------------------------------------- resolving settings


def _resolve(dist_config: Any, coordinator_address: str | None, num_processes: int | None,
             process_id: int | None) -> tuple[str, str | None, int | None, int | None, int]:
  """Merges flags over config.distributed and validates them (ValueError names the field)."""
  mode = str(dist_config.get("mode", "auto"))
  if mode not in _MODES:
    raise ValueError(f"config.distributed.mode must be one of {_MODES}, got {mode!r}.")
  address = _pick(coordinator_address, dist_config.get("coordinator_address", _UNSET_ADDRESS))
  count = _pick(num_processes, dist_config.get("num_processes", _UNSET_INT))
  index = _pick(process_id, dist_config.get("process_id", _UNSET_INT))
  timeout_s = dist_config.get("initialization_timeout_s", 300)

  if isinstance(timeout_s, bool) or not isinstance(timeout_s, int) or timeout_s < 1:
    raise ValueError("config.distributed.initialization_timeout_s must be a positive "
                     f"number of seconds, got {timeout_s!r}.")
  if address is not None:
    _split_address(address)  # validates
  if count is not None and count < 1:
    raise ValueError(f"--num_processes must be >= 1, got {count}.")
  if index is not None and index < 0:
    raise ValueError(f"--process_id must be >= 0, got {index}.")
  if count is not None and index is not None and index >= count:
    raise ValueError(f"--process_id={index} is out of range for --num_processes={count}: "
                     f"process ids run from 0 to {count - 1}.")
  if mode == "off" and (address, count, index) != (None, None, None):
    raise ValueError(
      "config.distributed.mode='off' forbids multi-process settings, but "
      "--coordinator_address/--num_processes/--process_id (or the config fields) are set. "
      "Drop them, or use mode='auto'.")
  return mode, address, count, index, timeout_s


def _pick(flag: Any, config_value: Any) -> Any:
  """The flag if given, else the config value; '' and -1 (the config's 'unset') give None."""
  value = config_value if flag is None else flag
  if value is None or value == _UNSET_ADDRESS or value == _UNSET_INT:
    return None
  return value


def _split_address(address: str) -> tuple[str, int]:
  """'host:port' or '[ipv6]:port' -> (host, port); ValueError for anything else."""
  host, sep, port = str(address).rpartition(":")
  host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ValueError(f"--coordinator_address must be HOST:PORT (e.g. 10.0.0.1:1234 or "
                     f"localhost:1234), got {address!r}.")
  return host, int(port)


def _int_env(env: Mapping[str, str], name: str) -> int:
  """An integer environment variable; 0 when absent or not a number."""
  try:
    return int(env.get(name, "0"))
  except ValueError:
    return 0


def _running_on_cloud_tpu_vm() -> bool:
  # jax decides this at import (libtpu installed and TPU chips on the PCI bus); there is
  # no public API for it, so read jax's flag and treat any change in jax as "not a TPU VM".
  try:
    from jax._src import cloud_tpu_init
  except ImportError:
    return False
  return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))


# ---------------------------------------------------------------- joining


def _join(address: str | None, count: int | None, index: int | None, timeout_s: int,
          cluster: str | None) -> None:
  """Calls jax.distributed.initialize with clear errors instead of jax's process abort."""
  _check_backend_not_started()
  # Multi-process CPU runs need a cross-process collectives library. gloo is the default
  # from jax 0.4.3x on (and in the pinned 0.10.2); older versions had none.
  if jax.config.jax_cpu_collectives_implementation is None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")

  source = "explicit flags" if cluster is None else f"auto-detected {cluster}"
  where = (f"coordinator {address}" if address else "coordinator chosen by jax") + (
    f", process {index} of {count}" if index is not None and count is not None else "")
  logging.info("distributed: joining (%s; %s; timeout %ds).", source, where, timeout_s)
  if address is not None and index not in (None, 0):
    _wait_for_coordinator(address, count, index, timeout_s)

  watchdog = threading.Timer(timeout_s, _give_up, args=(source, where, timeout_s))
  watchdog.daemon = True
  watchdog.start()
  try:
    jax.distributed.initialize(
      coordinator_address=address, num_processes=count, process_id=index,
      cluster_detection_method=_jax_detection_method(cluster),
      initialization_timeout=timeout_s + _JAX_TIMEOUT_GRACE_S)
  except Exception as e:  # jax raises e.g. when process 0 cannot bind the port
    raise RuntimeError(
      f"jax.distributed.initialize failed ({source}; {where}): {e}. If the port is already "
      f"in use on process 0, pick another one. {_CHECK_ADVICE}") from e
  finally:
    watchdog.cancel()
  _log_topology(source)


def _jax_detection_method(cluster: str | None) -> str | None:
  if cluster is None:
    # All three values are explicit: keep jax from probing cluster environments for the
    # rest (it would restrict GPUs under SLURM/MPI, or warn about Kubernetes in a pod).
    return "deactivate"
  return _JAX_DETECTION_METHOD[cluster]


def _check_backend_not_started() -> None:
  # jax refuses to initialise after a backend exists; say who must change, not just what.
  try:
    from jax._src import xla_bridge
    started = xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):  # private API moved: let jax report it itself
    return
  if started:
    raise RuntimeError(
      "ncf_jax.distributed.initialize() must run before anything touches JAX devices "
      "(jax.devices(), creating an array, jit). Call it first thing in main.")


def _wait_for_coordinator(address: str, count: int | None, index: int, timeout_s: int) -> None:
  """Polls the coordinator's TCP port until it accepts connections or timeout_s passes.

  jax's client aborts the process after its timeout with no hint of what was wrong, so
  processes other than 0 first check that process 0's service is there at all.
  """
  host, port = _split_address(address)
  start = time.monotonic()
  deadline, next_report = start + timeout_s, start + 30
  while True:
    try:
      with socket.create_connection((host, port), timeout=max(0.1, min(2.0, deadline -
                                                                       time.monotonic()))):
        return
    except OSError as e:  # refused, unresolvable (DNS not ready yet), timed out
      last_error = e
    now = time.monotonic()
    if now >= deadline:
      break
    if now >= next_report:
      logging.info("distributed: still waiting for the coordinator at %s (%.0fs): %s",
                   address, now - start, last_error)
      next_report = now + 30
    time.sleep(min(0.5, max(0.0, deadline - now)))
  raise RuntimeError(
    f"Could not reach the coordinator at {address} within {timeout_s}s (this is process "
    f"{index} of {count}; last error: {last_error}). Process 0 runs the coordinator: check "
    f"that it is running and was started with --coordinator_address={address}"
    f"{f' --num_processes={count}' if count else ''} (its log says 'Starting JAX distributed "
    f"service'). {_CHECK_ADVICE}")


def _give_up(source: str, where: str, timeout_s: int) -> None:
  """Watchdog: jax is about to abort this process with a bare DEADLINE_EXCEEDED; explain."""
  message = (
    f"ERROR: jax.distributed.initialize did not complete within {timeout_s}s ({source}; "
    f"{where}): not all processes joined the coordinator. {_CHECK_ADVICE}\n")
  logging.flush()  # earlier log lines first
  # Straight to stderr: a log handler might buffer, and os._exit skips flushing it.
  sys.stderr.write(message)
  sys.stderr.flush()
  # Exit before jax's own fatal error, with a plain failure code rather than SIGABRT.
  os._exit(1)


def _log_topology(how: str) -> None:
  logging.info(
    "distributed: %s. process_index=%d process_count=%d local_devices=%d "
    "global_devices=%d platform=%s", how, jax.process_index(), jax.process_count(),
    jax.local_device_count(), jax.device_count(), jax.devices()[0].platform)
