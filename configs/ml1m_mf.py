"""Dot-product matrix factorisation baseline on ML-1M, in the NCF paper's protocol.

  python -m ncf_jax.main --config=configs/ml1m_mf.py --workdir=/tmp/ml1m_mf

Rendle, Krichene, Zhang & Anderson (RecSys 2020) showed that a well-tuned dot product
matches or beats NeuMF's learned MLP similarity on this data; this is that baseline
(model.name='mf': user . item + user, item and global biases), trained like NeuMF (BCE,
sampled negatives, Adam) with a wider embedding. Data as configs/ml1m_neumf.py.
"""

from configs import default
from configs.ml1m_neumf import ncf_ml1m_data


def get_config():
  config = ncf_ml1m_data(default.get_config())
  config.model.name = "mf"
  config.model.factors = 64
  config.train.num_negatives = 4
  config.train.batch_size = 256
  config.train.learning_rate = 0.001
  # Nothing regularises the tables: MF peaks near epoch 10 and then overfits (20 epochs:
  # HR@10 0.677, full Recall@10 0.074, see docs/two_tower.md).
  config.train.num_epochs = 10
  config.train.log_every_steps = 5000

  config.eval.every_epochs = 5
  config.eval.full_ranking = True
  # MF is scored pair by pair: 1024 users x 512 items (~0.5M pairs) per block bounds memory.
  config.eval.batch_users = 1024
  config.eval.item_block = 512
  return config
