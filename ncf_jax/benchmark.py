"""Throughput of the real train step, against the hardware's measured ceilings.

  python -m ncf_jax.benchmark --config=configs/bench/paper.py [--only=REGEX]

A benchmark config (configs/bench/*.py) holds `measurements`: name -> a full training config
(configs/default.py's fields) plus a `bench` block (devices, steps per call, calls). Each
measurement runs in its own process, so that its device count (simulated CPU devices) and its
peak RSS are its own, and:

  1. builds the model, optimizer and train state exactly as `train.train_and_evaluate` does,
     with the vocabulary of `data.synthetic` (ids drawn on the device by data.synthetic);
  2. compiles `train.make_train_steps(train.make_train_step(...))`, the function main runs,
     ahead of time (`compile_s`);
  3. runs `bench.warmup_calls + bench.timed_calls` calls of `bench.steps_per_call` steps each
     over consecutive windows of one device-resident "epoch", as main does, blocking on the
     state after every call; step time is the median over the timed calls;
  4. measures the device's ceilings in the same process, one sample (the fastest of 3 calls)
     after each timed call, so other processes' load hits both alike: a large matmul's
     FLOP/s (in the model's compute dtype) and a large in-place elementwise update's bytes/s
     (read + write); fraction_of_ceiling = achieved model FLOP/s / the median sample.

Each measurement prints one JSON line on stdout (keys in `RESULT_KEYS`, plus more); a table
follows. Logs go to stderr. `--repeats=N` runs every measurement N times round-robin and
reports the run with the median step time (this project's CPUs are shared: see
BENCHMARKS.md). Measurement processes get transparent huge pages for large allocations
(`--huge_pages`, on by default), which on a CPU host cut the TLB misses of random rows in
large tables; set GLIBC_TUNABLES=glibc.malloc.hugetlb=1 to run main the same way.
"""

from __future__ import annotations

