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


def get_config():
  config = default.get_config()
  config.data.name = "movielens"
  config.data.variant = "100k"
  config.data.dir = os.path.join(default.SHARED_DATA, "ml-100k")
  config.data.num_test_negatives = 99

  config.model.name = "two_tower"
  config.model.factors = 32  # id and side-feature embedding width
  config.model.tower_layers = (64, 32)
  config.model.use_side_features = True
  config.model.learn_temperature = True

  config.train.loss = "softmax"  # in-batch negatives with log-Q correction
  config.train.batch_size = 256
  config.train.learning_rate = 0.001
  config.train.num_epochs = 30
  config.train.log_every_steps = 1000

  config.eval.every_epochs = 5
  config.eval.full_ranking = True
  config.eval.item_block = 4096  # all 1,682 items in one block
  return config
