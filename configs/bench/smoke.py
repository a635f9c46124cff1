"""A tiny benchmark for tests and a quick look: two measurements in ~20 s on a 2-core CPU.

  python -m ncf_jax.benchmark --config=configs/bench/smoke.py
"""

from configs.bench.common import measurement, suite


def get_config():
  tiny = dict(factors=4, mlp_layers=(16, 8, 4), num_users=1000, num_items=500, batch_size=64,
              steps_per_call=20, timed_calls=2)
  return suite(
    smoke_dense=measurement(optimizer="dense_adam", devices=1, **tiny),
    smoke_sparse_2dev=measurement(optimizer="adam", devices=2, zipf_exponent=0.0, **tiny),
  )
