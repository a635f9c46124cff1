"""Two-tower model with side features on ML-1M, in the NCF paper's protocol.

  python -m ncf_jax.main --config=configs/ml1m_two_tower.py --workdir=/tmp/ml1m_two_tower

Ids only (no side features), for the comparison in docs/two_tower.md:

  python -m ncf_jax.main --config=configs/ml1m_two_tower.py --workdir=/tmp/ml1m_tt_ids \
    --config.model.use_side_features=False

Top-k for some users, and the embeddings for an ANN index, from the trained workdir:

  python -m ncf_jax.recommend --workdir=/tmp/ml1m_two_tower --users=0,1,2 --k=10
  python -m ncf_jax.recommend --workdir=/tmp/ml1m_two_tower --export=/tmp/ml1m_tt_emb

Data as configs/ml1m_neumf.py (users 0..2998, the official test item + 99 negatives) from
../shared/data, plus side features: ml-1m/users.dat (gender, age bucket, occupation; NCF
user u is UserID u+1) and ml-1m/movies.dat (genres, release-year bucket) joined to NCF items
through derived/ml-1m.ncf_item_index_to_movieid.tsv (items it cannot map have none).
"""

import os

from configs import default
from configs.ml1m_neumf import ncf_ml1m_data


def two_tower_recipe(config):
  """Two-tower with side features, in-batch softmax and full-ranking evaluation."""
  config.model.name = "two_tower"
  config.model.factors = 32  # id and side-feature embedding width
  config.model.tower_layers = (64, 32)
  config.model.use_side_features = True
  config.model.learn_temperature = True

  config.train.loss = "softmax"  # in-batch negatives with log-Q correction
  config.train.batch_size = 256
  config.train.learning_rate = 0.001

  config.eval.every_epochs = 5
  config.eval.full_ranking = True
  config.eval.item_block = 4096  # every item of ML-1M (3,706) or ML-100K (1,682) in one block
  return config


def get_config():
  config = ncf_ml1m_data(default.get_config())
  config.data.side_dir = os.path.join(default.SHARED_DATA, "ml-1m")
  config.data.ncf_item_map = "derived/ml-1m.ncf_item_index_to_movieid.tsv"
  config = two_tower_recipe(config)
  config.train.num_epochs = 20
  config.train.log_every_steps = 5000
  return config
