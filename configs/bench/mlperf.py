"""MLPerf v0.5 NCF shape on ML-20M sizes: NeuMF, factors 64, MLP 256-256-128-64, dense Adam.

  python -m ncf_jax.benchmark --config=configs/bench/mlperf.py

138,493 users and 26,744 items (ML-20M), Zipf-distributed ids, batch 65,536 and 1,048,576
(MLPerf's). Dense Adam over the whole tables, as the reference; the fraction of the matmul
ceiling is the headline number (the MLP is 99% of the model's FLOPs). mlperf_b1048576_mb65536
is the same step with its gradient accumulated over 65,536-row slices (train.microbatch_size):
the activations of one slice at a time, for a batch whose activations would not fit.
"""

from configs.bench.common import measurement, suite


def get_config():
  shape = dict(factors=64, mlp_layers=(256, 256, 128, 64), num_users=138_493, num_items=26_744,
               optimizer="dense_adam")
  accumulated = measurement(batch_size=1_048_576, steps_per_call=1, timed_calls=3, **shape)
  accumulated.train.microbatch_size = 65_536  # the same step, its gradient in 16 slices
  return suite(
    mlperf_b65536=measurement(batch_size=65_536, steps_per_call=5, timed_calls=5, **shape),
    mlperf_b1048576=measurement(batch_size=1_048_576, steps_per_call=1, timed_calls=3, **shape),
    mlperf_b1048576_mb65536=accumulated,
  )
