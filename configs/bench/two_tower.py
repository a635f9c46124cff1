"""The two-tower model on ML-1M sizes, with ML-1M-shaped side features, in-batch softmax.

  python -m ncf_jax.benchmark --config=configs/bench/two_tower.py

configs/ml1m_two_tower.py's model (id + side-feature embeddings of width 32, towers 64-32,
learned temperature, sampled softmax over the batch with log-Q correction) on 6,040 users
and 3,706 items with random side features (data.synthetic.side_features). The B x B
logits make the FLOPs per sample grow with the batch.
"""

from configs.bench.common import measurement, suite


def get_config():
  runs = {}
  for batch, per_call in ((256, 1000), (4096, 100)):
    for optimizer in ("dense_adam", "adam"):
      config = measurement(model="two_tower", factors=32, batch_size=batch, optimizer=optimizer,
                           steps_per_call=per_call)
      config.model.tower_layers = (64, 32)
      config.model.use_side_features = True
      config.model.learn_temperature = True
      config.train.loss = "softmax"
      runs[f"two_tower_b{batch}_{optimizer}"] = config
  return suite(**runs)
