"""NeuMF on ML-1M prepared by the project itself: its own leave-one-out split and negatives.

Same model and training as configs/ml1m_neumf.py, but the data come from the raw ratings
of users 1..2999 (../shared/data/ml-1m/ratings.users0001-2999.dat.gz) through the
MovieLens TFDS builder, so the split and the 99 test negatives are the project's own.

  python -m ncf_jax.main --config=configs/ml1m_neumf_own_split.py --workdir=/tmp/ml1m_own
"""

import os

from configs import default, ml1m_neumf


def get_config():
  config = ml1m_neumf.get_config()
  config.data = default.get_config().data
  config.data.name = "movielens"
  config.data.variant = "1m"
  config.data.dir = os.path.join(default.SHARED_DATA, "ml-1m")
  config.data.ratings_file = "ratings.users0001-2999.dat.gz"
  config.data.num_test_negatives = 99
  return config
