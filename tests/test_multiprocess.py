"""Multi-host code path on one machine: launch/local_multiprocess.sh, 2 processes x 2 CPU devices.

Against one process with the same 4 devices (mesh (4, 1), same config and seed): equal
metrics, checkpoints that restore on another topology (1 process, 1 device), and SIGTERM to
the launcher (or to one process) stopping every process at the same step, exit 0, resume.
Every run is a subprocess with its own XLA_FLAGS device count, as a real launch would be.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from ncf_jax import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(REPO, "launch", "local_multiprocess.sh")
TIMING_KEYS = ("samples_per_sec", "train_s", "eval_s", "wall_s")
# The tiny config with 1 negative per positive: 100,226 positives x 2 // 1024 = 195 steps per
# epoch, so two epochs are a few hundred steps with a checkpoint in between.
STEPS = 195
OVERRIDES = {"train.num_negatives": 1, "train.num_epochs": 2}
TIMEOUT_S = 240

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc and runs the bash launcher")


def _flags(workdir, cache, **overrides) -> list[str]:
  flags = {**OVERRIDES, "data.cache_dir": cache, **overrides}
  return ["--config=configs/test.py", f"--workdir={workdir}",
          *(f"--config.{k}={v}" for k, v in flags.items())]


def _env(cache, devices: int | None = None) -> dict:
  """The environment of a run: CPU only, and `devices` devices unless the launcher sets them."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # conftest's 8 devices
  env.update(JAX_PLATFORMS="cpu", PYTHON=sys.executable, PYTHONUNBUFFERED="1")
  # Runs after the first reuse its compiled programs (beside the data cache, so one per
  # test session): ~5 s less CPU per run on 2 cores.
  env.update(JAX_COMPILATION_CACHE_DIR=os.path.join(os.path.dirname(cache), "jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  if devices is not None:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def _launch_command(workdir, cache, log_dir, **overrides) -> list[str]:
  return [LAUNCHER, "2", "--devices_per_process=2", f"--log_dir={log_dir}",
          *_flags(workdir, cache, **overrides)]


def _launch(workdir, cache, log_dir, **overrides) -> subprocess.CompletedProcess:
  """The 2-process run through the real launcher; asserts that it succeeded."""
  done = subprocess.run(_launch_command(workdir, cache, log_dir, **overrides), cwd=REPO,
                        env=_env(cache), capture_output=True, text=True, timeout=TIMEOUT_S)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:] + _logs(log_dir)
  return done


def _main(workdir, cache, devices, **overrides) -> subprocess.CompletedProcess:
  """One process with `devices` CPU devices; asserts that it succeeded."""
  command = [sys.executable, "-m", "ncf_jax.main", *_flags(workdir, cache, **overrides)]
  done = subprocess.run(command, cwd=REPO, env=_env(cache, devices), capture_output=True, text=True,
                        timeout=TIMEOUT_S)
  assert done.returncode == 0, done.stderr[-3000:]
  return done


def _log(log_dir, i) -> str:
  with open(os.path.join(log_dir, f"process_{i}.log")) as f:
    return f.read()


def _logs(log_dir) -> str:
  out = []
  for i in (0, 1):
    try:
      out.append(f"\n--- process {i}:\n" + _log(log_dir, i)[-2000:])
    except OSError:
      pass
  return "".join(out)


def _metrics(workdir) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in f]


def _assert_close(records, expected, atol=1e-5):
  assert [r.keys() for r in records] == [r.keys() for r in expected]
  for got, want in zip(records, expected, strict=True):
    for key, value in want.items():
      assert got[key] == pytest.approx(value, abs=atol), (key, got, want)


def _checkpoint_steps(workdir) -> list[int]:
  return sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())


def _stopped_steps(log_dir) -> list[int]:
  """Per process, the steps at which it logged 'Stopped at step N (preempted)'."""
  return [[int(n) for n in re.findall(r"Stopped at step (\d+) \(preempted\)", _log(log_dir, i))]
          for i in (0, 1)]


def _wait_for(path, text, proc, after=0, timeout=120.0) -> None:
  """Waits until file `path` contains `text` past offset `after`, while `proc` runs."""
  deadline = time.time() + timeout
  while True:
    try:
      with open(path) as f:
        if text in f.read()[after:]:
          return
    except FileNotFoundError:
      pass
    assert proc.poll() is None, f"exited with {proc.returncode} before {text!r}"
    assert time.time() < deadline, f"no {text!r} in {path} within {timeout}s"
    time.sleep(0.05)


def _stop(proc) -> None:
  """After a failed assertion: SIGTERM lets the launcher stop its processes too."""
  if proc.poll() is None:
    proc.terminate()
    try:
      proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
      proc.kill()


