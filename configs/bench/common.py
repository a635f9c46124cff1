"""Helpers shared by the benchmark configs: one measurement = a training config + a bench block."""

import ml_collections

from configs import default


def measurement(
  *,
  model: str = "neumf",
  factors: int = 8,
  mlp_layers: tuple[int, ...] = (64, 32, 16, 8),
  num_users: int = 6040,
  num_items: int = 3706,
  batch_size: int = 256,
  optimizer: str = "dense_adam",
  dtype: str = "float32",
  zipf_exponent: float = 1.0,
  devices: int = 1,
  steps_per_call: int = 100,
  timed_calls: int = 5,
  warmup_calls: int = 1,
) -> ml_collections.ConfigDict:
  """A training config (configs/default.py) on synthetic ids, plus how to time it.

  bench.devices: devices of the mesh; on CPU, that many simulated devices (0 = all).
  bench.steps_per_call: train steps per jitted call (main's train.steps_per_call).
  bench.warmup_calls / bench.timed_calls: untimed, then timed calls; step time is the median
  of the timed calls divided by steps_per_call.
  """
  config = default.get_config()
  config.data.name = "synthetic"
  s = config.data.synthetic
  s.num_users, s.num_items, s.zipf_exponent = num_users, num_items, zipf_exponent
  config.model.name = model
  config.model.factors = factors
  config.model.mlp_layers = mlp_layers
  config.model.dtype = dtype
  config.embedding.optimizer = optimizer
  config.train.batch_size = batch_size
  config.bench = bench = ml_collections.ConfigDict()
  bench.devices = devices
  bench.steps_per_call = steps_per_call
  bench.timed_calls = timed_calls
  bench.warmup_calls = warmup_calls
  return config


def suite(**measurements: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The benchmark config: `measurements` maps a name to a `measurement(...)`."""
  config = ml_collections.ConfigDict()
  config.measurements = ml_collections.ConfigDict(measurements)
  return config
