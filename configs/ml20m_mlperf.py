"""MLPerf v0.5 NCF on ML-20M: factors 64, MLP 256-256-128-64, 999 eval negatives, dense Adam.

  python -m ncf_jax.main --config=configs/ml20m_mlperf.py --workdir=/tmp/ml20m \
      --config.data.dir=/path/to/ml-20m

ML-20M is not bundled: give the extracted folder (or ml-20m.zip) with --config.data.dir,
or leave it empty to download the official archive. Hyperparameters follow the MLPerf
reference (batch 1,048,576 with Adam lr 0.0045, b1 0.25, b2 0.5; target HR@10 0.635).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.name = "movielens"
  config.data.variant = "20m"
  config.data.dir = ""
  config.data.num_test_negatives = 999
  config.model.name = "neumf"
  config.model.factors = 64
  config.model.mlp_layers = (256, 256, 128, 64)
  config.train.num_negatives = 4
  config.train.batch_size = 1_048_576
  config.train.learning_rate = 0.0045
  config.train.adam_b1 = 0.25
  config.train.adam_b2 = 0.5
  config.train.adam_eps = 1e-8
  config.train.num_epochs = 7
  config.embedding.optimizer = "dense_adam"
  config.eval.batch_users = 16_384
  return config
