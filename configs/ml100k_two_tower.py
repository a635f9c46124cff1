"""Two-tower model with user and item side features on ML-100K (the project's own split).

  python -m ncf_jax.main --config=configs/ml100k_two_tower.py --workdir=/tmp/ml100k_two_tower

The same model without side features (ids only), for the comparison in docs/two_tower.md:

  python -m ncf_jax.main --config=configs/ml100k_two_tower.py --workdir=/tmp/ml100k_tt_ids \
    --config.model.use_side_features=False

Data: ../shared/data/ml-100k (u.data, u.user: gender, age bucket, occupation; u.item:
genres, release year bucket), prepared by the MovieLens TFDS builder: leave-one-out on each
user's latest rating, 99 sampled test negatives (ML-100K may not be redistributed, so it
is never in this repo). Metrics: sampled HR/NDCG@10, full-ranking Recall/NDCG@10, AUC.
"""

import os

from configs import default
from configs.ml1m_two_tower import two_tower_recipe


def get_config():
  config = default.get_config()
  config.data.name = "movielens"
  config.data.variant = "100k"
  config.data.dir = os.path.join(default.SHARED_DATA, "ml-100k")
  config.data.num_test_negatives = 99
  config = two_tower_recipe(config)
  config.train.num_epochs = 30
  config.train.log_every_steps = 1000
  return config