import glob
import gzip
import json
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from ncf_jax import checkpoint, models, sharding, train, two_tower
from ncf_jax.data import sampling, synthetic
from ncf_jax.data.dataset import Dataset

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Benchmark config file (configs/bench/*.py).",
                                lock_config=True)
flags.DEFINE_string("only", "", "Run only the measurements whose name matches this regex.")
flags.DEFINE_string("measurement", "", "Internal: run this one measurement in this process.")
flags.DEFINE_boolean("ceilings", True, "Measure the matmul and copy ceilings.")
flags.DEFINE_integer("timeout_s", 3600, "Per-measurement time limit (seconds).")
flags.DEFINE_boolean("huge_pages", True, "Run measurements with transparent huge pages for "
                     "large allocations (GLIBC_TUNABLES=glibc.malloc.hugetlb=1): fewer TLB "
                     "misses on random rows of large tables (CPU hosts).")
flags.DEFINE_string("profile_dir", "", "Also record a jax.profiler trace of one extra call of "
                    "train steps per measurement, in PROFILE_DIR/<name> (TensorBoard, Perfetto).")
flags.DEFINE_boolean("matmul_bound", False, "Also time every matmul of the compiled step alone "
                     "(one device, no microbatches): the step's time if it were only its "
                     "matmuls, and the fraction of the ceiling that allows.")
flags.DEFINE_integer("repeats", 1, "Run every measurement this many times, round-robin (each in a "
                     "fresh process), and report the run with the median step time.")
flags.mark_flags_as_required(["config"])

# Keys every result line has (tests check them).
RESULT_KEYS = (
  "name", "model", "vocab_users", "vocab_items", "batch_size", "devices", "optimizer", "dtype",
  "step_ms", "samples_per_sec", "model_flops_per_sample", "model_tflops_per_sec",
  "matmul_ceiling_tflops", "fraction_of_ceiling", "copy_ceiling_gbps", "compile_s",
  "peak_rss_mb", "table_mb_per_device",
)
_DEVICE_FLAG = "--xla_force_host_platform_device_count"
_HUGE_PAGES = "glibc.malloc.hugetlb=1"


# ---------------------------------------------------------------------------- ceilings


def fastest_s(call: Callable[[], Any], tries: int) -> float:
  """Wall seconds of the fastest of `tries` calls of `call` (which blocks until done)."""
  best = math.inf
  for _ in range(tries):
    start = time.perf_counter()
    call()
    best = min(best, time.perf_counter() - start)
  return best


class Ceilings:
  """The device's limits, sampled between timed train calls (see `sample`).

  matmul: a square n x n matmul in the model's compute dtype (n = 2048 on CPU, 8192
  elsewhere), FLOP/s. copy: an in-place `x + 1` over a float32 buffer far larger than the
  caches (256 MB on CPU, 2 GB elsewhere), bytes/s counting the read and the write.
  Simulated CPU devices share one host's cores, so on CPU the ceiling is the host's;
  on accelerators it is one device's times the device count.
  """

  def __init__(self, devices, dtype: str):
    device = devices[0]
    cpu = device.platform == "cpu"
    self.scale = 1 if cpu else len(devices)
    self.dtype = dtype
    n = 2048 if cpu else 8192
    jdtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
    key_a, key_b = jax.random.split(jax.random.key(0))
    self._a = jax.device_put(jax.random.normal(key_a, (n, n), jnp.float32).astype(jdtype), device)
    self._b = jax.device_put(jax.random.normal(key_b, (n, n), jnp.float32).astype(jdtype), device)
    # Several matmuls per call on accelerators, so launch overhead does not count.
    inner = 1 if cpu else 10
    self._matmul_flops = 2.0 * n**3 * inner
    self._matmul = jax.jit(lambda a, b: jax.lax.fori_loop(
      0, inner, lambda i, x: (x @ b) * jnp.asarray(1e-3, jdtype), a))
    # Donated, so the update is in place (as the optimizer's) and touches no fresh pages.
    self._x = jax.device_put(jnp.zeros(((256 if cpu else 2048) << 18,), jnp.float32), device)
    self._copy = jax.jit(lambda x: x + 1.0, donate_argnums=0)
    self.matmul_flops_per_s: list[float] = []
    self.copy_bytes_per_s: list[float] = []
    self.sample(record=False)  # compile and warm up

  def sample(self, record: bool = True, tries: int = 3) -> None:
    """Times the matmul and the copy, the fastest of `tries` calls each: work a train call
    leaves behind (freeing gigabytes of temporaries) must not pass for the device's limit."""
    matmul_s = fastest_s(lambda: self._matmul(self._a, self._b).block_until_ready(), tries)

    def copy():
      self._x = self._copy(self._x).block_until_ready()

    copy_s = fastest_s(copy, tries)
    if record:
      self.matmul_flops_per_s.append(self.scale * self._matmul_flops / matmul_s)
      self.copy_bytes_per_s.append(self.scale * 2.0 * self._x.nbytes / copy_s)

  def report(self) -> dict[str, Any]:
    return {
      "matmul_ceiling_tflops": statistics.median(self.matmul_flops_per_s) / 1e12,
      "matmul_ceiling_tflops_max": max(self.matmul_flops_per_s) / 1e12,
      "copy_ceiling_gbps": statistics.median(self.copy_bytes_per_s) / 1e9,
      "ceiling_dtype": self.dtype,
    }


# ---------------------------------------------------------------------------- inputs


def vocab_dataset(config):
  """A Dataset with `data.synthetic`'s vocabulary and no interactions (the model needs sizes).

  A two-tower with side features gets random ML-1M-shaped features (data.synthetic).
  """
  s = config.data.synthetic
  empty = np.zeros((0,), np.int32)
  side = {}
  if config.model.name == "two_tower" and config.model.use_side_features:
    side = synthetic.side_features(s.num_users, s.num_items, s.seed)
  return Dataset(
    train_users=empty, train_items=empty, train_timestamps=empty.astype(np.int64),
    test_users=empty, test_items=empty, test_negatives=np.zeros((0, 1), np.int32),
    num_users=s.num_users, num_items=s.num_items,
    user_ids=np.arange(s.num_users, dtype=np.int64),
    item_ids=np.arange(s.num_items, dtype=np.int64), name="benchmark-vocabulary", **side,
  )


def make_batches(config, mesh, num_steps: int):
  """users, items int32[S, B] (data.synthetic's distribution), labels f32[S, B], on the device.

  A label is 1 with probability 1 / (1 + num_negatives), the positive rate of a real epoch.
  Sharded like main's epoch arrays (`sampling.epoch_sharding`).
  """
  s, batch = config.data.synthetic, config.train.batch_size
  out = sampling.epoch_sharding(mesh)

  @jax.jit
  def draw(key):
    key_u, key_i, key_l = jax.random.split(key, 3)
    shape = (num_steps, batch)
    users = synthetic.zipf_ids(key_u, shape, s.num_users, s.zipf_exponent)
    items = synthetic.zipf_ids(key_i, shape, s.num_items, s.zipf_exponent)
    labels = jax.random.bernoulli(key_l, 1.0 / (1 + config.train.num_negatives), shape)
    constrain = lambda a: jax.lax.with_sharding_constraint(a, out)
    return constrain(users), constrain(items), constrain(labels.astype(jnp.float32))

  return draw(jax.random.key(s.seed))


def model_flops_per_sample(config) -> float:
  """Training FLOPs per sample: models.model_flops_per_sample, plus the in-batch softmax's
  B x B logits (2 * D * B per sample forward, x3 with the backward) when train.loss='softmax'.
  """
  flops = models.model_flops_per_sample(config)
  if config.train.loss == "softmax":
    flops += 3.0 * 2 * config.model.tower_layers[-1] * config.train.batch_size
  return flops


def _shard_bytes(tree, device) -> int:

  return sum(s.data.nbytes for leaf in jax.tree.leaves(tree) for s in leaf.addressable_shards
             if s.device == device)


def _anon_huge_pages_mb() -> float | None:
  """This process's memory in transparent huge pages (Linux), MB; None where unknown."""
  try:
    with open("/proc/self/smaps_rollup") as f:
      for line in f:
        if line.startswith("AnonHugePages:"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return None


# ---------------------------------------------------------------------------- profiles

# What an XLA op does, from the opcodes inside it (first match wins).
_OP_KINDS = (
  ("matmul", {"dot", "convolution"}),
  ("sort", {"sort"}),
  ("scatter", {"scatter"}),
  ("gather", {"gather"}),
  ("collective", {"all-gather", "reduce-scatter", "all-reduce", "all-to-all",
                  "collective-permute"}),
  ("reduce", {"reduce", "reduce-window"}),
  ("copy", {"copy"}),
)


def _op_kinds(hlo_text: str) -> dict[str, str]:
  """Instruction name -> what it does (matmul, sort, scatter, gather, ..., elementwise)."""
  computations: dict[str, list[tuple[str, str, str]]] = {}
  current = None
  for line in hlo_text.splitlines():
    if line and not line.startswith(" ") and line.rstrip().endswith("{"):
      current = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
      computations[current] = []
    elif current and " = " in line:
      match = re.search(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*? ([\w\-]+)\(", line)
      if match:
        computations[current].append((match.group(1), match.group(2), line))

  def opcodes(computation: str, depth: int = 0) -> set[str]:
    out = set()
    for _, opcode, line in computations.get(computation, []):
      out.add(opcode)
      if depth < 4:
        for called in re.findall(r"(?:calls|to_apply)=%?([\w.\-]+)", line):
          out |= opcodes(called, depth + 1)
    return out

  kinds = {}
  for instructions in computations.values():
    for name, opcode, line in instructions:
      ops = {opcode}
      for called in re.findall(r"calls=%?([\w.\-]+)", line):
        ops |= opcodes(called)
      if opcode in ("while", "call", "conditional"):
        continue  # control flow: its body's ops are counted one by one
      kind = "matmul" if name.startswith("ynn_fusion") else None
      kinds[name] = kind or next((k for k, codes in _OP_KINDS if ops & codes), "elementwise")
  return kinds


def profile_summary(trace_dir: str, hlo_text: str, steps: int, top: int = 8) -> dict[str, Any]:
  """ms per step by kind of op, and the top ops, from a jax.profiler trace of one call.

  On CPU every XLA op (a fusion, a matmul, a sort, ...) is one trace event named after its
  HLO instruction; `hlo_text` (the compiled train steps) says what each one does. Times are
  summed per op over the call and divided by `steps`; ops that run in parallel both count,
  so the sum can exceed the step time, and tracing itself slows small ops down.
  """
  kinds = _op_kinds(hlo_text)
  per_op: dict[str, float] = {}
  for path in glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True):
    with gzip.open(path) as f:
      for event in json.load(f).get("traceEvents", []):
        if event.get("ph") == "X" and event.get("name") in kinds:
          per_op[event["name"]] = per_op.get(event["name"], 0.0) + event["dur"] / 1e3 / steps
  by_kind: dict[str, float] = {}
  for op, ms in per_op.items():
    by_kind[kinds[op]] = by_kind.get(kinds[op], 0.0) + ms
  ranked = sorted(per_op.items(), key=lambda kv: -kv[1])[:top]
  return {
    "ms_per_step_by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
    "top_ops": [{"op": op, "kind": kinds[op], "ms_per_step": ms} for op, ms in ranked],
  }


# ---------------------------------------------------------------------------- matmuls alone

_SHAPE = re.compile(r"%([\w.\-]+) = (\w+)\[([\d,]*)\]")
_DOT = re.compile(r"%[\w.\-]+ = \w+\[[\d,]*\]\S* dot\(%([\w.\-]+), %([\w.\-]+)\)([^\n]*)")
_DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16, "f16": jnp.float16}


def step_matmuls(hlo_text: str) -> dict[tuple, int]:
  """Every dot of a compiled computation, fused or not: (lhs shape, rhs shape, dtype,
  dimension numbers) -> how many times it appears."""
  shapes = {m.group(1): (m.group(2), tuple(int(d) for d in m.group(3).split(",") if d))
            for m in _SHAPE.finditer(hlo_text)}

  def dims(attrs: str, key: str) -> tuple[int, ...]:
    found = re.search(key + r"=\{([\d,]*)\}", attrs)
    return tuple(int(d) for d in found.group(1).split(",") if d) if found else ()

  dots: dict[tuple, int] = {}
  for lhs, rhs, attrs in _DOT.findall(hlo_text):
    numbers = ((dims(attrs, "lhs_contracting_dims"), dims(attrs, "rhs_contracting_dims")),
               (dims(attrs, "lhs_batch_dims"), dims(attrs, "rhs_batch_dims")))
    key = (shapes[lhs][1], shapes[rhs][1], shapes[lhs][0], numbers)
    dots[key] = dots.get(key, 0) + 1
  return dots


def matmuls_alone_s(dots: dict[tuple, int], device, tries: int = 5) -> float:
  """Seconds the dots take, each compiled and timed alone on `device` (fastest of `tries`)."""
  total = 0.0
  for (lhs, rhs, dtype, numbers), count in dots.items():
    a = jax.device_put(jnp.ones(lhs, _DTYPES[dtype]), device)
    b = jax.device_put(jnp.ones(rhs, _DTYPES[dtype]), device)
    dot = jax.jit(lambda a, b, numbers=numbers: jax.lax.dot_general(a, b, numbers))
    dot(a, b).block_until_ready()  # compile
    total += count * fastest_s(lambda: dot(a, b).block_until_ready(), tries)  # noqa: B023 (called now)
  return total


# ---------------------------------------------------------------------------- one measurement


def run_measurement(name: str, config, measure_ceilings: bool = True,
                    profile_dir: str = "", matmul_bound: bool = False) -> dict[str, Any]:
  """Times the real train step of `config` in this process; returns its result record.

  With `profile_dir`, one more call is traced with jax.profiler into profile_dir/name. With
  `matmul_bound` (one device, no microbatches), every dot of the step is also timed alone:
  `matmul_alone_ms` per step, and `matmul_bound_fraction`, the fraction of the ceiling the
  step would reach if it did nothing but those matmuls.
  """
  b = config.bench
  devices = jax.devices()[: b.devices] if b.devices > 0 else jax.devices()
  if b.devices > len(devices):
    raise ValueError(f"bench.devices={b.devices} but only {len(jax.devices())} devices exist.")
  mesh = sharding.make_mesh(config.mesh, devices)
  train.validate_config(config, mesh)
  # Model, optimizer, state and step exactly as train.train_and_evaluate builds them.
  dataset = vocab_dataset(config)
  model = train.build_model(config, dataset)
  tx = train.dense_optimizer(config)
  state = train.create_train_state(config, model, tx, mesh, dataset)
  side = two_tower.side_inputs(config, dataset, mesh)  # {} unless a two-tower needs them
  calls, per_call = b.warmup_calls + b.timed_calls, b.steps_per_call
  users, items, labels = make_batches(config, mesh, calls * per_call)

  start = time.perf_counter()
  step = train.make_train_step(model, tx, mesh, config.train.loss, config.train.microbatch_size)
  train_steps = train.make_train_steps(step).lower(
    checkpoint.abstract_like(state), users, items, labels, 0, 1, side).compile()
  compile_s = time.perf_counter() - start

  for call in range(b.warmup_calls):
    state = train_steps(state, users, items, labels, call * per_call, (call + 1) * per_call,
                        side)
  jax.block_until_ready(state)
  # The warmup calls have reached the step's peak memory; the ceilings' buffers come after.
  peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  limits = Ceilings(devices, config.model.dtype) if measure_ceilings else None

  # Train calls and ceiling samples alternate, so load from other processes hits both alike.
  times, cpu_times = [], []
  for call in range(b.warmup_calls, calls):
    start, cpu_start = time.perf_counter(), time.process_time()
    state = train_steps(state, users, items, labels, call * per_call, (call + 1) * per_call,
                        side)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - start)
    cpu_times.append(time.process_time() - cpu_start)
    if limits is not None:
      limits.sample()
  loss = float(state.loss_sum) / (calls * per_call)
  profile = None
  if profile_dir:  # one more call, traced: where the step's time goes, op by op
    trace_dir = os.path.join(profile_dir, name)
    with jax.profiler.trace(trace_dir):
      state = train_steps(state, users, items, labels, (calls - 1) * per_call, calls * per_call,
                          side)
      jax.block_until_ready(state)
    profile = profile_summary(trace_dir, train_steps.as_text(), per_call)
  if not np.isfinite(loss):
    raise FloatingPointError(f"{name}: the mean training loss is {loss}.")

  step_s = statistics.median(times) / per_call
  batch = config.train.batch_size
  samples_per_sec = batch / step_s
  flops = model_flops_per_sample(config)
  s = config.data.synthetic
  record = {
    "name": name, "model": config.model.name, "vocab_users": s.num_users,
    "vocab_items": s.num_items, "zipf_exponent": s.zipf_exponent, "batch_size": batch,
    "devices": mesh.devices.size, "platform": devices[0].platform,
    "optimizer": config.embedding.optimizer, "dense_optimizer": config.train.optimizer,
    "dtype": config.model.dtype, "steps_per_call": per_call, "timed_calls": len(times),
    "step_ms": 1e3 * step_s,
    "step_ms_min": 1e3 * min(times) / per_call, "step_ms_max": 1e3 * max(times) / per_call,
    # CPU time of all this process's threads per step: / step_ms = cores kept busy.
    "step_cpu_ms": 1e3 * statistics.median(cpu_times) / per_call,
    "samples_per_sec": samples_per_sec, "model_flops_per_sample": flops,
    "model_tflops_per_sec": flops * samples_per_sec / 1e12, "compile_s": compile_s,
    "peak_rss_mb": peak_rss_mb,
    "table_mb_per_device": _shard_bytes((state.tables, state.slots), devices[0]) / 2**20,
    "table_mb_total": sum(x.nbytes for x in jax.tree.leaves((state.tables, state.slots)))
    / 2**20,
    "mean_loss": loss,
    "profile": profile,
    "huge_pages": _HUGE_PAGES in os.environ.get("GLIBC_TUNABLES", ""),
    "anon_huge_pages_mb": _anon_huge_pages_mb(),
    "matmul_ceiling_tflops": None, "fraction_of_ceiling": None, "copy_ceiling_gbps": None,
  }
  if matmul_bound and mesh.devices.size == 1 and not config.train.microbatch_size:
    # The fori_loop body holds one step, so each dot in the module runs once per step.
    dots = step_matmuls(train_steps.as_text())
    alone_s = matmuls_alone_s(dots, devices[0])
    record["step_matmuls"] = sum(dots.values())
    record["matmul_alone_ms"] = 1e3 * alone_s
    record["matmul_bound_tflops"] = flops * batch / alone_s / 1e12
  if limits is not None:
    record.update(limits.report())
    record["fraction_of_ceiling"] = (record["model_tflops_per_sec"]
                                     / record["matmul_ceiling_tflops"])
    if "matmul_bound_tflops" in record:
      record["matmul_bound_fraction"] = (record["matmul_bound_tflops"]
                                         / record["matmul_ceiling_tflops"])
  return record


# ---------------------------------------------------------------------------- driver


def selected(config, pattern: str) -> list[str]:
  names = list(config.measurements.keys())
  chosen = [n for n in names if re.search(pattern, n)] if pattern else names
  if not chosen:
    raise app.UsageError(f"--only={pattern!r} matches none of {names}.")
  return chosen


def child_env(devices: int, huge_pages: bool = False) -> dict[str, str]:
  """The environment of a measurement's process: XLA_FLAGS asks for `devices` CPU devices;
  with `huge_pages`, glibc's malloc asks the kernel for transparent huge pages
  (madvise(MADV_HUGEPAGE)) on the large blocks that hold tables and optimizer slots.
  """
  env = dict(os.environ)
  flags_ = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(_DEVICE_FLAG)]
  if devices > 0:
    flags_.append(f"{_DEVICE_FLAG}={devices}")
  env["XLA_FLAGS"] = " ".join(flags_)
  tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":")
              if t and not t.startswith(_HUGE_PAGES.split("=")[0])]
  if huge_pages:
    tunables.append(_HUGE_PAGES)
  if tunables:
    env["GLIBC_TUNABLES"] = ":".join(tunables)
  else:
    env.pop("GLIBC_TUNABLES", None)
  return env


def run_child(name: str, config) -> dict[str, Any]:
  """Runs one measurement in a fresh process (own device count, own peak RSS)."""
  argv = [a for a in sys.argv[1:] if not a.startswith(("--only", "--measurement"))]
  cmd = [sys.executable, "-m", "ncf_jax.benchmark", *argv, f"--measurement={name}"]
  try:
    env = child_env(config.measurements[name].bench.devices, FLAGS.huge_pages)
    proc = subprocess.run(cmd, env=env,
                          capture_output=True, text=True, timeout=FLAGS.timeout_s)
  except subprocess.TimeoutExpired:
    return {"name": name, "error": f"timed out after {FLAGS.timeout_s}s"}
  lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
  if proc.returncode or not lines:
    tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
    logging.error("Measurement %s failed (exit %d):\n%s", name, proc.returncode, tail)
    return {"name": name, "error": f"exit {proc.returncode}: {tail.splitlines()[-1:] or ''}"}
  return json.loads(lines[-1])


def median_run(records: list[dict[str, Any]]) -> dict[str, Any]:
  """The run with the median step time, with every run's step time in `step_ms_runs`."""
  ok = sorted((r for r in records if "error" not in r),
              key=lambda r: r["step_ms"])
  if not ok:
    return records[-1]
  record = dict(ok[(len(ok) - 1) // 2])
  if len(records) > 1:
    record["step_ms_runs"] = [r.get("step_ms") for r in records]
  return record


def _fmt(value: Any, spec: str) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "-"
  return format(value, spec)


def table(results: list[dict[str, Any]]) -> str:
  """The results as an aligned text table."""
  columns = [
    ("name", "name", "s"), ("model", "model", "s"), ("users", "vocab_users", ",d"),
    ("items", "vocab_items", ",d"), ("batch", "batch_size", ",d"), ("dev", "devices", "d"),
    ("optimizer", "optimizer", "s"), ("dtype", "dtype", "s"), ("step ms", "step_ms", ".3f"),
    ("samples/s", "samples_per_sec", ",.0f"), ("TFLOP/s", "model_tflops_per_sec", ".4f"),
    ("ceiling", "matmul_ceiling_tflops", ".4f"), ("frac", "fraction_of_ceiling", ".2f"),
    ("GB/s ceil", "copy_ceiling_gbps", ".1f"), ("compile s", "compile_s", ".1f"),
    ("rss MB", "peak_rss_mb", ",.0f"), ("table MB/dev", "table_mb_per_device", ",.1f"),
  ]
  rows = [[h for h, _, _ in columns]]
  for r in results:
    if "error" in r:
      rows.append([r["name"], "error: " + r["error"]] + [""] * (len(columns) - 2))
      continue
    rows.append([_fmt(r.get(k), spec) for _, k, spec in columns])
  widths = [max(len(row[i]) for row in rows if len(row) > i) for i in range(len(columns))]
  return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
                   for row in rows)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  config = FLAGS.config
  if FLAGS.measurement:
    record = run_measurement(FLAGS.measurement, config.measurements[FLAGS.measurement],
                             FLAGS.ceilings, FLAGS.profile_dir, FLAGS.matmul_bound)
    print(json.dumps(record), flush=True)
    return
  names = selected(config, FLAGS.only)
  runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
  # Round-robin, so that a burst of load from other processes spreads over all measurements.
  for repeat in range(FLAGS.repeats):
    for name in names:
      logging.info("Measuring %s (run %d of %d) ...", name, repeat + 1, FLAGS.repeats)
      runs[name].append(run_child(name, config))
      if FLAGS.repeats == 1:  # a long sweep shows each result as soon as it is measured
        print(json.dumps(runs[name][-1]), flush=True)
  results = [median_run(runs[name]) for name in names]
  if FLAGS.repeats > 1:
    for record in results:
      print(json.dumps(record), flush=True)
  print(table(results), flush=True)
  if any("error" in r for r in results):
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
