"""The trainer end to end: models, metrics, sampler, tiny training, resume, bad input."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import test as test_config
from ncf_jax import evaluate, models, sharding, train
from ncf_jax.data import parsing, sampling

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING_KEYS = ("samples_per_sec", "train_s", "eval_s", "wall_s")


def tiny_config(tmp_path, **train_overrides):
  config = test_config.get_config()
  config.data.cache_dir = str(tmp_path / "tfds")
  config.train.update(train_overrides)
  return config


def read_metrics(workdir) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


# ---------------------------------------------------------------------------- metrics


def test_positive_rank_counts_only_strictly_higher_valid_negatives():
  pos = jnp.array([0.5, 0.5, 0.9])
  neg = jnp.array([[0.9, 0.1, 0.5], [0.6, 0.7, 0.8], [0.1, 0.2, 0.3]])
  valid = jnp.array([[True, True, True], [True, False, True], [True, True, True]])
  # row 0: only 0.9 beats 0.5 (a tie does not); row 1: 0.6 and 0.8 (0.7 is masked).
  np.testing.assert_array_equal(evaluate.positive_rank(pos, neg, valid), [1, 2, 0])


def test_hit_and_ndcg_hand_computed():
  hit, ndcg = evaluate.hit_and_ndcg(jnp.array([0, 1, 9, 10]), k=10)
  np.testing.assert_allclose(hit, [1, 1, 1, 0])
  np.testing.assert_allclose(ndcg, [1.0, 1 / np.log2(3), 1 / np.log2(11), 0.0], rtol=1e-6)


def test_evaluator_ignores_the_test_item_among_its_own_negatives():
  mesh = sharding.make_mesh(test_config.get_config().mesh)
  # Score = item id: item 5 is the test item of both users; user 1 also has 5 as a
  # "negative" (as in the NCF paper's files), which must not push it down.
  score = lambda state, users, items: items.astype(jnp.float32)
  users = np.arange(2, dtype=np.int32)
  items = np.array([5, 5], np.int32)
  negatives = np.array([[1, 2, 7], [1, 5, 2]], np.int32)
  metrics = evaluate.SampledEvaluator(score, users, items, negatives, 1, 8, mesh)(None)
  # user 0: item 7 ranks above -> miss at K=1; user 1: rank 0 -> hit.
  assert metrics["hr@1"] == pytest.approx(0.5)
  assert metrics["ndcg@1"] == pytest.approx(0.5)


# ---------------------------------------------------------------------------- models


@pytest.mark.parametrize("name", ["gmf", "mlp", "neumf", "neuralcf", "mf"])
def test_model_output_shapes_and_tables(name):
  config = test_config.get_config()
  config.model.name = name
  module = models.create_model(config, nnx.Rngs(0))
  decls = models.model_tables(config)
  batch = 5
  rows = {t.name: jnp.ones((batch, t.dim)) for t in decls}
  logits = module(rows, {"user": jnp.zeros(batch, jnp.int32), "item": jnp.zeros(batch, jnp.int32)})
  assert logits.shape == (batch,) and logits.dtype == jnp.float32
  assert models.model_flops_per_sample(config) > 0


def test_neumf_output_layer_sees_gmf_and_mlp():
  config = test_config.get_config()  # factors 4, mlp (16, 8, 4)
  module = models.create_model(config, nnx.Rngs(0))
  assert module.out.kernel.get_value().shape == (4 + 4, 1)
  assert {t.name: t.dim for t in models.model_tables(config)} == {
    "user_gmf": 4, "item_gmf": 4, "user_mlp": 8, "item_mlp": 8,
  }


def test_unknown_model_name_is_a_clear_error():
  config = test_config.get_config()
  config.model.name = "nuemf"
  with pytest.raises(ValueError, match="model.name='nuemf'"):
    models.create_model(config, nnx.Rngs(0))


# ---------------------------------------------------------------------------- sampler


def test_make_epoch_positives_negatives_and_determinism():
  mesh = sharding.make_mesh(test_config.get_config().mesh)
  users = np.repeat(np.arange(50, dtype=np.int32), 4)
  items = np.tile(np.arange(4, dtype=np.int32), 50) + 3 * np.repeat(np.arange(50), 4) % 90
  n, k, batch = users.shape[0], 4, 40
  steps = sampling.steps_per_epoch(n, k, batch)
  kwargs = dict(num_positives=n, num_items=100, num_negatives=k, num_steps=steps,
                batch_size=batch, sharding=sampling.epoch_sharding(mesh))
  out = sampling.make_epoch(jax.random.key(0), users, items, **kwargs)
  u, i, y = (np.asarray(a).reshape(-1) for a in out)
  assert out[0].shape == (steps, batch) and steps * batch == n * (1 + k)
  assert y.sum() == n  # an uncut epoch holds every positive exactly once ...
  positives = set(zip(users.tolist(), items.tolist(), strict=True))
  assert {(a, b) for a, b, c in zip(u, i, y, strict=True) if c == 1} == positives
  assert ((i >= 0) & (i < 100)).all()
  # ... and each user's negatives as often as k times their positives.
  np.testing.assert_array_equal(np.bincount(u[y == 0], minlength=50), k * np.bincount(users))
  again = sampling.make_epoch(jax.random.key(0), users, items, **kwargs)
  np.testing.assert_array_equal(np.asarray(again[1]).reshape(-1), i)
  other = sampling.make_epoch(jax.random.key(1), users, items, **kwargs)
  assert not np.array_equal(np.asarray(other[1]).reshape(-1), i)


def test_negative_collision_rate_matches_density():
  # Every user rated half the items: uniform negatives collide half of the time.
  users = np.repeat(np.arange(100), 50)
  items = np.tile(np.arange(0, 100, 2), 100)
  assert sampling.negative_collision_rate(users, items, 100) == pytest.approx(0.5, abs=0.01)


# ---------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """Two epochs of the tiny config on the bundled ml-latest-small, 8 devices."""
  tmp = tmp_path_factory.mktemp("train")
  config = tiny_config(tmp)
  summary = train.train_and_evaluate(config, str(tmp / "run"))
  return config, tmp, summary


def test_tiny_training_beats_random_and_writes_outputs(trained):
  config, tmp, summary = trained
  records = read_metrics(tmp / "run")
  assert [r["epoch"] for r in records] == [1, 2]
  for key in ("epoch", "step", "loss", "hr@10", "ndcg@10", "samples_per_sec", "wall_s"):
    assert key in records[0]
  assert records[1]["loss"] < records[0]["loss"]
  # Random ranking of 1 positive among 99 negatives: HR@10 = 0.10.
  assert summary["best_hr@10"] > 0.3
  assert 0 < summary["best_ndcg@10"] < summary["best_hr@10"]
  assert os.listdir(tmp / "run" / "checkpoints")
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp / "run"))


def test_resume_ends_with_the_same_metrics(trained, tmp_path):
  config, _, _ = trained
  reference = read_metrics(trained[1] / "run")
  config = tiny_config(tmp_path)
  config.data.cache_dir = trained[0].data.cache_dir
  workdir = str(tmp_path / "resumed")
  config.train.num_epochs = 1
  train.train_and_evaluate(config, workdir)  # "interrupted" after epoch 1
  config.train.num_epochs = 2
  train.train_and_evaluate(config, workdir)  # rerun: resumes from the checkpoint
  resumed = read_metrics(workdir)
  assert len(resumed) == len(reference) == 2
  for a, b in zip(resumed, reference, strict=True):
    assert {k: v for k, v in a.items() if k not in TIMING_KEYS} == {
      k: v for k, v in b.items() if k not in TIMING_KEYS
    }


def test_mid_epoch_checkpoint_resumes_exactly(trained, tmp_path):
  """A checkpoint taken mid-epoch (as on preemption) resumes to the same final metrics."""
  config = tiny_config(tmp_path, steps_per_call=50, num_epochs=1)
  config.data.cache_dir = trained[0].data.cache_dir
  full = str(tmp_path / "full")
  train.train_and_evaluate(config, full)
  partial = str(tmp_path / "partial")
  config.train.stop_at_step = 70  # not a multiple of steps_per_call
  assert train.train_and_evaluate(config, partial) == {}
  assert os.listdir(os.path.join(partial, "checkpoints")) == ["70"]
  config.train.stop_at_step = 0
  train.train_and_evaluate(config, partial)
  strip = lambda rs: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rs]
  assert strip(read_metrics(partial)) == strip(read_metrics(full))


# ---------------------------------------------------------------------------- bad input


def test_batch_size_must_divide_over_devices(tmp_path):
  config = tiny_config(tmp_path, batch_size=1020)  # 8 simulated devices
  with pytest.raises(ValueError, match="train.batch_size=1020"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_unknown_model_writes_no_checkpoint(tmp_path):
  config = tiny_config(tmp_path)
  config.model.name = "transformer"
  with pytest.raises(ValueError, match="model.name"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_malformed_data_names_file_and_line_and_writes_nothing(tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  rows = ["userId,movieId,rating,timestamp"]
  rows += [f"{u},{i},4.0,{1000 + i}" for u in range(1, 6) for i in range(1, 8)]
  rows.insert(9, "3,seven,4.0,1010")
  (data / "ratings.csv").write_text("\n".join(rows) + "\n")
  config = tiny_config(tmp_path)
  config.data.dir = str(data)
  with pytest.raises(parsing.DataError, match=r"ratings.csv.*line 10"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_missing_data_dir_is_a_clear_error(tmp_path):
  config = tiny_config(tmp_path)
  config.data.dir = str(tmp_path / "nowhere")
  with pytest.raises(parsing.DataError, match="data.dir"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "checkpoints")
