"""The NCF paper's NeuMF on ML-1M sizes: factors 8, MLP 64-32-16-8, batch 256 and 4,096.

  python -m ncf_jax.benchmark --config=configs/bench/paper.py

6,040 users and 3,706 items (all of ML-1M), Zipf-distributed ids. Dense Adam over the whole
tables (the paper's Keras setup) beside sparse Adam (`embedding.optimizer='adam'`), which
updates only the rows a batch touched.
"""

from configs.bench.common import measurement, suite


def get_config():
  runs = {}
  for batch, per_call in ((256, 2000), (4096, 200)):
    for optimizer in ("dense_adam", "adam"):
      runs[f"paper_b{batch}_{optimizer}"] = measurement(
        batch_size=batch, optimizer=optimizer, steps_per_call=per_call)
  return suite(**runs)
