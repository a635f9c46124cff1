"""A tiny config for tests and smoke runs: GMF-sized NeuMF, a couple of epochs.

  python -m ncf_jax.main --config=configs/test.py --workdir=/tmp/ncf_test
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.factors = 4
  config.model.mlp_layers = (16, 8, 4)
  config.train.batch_size = 1024
  config.train.num_epochs = 2
  config.train.learning_rate = 0.005
  config.train.log_every_steps = 100
  config.eval.batch_users = 256
  return config
