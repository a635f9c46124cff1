"""MLP on ML-1M in the NCF paper's protocol (users 0..2998, official negatives).

  python -m ncf_jax.main --config=configs/ml1m_mlp.py --workdir=/tmp/ml1m_mlp
"""

from configs import ml1m_neumf


def get_config():
  config = ml1m_neumf.get_config()
  config.model.name = "mlp"
  return config
