"""Fractal-expanded MovieLens sizes (ml-20mx16x32, MLPerf v1): 2,197,225 users, 855,776 items.

  python -m ncf_jax.benchmark --config=configs/bench/fractal.py

MLPerf's NeuMF (factors 64, MLP 256-256-128-64) with sparse tables: only the rows a batch
touched are read and updated. Row-wise Adagrad (one float of state per row: 2.2 GiB of
tables and slots) and sparse Adam (two moments and a step count per row: 6.8 GiB) on one
device; sparse Adam again on 8 devices (simulated on CPU: same cores, each device holding an
eighth of the tables, table_mb_per_device). Batch 65,536, Zipf-distributed ids (the
expanded data keeps MovieLens's power-law popularity).
"""

from configs.bench.common import measurement, suite


def get_config():
  shape = dict(factors=64, mlp_layers=(256, 256, 128, 64), num_users=2_197_225,
               num_items=855_776, batch_size=65_536, steps_per_call=4, timed_calls=5)
  return suite(
    fractal_1dev_adagrad=measurement(optimizer="adagrad", devices=1, **shape),
    fractal_1dev_adam=measurement(optimizer="adam", devices=1, **shape),
    fractal_8dev_adam=measurement(optimizer="adam", devices=8, **shape),
  )
