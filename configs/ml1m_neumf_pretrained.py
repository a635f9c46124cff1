"""NeuMF initialised from trained GMF and MLP runs (He et al. 2017, section 3.4.1), on ML-1M.

Train the two halves, then NeuMF from them:

  python -m ncf_jax.main --config=configs/ml1m_gmf.py --workdir=/tmp/ml1m_gmf
  python -m ncf_jax.main --config=configs/ml1m_mlp.py --workdir=/tmp/ml1m_mlp
  python -m ncf_jax.main --config=configs/ml1m_neumf_pretrained.py --workdir=/tmp/ml1m_neumf_pre

The output layer starts as [alpha * h_gmf, (1 - alpha) * h_mlp] (alpha 0.5). The paper
fine-tunes with plain SGD, because Adam's moments are not in the pretrained runs; override
the workdirs with --config.model.pretrained_gmf / --config.model.pretrained_mlp.
"""

from configs import ml1m_neumf


def get_config():
  config = ml1m_neumf.get_config()
  config.model.pretrained_gmf = "/tmp/ml1m_gmf"
  config.model.pretrained_mlp = "/tmp/ml1m_mlp"
  config.model.pretrain_alpha = 0.5
  config.model.mlp_layers = (128, 64, 32, 16)  # as configs/ml1m_mlp.py
  config.train.optimizer = "sgd"
  config.embedding.optimizer = "sgd"
  config.train.learning_rate = 0.05
  config.train.num_epochs = 10
  return config
