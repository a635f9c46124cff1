"""Step time against vocabulary size: sparse optimizers stay flat, dense Adam grows.

  python -m ncf_jax.benchmark --config=configs/bench/vocab_sweep.py
  python -m ncf_jax.benchmark --config=configs/bench/vocab_sweep.py --only=1dev_adam_   # one device

NeuMF (factors 16, MLP 32-16-8: four tables of width 16), batch 65,536, ids uniform over
the whole vocabulary (every row can be touched), users = items = 10^5, 10^6, 10^7. Each size
runs with the sparse optimizers (row-wise Adagrad, sparse Adam, SGD) and dense Adam, on one
device and on 8 (simulated on CPU: same cores, tables split eight ways; table_mb_per_device
is then 1/8 of table_mb_total). At 10^7 the tables are 2.4 GiB, 7.3 GiB with Adam's slots.
"""

from configs.bench.common import measurement, suite

SIZES = (100_000, 1_000_000, 10_000_000)
OPTIMIZERS = ("adagrad", "adam", "sgd", "dense_adam")


def get_config():
  runs = {}
  for devices in (1, 8):
    for optimizer in OPTIMIZERS:
      for size in SIZES:
        # Names sort (the order they run in) by devices, optimizer, then size.
        runs[f"vocab_{devices}dev_{optimizer}_{size:.0e}".replace("+0", "")] = measurement(
          factors=16, mlp_layers=(32, 16, 8), num_users=size, num_items=size,
          batch_size=65_536, optimizer=optimizer, zipf_exponent=0.0, devices=devices,
          steps_per_call=4, timed_calls=5,
        )
  return suite(**runs)