def _child_pid(parent: int, arg: str) -> int:
  """The pid of the child of `parent` whose command line has `arg` (from /proc)."""
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
      with open(f"/proc/{entry}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    except (OSError, IndexError, ValueError):
      continue
    if ppid == parent and arg.encode() in argv:
      return int(entry)
  raise AssertionError(f"no child of {parent} with {arg}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The 2-process run (which also prepares the data cache) and the 1-process 4-device run."""
  tmp = tmp_path_factory.mktemp("multiprocess")
  cache = str(tmp / "tfds")  # empty: process 0 prepares it while process 1 waits
  two, one = tmp / "two_processes", tmp / "one_process"
  _launch(two, cache, two / "logs")
  _main(one, cache, devices=4)
  return {"cache": cache, "two": two, "one": one}


def test_two_processes_train_like_one_process_with_the_same_devices(runs):
  logs = runs["two"] / "logs"
  for i in (0, 1):
    assert (f"process_index={i} process_count=2 local_devices=2 global_devices=4"
            in _log(logs, i))
  # Process 0 prepared the data cache; process 1 waited for it and read the prepared files.
  assert "Prepared " in _log(logs, 0) and "Reusing prepared dataset" in _log(logs, 1)
  two, one = _metrics(runs["two"]), _metrics(runs["one"])
  assert [(r["epoch"], r["step"]) for r in two] == [(1, STEPS), (2, 2 * STEPS)]
  assert two[1]["hr@10"] > 0.3  # random ranking among 100 candidates: 0.1
  _assert_close(two, one)
  assert _checkpoint_steps(runs["two"]) == [STEPS, 2 * STEPS]


def test_two_process_checkpoint_reads_whole_on_one_host_and_equals_one_process(runs):
  two = checkpoint.restore_raw(str(runs["two"]), 2 * STEPS)
  one = checkpoint.restore_raw(str(runs["one"]), 2 * STEPS)
  assert jax.tree.structure(two) == jax.tree.structure(one)
  assert int(two["step"]) == 2 * STEPS and int(two["epoch"]) == 2
  assert set(two["tables"]) == {"user_gmf", "item_gmf", "user_mlp", "item_mlp"}
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(two), jax.tree.leaves(one),
                          strict=True):
    name = jax.tree_util.keystr(path)
    assert isinstance(a, np.ndarray), name
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5, err_msg=name)


def test_two_process_checkpoint_resumes_in_one_process_on_one_device(runs, tmp_path):
  workdir = tmp_path / "resumed"
  shutil.copytree(runs["two"], workdir, ignore=shutil.ignore_patterns("logs"))
  done = _main(workdir, runs["cache"], devices=1, **{"train.num_epochs": 3})
  assert f"Resuming at step {2 * STEPS} (epoch 2)" in done.stderr
  resumed = _metrics(workdir)
  assert [r["step"] for r in resumed] == [STEPS, 2 * STEPS, 3 * STEPS]
  assert resumed[:2] == _metrics(runs["two"])
  assert resumed[2]["loss"] < resumed[1]["loss"]
  assert _checkpoint_steps(workdir)[-1] == 3 * STEPS


def test_sigterm_stops_every_process_at_one_step_exits_zero_and_resumes(runs, tmp_path):
  workdir, cache = tmp_path / "preempted", runs["cache"]
  small_calls = {"train.num_epochs": 1, "train.steps_per_call": 10, "train.log_every_steps": 10}

  # 1. SIGTERM to the launcher while epoch 1 trains: it reaches every process.
  out, logs1 = tmp_path / "launcher1.out", tmp_path / "logs1"
  with open(out, "w") as f:
    proc = subprocess.Popen(_launch_command(workdir, cache, logs1, **small_calls), cwd=REPO,
                            env=_env(cache), stdout=f, stderr=subprocess.STDOUT)
  try:
    _wait_for(out, "epoch 1 step", proc)  # process 0's log, teed by the launcher
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=90) == 0, out.read_text()[-3000:] + _logs(logs1)
  finally:
    _stop(proc)
  first = _stopped_steps(logs1)
  assert first[0] == first[1] and len(first[0]) == 1, _logs(logs1)
  n = first[0][0]
  assert 0 < n < STEPS and n % 10 == 0
  assert _checkpoint_steps(workdir) == [n]
  assert not os.path.exists(workdir / "metrics.jsonl") or not _metrics(workdir)

  # 2. Rerun: resumes at n. Then SIGTERM to process 1 alone: process 0 was never signalled,
  # yet both stop at the same later step (the flag is gathered from all processes).
  logs2 = tmp_path / "logs2"
  proc = subprocess.Popen(_launch_command(workdir, cache, logs2, **small_calls), cwd=REPO,
                          env=_env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    _wait_for(logs2 / "process_1.log", f"Resuming at step {n}", proc)
    _wait_for(logs2 / "process_1.log", "epoch 1 step", proc)
    os.kill(_child_pid(proc.pid, "--process_id=1"), signal.SIGTERM)
    assert proc.wait(timeout=90) == 0, _logs(logs2)
  finally:
    _stop(proc)
  assert f"Resuming at step {n} (epoch 0)" in _log(logs2, 0)
  assert "Received signal" not in _log(logs2, 0)
  second = _stopped_steps(logs2)
  assert second[0] == second[1] and len(second[0]) == 1, _logs(logs2)
  m = second[0][0]
  assert n < m < STEPS
  assert _checkpoint_steps(workdir) == [n, m]

  # 3. Finish in one process on the same 4 devices (a fresh launcher run costs ~15 s more on
  # 2 cores): epoch 1 ends with the uninterrupted run's metrics.
  done = _main(workdir, cache, devices=4, **small_calls)
  assert f"Resuming at step {m} (epoch 0)" in done.stderr
  _assert_close(_metrics(workdir), _metrics(runs["two"])[:1])
