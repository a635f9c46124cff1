"""NeuMF on ML-1M in the NCF paper's protocol (users 0..2998, official test item + 99 negatives).

  python -m ncf_jax.main --config=configs/ml1m_neumf.py --workdir=/tmp/ml1m_neumf

Reads ../shared/data (ML-1M may not be redistributed, so it is never in this repo);
point `--config.data.dir` elsewhere if your copy lives elsewhere. Test users without
training rows (users 2999..6039 of the paper's files) are left out of evaluation.
"""

from configs import default


def ncf_ml1m_data(config):
  """The paper's files: exact training rows of users 0..2998 and the official test files."""
  config.data.name = "ncf"
  config.data.dir = default.SHARED_DATA
  config.data.train_file = "derived/ml-1m.train.rating.users0-2998.gz"
  config.data.test_file = "ncf/ml-1m.test.rating"
  config.data.negative_file = "ncf/ml-1m.test.negative"
  config.data.num_test_negatives = 99
  return config


def get_config():
  config = ncf_ml1m_data(default.get_config())
  config.model.name = "neumf"
  # The paper's recipe (factors 8, MLP 64-32-16-8) peaks at HR@10 ~0.689 / NDCG@10 ~0.406 on
  # this split; 16 predictive factors (one of the paper's own sizes) reach ~0.70 / ~0.42.
  config.model.factors = 16
  config.model.mlp_layers = (64, 32, 16)
  config.train.num_negatives = 4
  config.train.batch_size = 256
  config.train.learning_rate = 0.001
  config.train.num_epochs = 20
  config.train.log_every_steps = 5000
  return config
