"""The benchmark command end to end on a tiny config: valid JSON lines, sane values, a table."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp

from ncf_jax import benchmark

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_prints_one_json_line_per_measurement_then_a_table():
  proc = subprocess.run(
    [sys.executable, "-m", "ncf_jax.benchmark", "--config=configs/bench/smoke.py"],
    cwd=REPO, capture_output=True, text=True, timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.splitlines()
  records = [json.loads(line) for line in lines if line.startswith("{")]
  assert [r["name"] for r in records] == ["smoke_dense", "smoke_sparse_2dev"]
  for r in records:
    missing = set(benchmark.RESULT_KEYS) - set(r)
    assert not missing, missing
    assert r["model"] == "neumf" and r["batch_size"] == 64
    assert (r["vocab_users"], r["vocab_items"]) == (1000, 500)
    assert r["step_ms"] > 0 and r["compile_s"] > 0 and r["peak_rss_mb"] > 0
    # samples/s and FLOP/s follow from the step time; the fraction from the ceiling.
    assert abs(r["samples_per_sec"] * r["step_ms"] / 1e3 - 64) < 1e-6 * 64
    flops = r["model_flops_per_sample"] * r["samples_per_sec"] / 1e12
    assert abs(r["model_tflops_per_sec"] - flops) <= 1e-9 + 1e-6 * flops
    assert r["matmul_ceiling_tflops"] > 0 and r["copy_ceiling_gbps"] > 0
    assert 0 < r["fraction_of_ceiling"] < 2
    assert r["mean_loss"] > 0
  dense, sparse = records
  assert (dense["devices"], dense["optimizer"]) == (1, "dense_adam")
  assert (sparse["devices"], sparse["optimizer"]) == (2, "adam")
  # Tables are split over the devices: each holds about half of them.
  assert abs(sparse["table_mb_per_device"] * 2 - sparse["table_mb_total"]) < 1e-6
  assert dense["table_mb_per_device"] == dense["table_mb_total"]
  # The table follows the JSON lines: a header, then one row per measurement.
  table = [line for line in lines if not line.startswith("{")]
  assert table[0].split()[:3] == ["name", "model", "users"]
  assert [row.split()[0] for row in table[1:]] == ["smoke_dense", "smoke_sparse_2dev"]


def test_child_env_sets_the_simulated_device_count():
  env = benchmark.child_env(8)
  assert "--xla_force_host_platform_device_count=8" in env["XLA_FLAGS"].split()
  assert env["XLA_FLAGS"].count("device_count") == 1  # replaces the caller's count
  assert "hugetlb" not in env.get("GLIBC_TUNABLES", "")
  assert "glibc.malloc.hugetlb=1" in benchmark.child_env(1, huge_pages=True)["GLIBC_TUNABLES"]


def test_profile_dir_records_a_trace_and_a_summary_by_kind_of_op(tmp_path):
  proc = subprocess.run(
    [sys.executable, "-m", "ncf_jax.benchmark", "--config=configs/bench/smoke.py",
     "--only=smoke_dense", "--noceilings", f"--profile_dir={tmp_path}"],
    cwd=REPO, capture_output=True, text=True, timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  record = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("{")))
  assert record["matmul_ceiling_tflops"] is None  # --noceilings
  by_kind = record["profile"]["ms_per_step_by_kind"]
  assert by_kind["matmul"] > 0 and by_kind["scatter"] > 0  # the MLP; dense Adam's scatter-add
  assert all(op["kind"] in by_kind for op in record["profile"]["top_ops"])
  assert list(tmp_path.glob("smoke_dense/**/*.trace.json.gz"))


def test_step_matmuls_finds_every_dot_with_its_shapes_fused_or_not():
  def f(x, w, y):  # a layer's forward, its weight gradient, and the forward again
    return x @ w, x.T @ y, jnp.maximum(x @ w, 0.0)

  args = (jnp.ones((256, 32)), jnp.ones((32, 16)), jnp.ones((256, 16)))
  dots = benchmark.step_matmuls(jax.jit(f).lower(*args).compile().as_text())
  forward = ((256, 32), (32, 16), "f32", (((1,), (0,)), ((), ())))
  weight_grad = ((256, 32), (256, 16), "f32", (((0,), (0,)), ((), ())))
  assert set(dots) == {forward, weight_grad}, dots  # XLA computes x @ w once
  assert sum(dots.values()) == 2
  seconds = benchmark.matmuls_alone_s(dots, jax.devices()[0], tries=2)
  assert 0 < seconds < 1


def test_matmul_bound_is_reported_for_one_device():
  proc = subprocess.run(
    [sys.executable, "-m", "ncf_jax.benchmark", "--config=configs/bench/smoke.py",
     "--only=smoke_dense", "--matmul_bound"],
    cwd=REPO, capture_output=True, text=True, timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  record = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("{")))
  # NeuMF's tower of 3 layers (forward, input and weight gradients) and its output layer.
  assert record["step_matmuls"] >= 9
  assert 0 < record["matmul_alone_ms"]
  bound = record["model_flops_per_sample"] * 64 / (record["matmul_alone_ms"] / 1e3) / 1e12
  assert abs(record["matmul_bound_tflops"] - bound) <= 1e-6 * bound
  fraction = record["matmul_bound_fraction"]
  assert abs(fraction * record["matmul_ceiling_tflops"] - bound) <= 1e-6 * bound
