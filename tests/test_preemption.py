"""SIGTERM (sent by Cloud TPU, GKE and SLURM before preemption) mid-epoch: save, exit 0, resume."""

import json
import os
import signal
import subprocess
import sys
import time

from configs import test as test_config
from ncf_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING_KEYS = ("samples_per_sec", "train_s", "eval_s", "wall_s")
OVERRIDES = {"train.num_epochs": 2, "train.steps_per_call": 10, "train.log_every_steps": 10}


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in f]


def _command(workdir, cache_dir):
  flags = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
  return [sys.executable, "-m", "ncf_jax.main", "--config=configs/test.py", f"--workdir={workdir}",
          f"--config.data.cache_dir={cache_dir}", *flags]


def test_sigterm_mid_epoch_checkpoints_exits_zero_and_resumes_exactly(tmp_path):
  cache = str(tmp_path / "tfds")
  config = test_config.get_config()
  config.data.cache_dir = cache
  for key, value in OVERRIDES.items():
    section, field = key.split(".")
    config[section][field] = value
  reference = str(tmp_path / "reference")
  train.train_and_evaluate(config, reference)  # uninterrupted, and prepares the data cache

  workdir = str(tmp_path / "preempted")
  log_path = tmp_path / "preempted.log"
  with open(log_path, "w") as log:
    proc = subprocess.Popen(_command(workdir, cache), cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    # Wait until training is under way in epoch 1, then preempt.
    while "epoch 1 step" not in log_path.read_text():
      assert proc.poll() is None, log_path.read_text()[-3000:]
      assert time.time() < deadline, "training never started"
      time.sleep(0.05)
    signalled = time.time()
    proc.send_signal(signal.SIGTERM)
    returncode = proc.wait(timeout=60)
  output = log_path.read_text()
  assert returncode == 0, output[-3000:]
  assert time.time() - signalled < 30
  assert "checkpoint saved" in output
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
  assert len(steps) == 1 and steps[0] > 0
  assert not os.path.exists(os.path.join(workdir, "metrics.jsonl")) or not _metrics(workdir)

  resumed = subprocess.run(_command(workdir, cache), cwd=REPO, capture_output=True, text=True,
                           timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"Resuming at step {steps[0]}" in resumed.stderr
  assert _metrics(workdir) == _metrics(reference)
