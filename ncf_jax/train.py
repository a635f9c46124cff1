"""Training: the train state, the jitted train step, and the train-and-evaluate loop.

Read top to bottom: state → step → many steps per call → the loop (data, resume,
epochs, evaluation, logging, checkpoints, preemption).
"""

import dataclasses
import functools
import json
import signal
import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from etils import epath
from flax import nnx

from ncf_jax import checkpoint, embedding, evaluate, models, ranking, sharding, two_tower
from ncf_jax.data import sampling
from ncf_jax.data.dataset import Dataset

# ---------------------------------------------------------------------------- state


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs to continue exactly (all jax arrays)."""

  step: jax.Array  # int32[]: training steps done
  epoch: jax.Array  # int32[]: epochs completed
  params: dict  # dense parameters (a pure dict of the NNX module's Params), replicated
  opt_state: Any  # optax state of `params`
  tables: dict[str, jax.Array]  # name -> f32/bf16[padded_vocab, dim], rows sharded
  slots: dict[str, Any]  # name -> the table optimizer's state, sharded like the table
  loss_sum: jax.Array  # f32[]: sum of step losses so far in the current epoch


@dataclasses.dataclass(frozen=True)
class Model:
  """The static half of the model: NNX graph, the tables it reads, and their specs."""

  graphdef: Any
  abstract_params: Any  # nnx.State of ShapeDtypeStructs, the template of `params`
  tables: tuple[models.TableDecl, ...]
  specs: dict[str, embedding.TableSpec]
  compute_dtype: Any

  def module(self, params: dict) -> nnx.Module:
    """The NNX module with `params` (inside jit: a pure function of `params`)."""
    state = jax.tree.map(lambda x: x, self.abstract_params)
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(self.graphdef, state)

  def apply(self, params: dict, rows: dict[str, jax.Array], batch: dict) -> jax.Array:
    """logits f32[B] of the dense module on looked-up `rows` of `batch` (ids, timestamps)."""
    return self.module(params)(rows, batch).astype(jnp.float32)

  def lookup(self, tables: dict, ids: dict[str, jax.Array], mesh) -> dict[str, jax.Array]:
    return {
      # Sparse optimizers dedup the same ids: dedup here too, and XLA shares the work.
      t.name: embedding.lookup(tables[t.name], ids[t.feature], mesh, self.compute_dtype,
                               dedup=self.specs[t.name].optimizer != "dense_adam")
      for t in self.tables
    }


def table_specs(
  config: ml_collections.ConfigDict, decls, num_users: int, num_items: int
) -> dict[str, embedding.TableSpec]:
  emb = config.embedding
  vocab = {"user": emb.user_hash_buckets or num_users, "item": emb.item_hash_buckets or num_items}
  return {
    t.name: embedding.spec_from_config(config, t.name, vocab[t.feature], t.dim) for t in decls
  }


def build_model(config: ml_collections.ConfigDict, dataset: Dataset) -> Model:
  decls = tuple(models.model_tables(config, dataset))
  abstract = nnx.eval_shape(lambda: models.create_model(config, nnx.Rngs(0), dataset))
  graphdef, abstract_params = nnx.split(abstract, nnx.Param)
  return Model(
    graphdef=graphdef,
    abstract_params=abstract_params,
    tables=decls,
    specs=table_specs(config, decls, dataset.num_users, dataset.num_items),
    compute_dtype=models._dtype(config),
  )


def dense_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  t = config.train
  if t.optimizer == "adam":
    return optax.adam(t.learning_rate, b1=t.adam_b1, b2=t.adam_b2, eps=t.adam_eps)
  if t.optimizer == "adamw":
    return optax.adamw(
      t.learning_rate, t.adam_b1, t.adam_b2, t.adam_eps, weight_decay=t.weight_decay
    )
  if t.optimizer == "sgd":
    return optax.sgd(t.learning_rate)
  raise ValueError(f"train.optimizer={t.optimizer!r}: expected 'adam', 'adamw' or 'sgd'.")


def create_train_state(
  config: ml_collections.ConfigDict, model: Model, tx: optax.GradientTransformation, mesh,
  dataset: Dataset | None = None,
) -> TrainState:
  """A fresh state, born sharded: dense parts replicated, tables row-sharded.

  `dataset` gives models with side features (two_tower) their feature sizes.
  """
  key_params, key_tables = jax.random.split(jax.random.key(config.train.seed))
  replicated = sharding.replicated(mesh)

  @functools.partial(jax.jit, out_shardings=replicated)
  def init_dense(key):
    module = models.create_model(config, nnx.Rngs(key), dataset)
    params = nnx.to_pure_dict(nnx.state(module, nnx.Param))
    return params, tx.init(params)

  params, opt_state = init_dense(key_params)
  tables, slots = {}, {}
  for i, (name, spec) in enumerate(model.specs.items()):
    tables[name] = embedding.init_table(jax.random.fold_in(key_tables, i), spec, mesh)
    slots[name] = embedding.init_slots(spec, mesh)
  scalar = lambda v, dt: sharding.put_global(np.asarray(v, dt), replicated)
  return TrainState(
    step=scalar(0, jnp.int32),
    epoch=scalar(0, jnp.int32),
    params=params,
    opt_state=opt_state,
    tables=tables,
    slots=slots,
    loss_sum=scalar(0.0, jnp.float32),
  )


# ---------------------------------------------------------------------------- step


def make_train_step(
  model: Model, tx: optax.GradientTransformation, mesh, loss_type: str = "bce",
  microbatch_size: int = 0,
) -> Callable:
  """train_step(state, users int32[B], items int32[B], labels f32[B], side, timestamps)
  -> (state, loss).

  loss_type 'bce': pointwise sigmoid cross-entropy over positives and sampled negatives.
  loss_type 'softmax': two-tower in-batch sampled softmax with log-Q correction; every row is
  a positive (labels unused), the batch's other items are its negatives.
  microbatch_size: > 0 and < B (bce only): the dense forward and backward run over slices of
  this many rows in turn and their gradients are summed (`_accumulated_grads`); the update is
  still one step on the whole batch's gradient.
  side: the two-tower's device-resident feature arrays (two_tower.side_inputs; {} or None
  for other models); timestamps: int32[B] interaction times, for context features.
  """

  if microbatch_size and loss_type != "bce":
    raise ValueError(f"microbatch_size={microbatch_size} needs loss_type='bce': the in-batch "
                     "softmax's negatives are the whole batch.")

  def bce_sum(params, rows, batch, labels):
    logits = model.apply(params, rows, batch)
    return optax.sigmoid_binary_cross_entropy(logits, labels).sum()

  def train_step(state: TrainState, users, items, labels, side=None, timestamps=None):
    side = side or {}
    size = users.shape[0]
    ids = {"user": users, "item": items}
    batch = two_tower.model_batch(side, users, items, timestamps)  # ids + gathered features
    rows = model.lookup(state.tables, ids, mesh)

    def loss_fn(params, rows):
      if loss_type == "softmax":
        module = model.module(params)
        u, v = module.user_vectors(rows, batch), module.item_vectors(rows, batch)
        return two_tower.in_batch_softmax_loss(u, v, items, side["log_q"][items], module.scale())
      return bce_sum(params, rows, batch, labels) / size

    # Gradients with respect to the looked-up rows, not the tables: the table update
    # then touches only the rows of this batch (or scatters them, for dense Adam).
    if 0 < microbatch_size < size:
      chunk_loss = lambda *chunk: bce_sum(*chunk) / size  # a chunk's share of the batch mean
      loss, grad_params, grad_rows = _accumulated_grads(
        chunk_loss, state.params, (rows, batch, labels), microbatch_size, mesh.devices.size)
    else:
      loss, (grad_params, grad_rows) = jax.value_and_grad(loss_fn, argnums=(0, 1))(
        state.params, rows
      )
    updates, opt_state = tx.update(grad_params, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    tables, slots = {}, {}
    for t in model.tables:
      tables[t.name], slots[t.name] = embedding.apply_gradients(
        model.specs[t.name], state.tables[t.name], state.slots[t.name], ids[t.feature],
        grad_rows[t.name], mesh,
      )
    state = state.replace(
      step=state.step + 1, params=params, opt_state=opt_state, tables=tables, slots=slots,
      loss_sum=state.loss_sum + loss,
    )
    return state, loss

  return train_step


def _accumulated_grads(chunk_loss: Callable, params, inputs, microbatch_size: int,
                       num_devices: int):
  """(loss, d loss/d params, d loss/d rows) of the whole batch, `microbatch_size` rows at a time.

  chunk_loss(params, rows, batch, labels) is a chunk's share of the batch loss, so the sums
  over chunks are the whole batch's loss and gradients. inputs = (rows, batch, labels), every
  leaf [B, ...] and split over the mesh's `num_devices` devices. Chunk c is the c-th
  microbatch_size / num_devices rows of every device's own part of the batch, so no row moves
  between devices; the row gradients come back in the rows' order. Only one chunk's
  activations are alive at a time, so a batch whose activations do not fit can still take
  one step (BENCHMARKS.md: MLPerf shape, batch 1,048,576).
  """
  batch_size = jax.tree.leaves(inputs)[0].shape[0]
  chunks, per_device = batch_size // microbatch_size, microbatch_size // num_devices

  def to_chunks(x):  # [B, ...] -> [chunks, microbatch, ...]
    if num_devices == 1:  # a plain reshape: XLA would copy for the moveaxis below
      return x.reshape(chunks, microbatch_size, *x.shape[1:])
    x = x.reshape(num_devices, chunks, per_device, *x.shape[1:])
    return jnp.moveaxis(x, 1, 0).reshape(chunks, microbatch_size, *x.shape[3:])

  def body(carry, chunk):
    loss, grads = carry
    chunk_loss_value, (grad_params, grad_rows) = jax.value_and_grad(chunk_loss, argnums=(0, 1))(
      params, *chunk)
    return (loss + chunk_loss_value, jax.tree.map(jnp.add, grads, grad_params)), grad_rows

  zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
  (loss, grad_params), grad_rows = jax.lax.scan(body, zeros, jax.tree.map(to_chunks, inputs))

  def from_chunks(g):  # [chunks, microbatch, ...] -> [B, ...] in the rows' order
    if num_devices == 1:
      return g.reshape(batch_size, *g.shape[2:])
    g = g.reshape(chunks, num_devices, per_device, *g.shape[2:])
    return jnp.moveaxis(g, 0, 1).reshape(batch_size, *g.shape[3:])

  return loss, grad_params, jax.tree.map(from_chunks, grad_rows)


def make_train_steps(train_step: Callable) -> Callable:
  """Runs steps [start, stop) of an epoch in one jitted call, so the host never sits between steps.

  train_steps(state, users int32[S, B], items int32[S, B], labels f32[S, B], start, stop,
              side=None, timestamps=None int32[S, B]) -> state
  The state is donated: tables and optimizer slots are updated in place.
  """

  @functools.partial(jax.jit, donate_argnums=0)
  def train_steps(state, users, items, labels, start, stop, side=None, timestamps=None):
    def body(i, state):
      times = None if timestamps is None else timestamps[i]
      return train_step(state, users[i], items[i], labels[i], side, times)[0]

    return jax.lax.fori_loop(start, stop, body, state)

  return train_steps


def make_score_fn(model: Model, mesh) -> Callable:
  """score(state, users int32[n], items int32[n], side=None) -> f32[n] logits.

  Traced inside evaluation; `side` as in make_train_step (a context model is scored at
  each user's test time).
  """

  def score(state: TrainState, users, items, side=None):
    batch = two_tower.model_batch(side or {}, users, items)
    return model.apply(state.params, model.lookup(state.tables, batch, mesh), batch)

  return score


def make_block_score_fn(config: ml_collections.ConfigDict, model: Model, mesh) -> Callable:
  """score_block((state, side), users int32[U], items int32[Ib]) -> f32[U, Ib] logits.

  For full ranking and top-k: the two-tower model multiplies its towers' outputs; other
  models score every pair of the block.
  """
  if config.model.name == "two_tower":
    return two_tower.make_block_score_fn(model, mesh)
  score = make_score_fn(model, mesh)
  return ranking.pairwise_block(lambda inputs, users, items: score(inputs[0], users, items,
                                                                   inputs[1]))


# ---------------------------------------------------------------------------- loop helpers


class PreemptionGuard:
  """Turns SIGTERM (sent by Cloud TPU, GKE and SLURM before preemption) into a flag.

  The loop checks it at every call boundary, saves a checkpoint and exits cleanly.
  """

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    def handler(signum, frame):
      del frame
      logging.warning("Received signal %d: will checkpoint at the next step boundary.", signum)
      self.requested = True

    try:
      self._previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. some test runners): no handler
      self._previous = None
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def should_stop(self) -> bool:
    if jax.process_count() == 1:
      return self.requested
    # Every process must stop at the same step: stop when any process was signalled.
    from jax.experimental import multihost_utils  # noqa: PLC0415

    flags = multihost_utils.process_allgather(np.array(self.requested, np.int32))
    stop = bool(np.any(flags))  # not `self.requested`: a signal may land after the gather
    if stop:  # a process signalled alone stops all: each one logs it as a preemption
      self.requested = True
    return stop


class MetricsLog:
  """metrics.jsonl (one object per evaluation) and TensorBoard events, process 0 only.

  The file is rewritten whole on each evaluation (it is small), through etils.epath, so a
  gs:// workdir works too (object stores have no append).
  """

  def __init__(self, workdir: str, resume_epoch: int):
    self.path = epath.Path(workdir) / "metrics.jsonl"
    self.enabled = jax.process_index() == 0
    self._writer = None
    self.records: list[dict] = []
    if not self.enabled:
      return
    # Lines written after the checkpoint we resume from (a crash between evaluation and
    # save) are dropped, so a resumed run's file equals an uninterrupted run's.
    self.records = [r for r in self.read() if r["epoch"] <= resume_epoch]
    self._flush()
    from tensorboardX import SummaryWriter  # noqa: PLC0415

    self._writer = SummaryWriter(logdir=workdir, flush_secs=10)

  def read(self) -> list[dict]:
    if not self.path.exists():
      return []
    return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

  def _flush(self) -> None:
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records))

  def write(self, record: dict) -> None:
    if not self.enabled:
      return
    self.records.append(record)
    self._flush()
    for key, value in record.items():
      if key not in ("epoch", "step") and isinstance(value, int | float):
        self._writer.add_scalar(key.replace("@", "_at_"), value, record["step"])
    self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


def load_data(config: ml_collections.ConfigDict) -> Dataset:
  if config.data.name == "synthetic":
    from ncf_jax.data import synthetic  # noqa: PLC0415

    return synthetic.make_dataset(config.data)
  from ncf_jax.data import input_pipeline  # noqa: PLC0415  (TFDS only when needed)

  if jax.process_count() == 1:
    return input_pipeline.load_dataset(config.data)
  # Processes may share the TFDS cache (one machine, or a shared file system): process 0
  # prepares it while the others wait, then every process reads the prepared files.
  from jax.experimental import multihost_utils  # noqa: PLC0415

  dataset = input_pipeline.load_dataset(config.data) if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices("ncf_jax: data prepared")
  return dataset if dataset is not None else input_pipeline.load_dataset(config.data)


def id_rows(config: ml_collections.ConfigDict, dataset: Dataset) -> dict[str, np.ndarray | None]:
  """Per feature, the table row of each dense id: hashed original ids, or None (identity)."""
  emb = config.embedding
  rows = {}
  for feature, buckets, originals in (
    ("user", emb.user_hash_buckets, dataset.user_ids),
    ("item", emb.item_hash_buckets, dataset.item_ids),
  ):
    rows[feature] = embedding.hash_ids(originals, buckets) if buckets > 0 else None
  return rows


def _map(rows: np.ndarray | None, ids: np.ndarray) -> np.ndarray:
  return ids.astype(np.int32) if rows is None else rows[ids].astype(np.int32)


def validate_config(config: ml_collections.ConfigDict, mesh) -> None:
  """Errors a user can cause, raised before any data is read or any checkpoint written."""
  models.check_model_name(config)
  models._dtype(config)
  sharding.check_batch_size(config.train.batch_size, mesh, field="train.batch_size")
  dense_optimizer(config)
  for field in ("num_epochs", "num_negatives"):
    if config.train[field] < (1 if field == "num_epochs" else 0):
      raise ValueError(f"train.{field}={config.train[field]} is out of range.")
  if config.eval.top_k < 1:
    raise ValueError(f"eval.top_k={config.eval.top_k}: must be >= 1.")
  if config.train.loss not in ("bce", "softmax"):
    raise ValueError(f"train.loss={config.train.loss!r}: expected 'bce' or 'softmax'.")
  if config.train.loss == "softmax" and config.model.name != "two_tower":
    raise ValueError(
      f"train.loss='softmax' (in-batch softmax) needs separate user and item vectors: set "
      f"model.name='two_tower' or train.loss='bce' (model.name={config.model.name!r})."
    )
  mb, batch_size = config.train.microbatch_size, config.train.batch_size
  if mb and (mb < 0 or batch_size % mb or mb % mesh.devices.size):
    raise ValueError(
      f"train.microbatch_size={mb}: must divide train.batch_size={batch_size} and be a "
      f"multiple of the {mesh.devices.size} devices (or 0: the whole batch at once).")
  if mb and config.train.loss == "softmax":
    raise ValueError(
      f"train.microbatch_size={mb} with train.loss='softmax': the in-batch softmax's negatives "
      "are the whole batch; set train.microbatch_size=0.")
  if config.eval.full_ranking and config.embedding.item_hash_buckets:
    raise ValueError("eval.full_ranking ranks exact items: set embedding.item_hash_buckets=0.")


def _format_eta(seconds: float) -> str:
  seconds = int(max(0, seconds))
  return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# ---------------------------------------------------------------------------- the loop


@dataclasses.dataclass(frozen=True)
class EpochInput:
  """The training input on the device: the positives, and a jitted function that turns them
  into one epoch of shuffled (users, items, labels[, timestamps]) int32/f32[steps, B] batches
  with fresh negatives (ids mapped to table rows when hashed)."""

  positives: list[jax.Array]  # users, items[, timestamps], padded to the device count
  make: Callable  # make(key, *positives) -> (users, items, labels, *timestamps)
  steps: int  # steps per epoch
  batch_size: int

  @classmethod
  def build(cls, config, dataset: Dataset, rows: dict, mesh) -> "EpochInput":
    num_devices = mesh.devices.size
    padded = -(-dataset.num_train // num_devices) * num_devices
    put = lambda a: sharding.put_global(np.pad(a, (0, padded - a.shape[0])),
                                        sharding.batch_sharding(mesh))
    positives = [put(dataset.train_users), put(dataset.train_items)]
    if config.model.name == "two_tower" and config.model.use_context:
      positives.append(
        put(two_tower.to_int32_seconds(dataset.train_timestamps, "train timestamps")))
    row_maps = {f: None if r is None else sharding.put_global(r, sharding.replicated(mesh))
                for f, r in rows.items()}
    batch = config.train.batch_size
    # The in-batch softmax takes its negatives from the batch: an epoch is the positives only.
    negatives = 0 if config.train.loss == "softmax" else config.train.num_negatives
    steps = sampling.steps_per_epoch(dataset.num_train, negatives, batch)
    if steps == 0:
      raise ValueError(
        f"train.batch_size={batch} is larger than one epoch "
        f"({dataset.num_train} positives x {1 + negatives}); lower it."
      )

    @jax.jit
    def make(key, pos_users, pos_items, pos_timestamps=None):
      users, items, labels, *times = sampling.make_epoch(
        key, pos_users, pos_items, num_positives=dataset.num_train, num_items=dataset.num_items,
        num_negatives=negatives, num_steps=steps, batch_size=batch,
        sharding=sampling.epoch_sharding(mesh), pos_timestamps=pos_timestamps,
      )
      to_rows = lambda r, ids: ids if r is None else r[ids]
      return to_rows(row_maps["user"], users), to_rows(row_maps["item"], items), labels, *times

    return cls(positives=positives, make=make, steps=steps, batch_size=batch)

  def abstract(self, mesh) -> list[jax.ShapeDtypeStruct]:
    """Shapes, dtypes and shardings of one epoch's arrays (to compile the step ahead)."""
    arrays = jax.eval_shape(self.make, jax.random.key(0), *self.positives)
    return [jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sampling.epoch_sharding(mesh))
            for a in arrays]


def make_evaluator(config, model: Model, dataset: Dataset, rows: dict, mesh) -> Callable:
  """evaluate(state, side) -> metrics: HR@K / NDCG@K over the test users' sampled candidates,
  plus full-ranking Recall@K / NDCG@K and sampled AUC with eval.full_ranking."""
  score = make_score_fn(model, mesh)
  score_inputs = lambda inputs, users, items: score(inputs[0], users, items, inputs[1])
  test_users = _map(rows["user"], dataset.test_users)
  sampled = evaluate.SampledEvaluator(
    score_inputs, test_users, _map(rows["item"], dataset.test_items),
    _map(rows["item"], dataset.test_negatives), config.eval.top_k, config.eval.batch_users,
    mesh, with_auc=config.eval.full_ranking,
  )
  full = None
  if config.eval.full_ranking:
    full = ranking.FullRankingEvaluator(
      score_inputs, make_block_score_fn(config, model, mesh), test_users, dataset.test_items,
      _map(rows["user"], dataset.train_users), dataset.train_items, dataset.num_items,
      config.eval.top_k, config.eval.batch_users, config.eval.item_block, mesh,
    )

  def evaluate_fn(state: TrainState, side: dict) -> dict:
    metrics = sampled((state, side))
    if full is not None:
      metrics.update(full((state, side)))
    return metrics

  return evaluate_fn


def _log_metrics(config, record: dict) -> None:
  k = config.eval.top_k
  logging.info(
    "epoch %d: loss %.4f HR@%d %.4f NDCG@%d %.4f (%.0f samples/s, eval %.1fs)", record["epoch"],
    record["loss"], k, record[f"hr@{k}"], k, record[f"ndcg@{k}"], record["samples_per_sec"],
    record["eval_s"],
  )
  if config.eval.full_ranking:
    logging.info("epoch %d: full ranking Recall@%d %.4f NDCG@%d %.4f; sampled AUC %.4f",
                 record["epoch"], k, record[f"recall@{k}_full"], k, record[f"ndcg@{k}_full"],
                 record["auc"])


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the best metrics."""
  start_time = time.time()
  mesh = sharding.make_mesh(config.mesh)
  validate_config(config, mesh)
  if jax.process_index() == 0:  # what `recommend` needs to rebuild the model from the workdir
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    (epath.Path(workdir) / "config.json").write_text(config.to_json(indent=2) + "\n")

  # --- data
  dataset = load_data(config)
  logging.info(
    "Data %s: %d users, %d items, %d train positives, %d test users.",
    dataset.name, dataset.num_users, dataset.num_items, dataset.num_train, dataset.num_test,
  )
  rows = id_rows(config, dataset)
  collisions = sampling.negative_collision_rate(
    dataset.train_users, dataset.train_items, dataset.num_items, seed=config.train.seed
  )
  logging.info("Sampled negatives that are in fact positives of their user: %.2f%%.",
               100 * collisions)

  # --- model and state
  model = build_model(config, dataset)
  tx = dense_optimizer(config)
  state = create_train_state(config, model, tx, mesh, dataset)
  side = two_tower.side_inputs(config, dataset, mesh)  # {} unless two_tower needs it
  if config.model.pretrained_gmf or config.model.pretrained_mlp:
    from ncf_jax import pretrain  # noqa: PLC0415

    state = pretrain.load_into(config, state)

  ckpt = None
  if config.checkpoint.every_epochs:
    ckpt = checkpoint.Checkpointer(workdir, config.checkpoint)
  if ckpt is not None and ckpt.latest_step() is not None:
    state = ckpt.restore(checkpoint.abstract_like(state))
    logging.info("Resuming at step %d (epoch %d).", int(state.step), int(state.epoch))
  log = MetricsLog(workdir, resume_epoch=int(state.epoch))

  # --- input, step and evaluation
  epochs = EpochInput.build(config, dataset, rows, mesh)
  steps, batch = epochs.steps, epochs.batch_size
  per_call = config.train.steps_per_call or min(steps, max(1, config.train.log_every_steps))
  compile_start = time.time()
  epoch_arrays = epochs.abstract(mesh)
  # Compiled ahead of time, so epoch timings and samples/s exclude compilation.
  train_steps = make_train_steps(make_train_step(
    model, tx, mesh, config.train.loss, config.train.microbatch_size)).lower(
    checkpoint.abstract_like(state), *epoch_arrays[:3], 0, 1, side, *epoch_arrays[3:]).compile()
  logging.info("Compiled the train step in %.1fs.", time.time() - compile_start)
  evaluate_fn = make_evaluator(config, model, dataset, rows, mesh)
  base_key = jax.random.key(config.train.seed + 1)
  stop_at = config.train.stop_at_step
  total_steps = steps * config.train.num_epochs
  logging.info("%d steps per epoch of %d samples; %d steps per call.", steps, batch, per_call)

  # --- epochs
  with PreemptionGuard() as guard:
    while int(state.epoch) < config.train.num_epochs:
      epoch = int(state.epoch)
      users, items, labels, *times = epochs.make(jax.random.fold_in(base_key, epoch),
                                                 *epochs.positives)
      first = int(state.step) - epoch * steps  # > 0 when resuming mid-epoch
      epoch_start, timed_steps = time.time(), steps - first
      last_log, last_log_step, last_loss = time.time(), first, float(state.loss_sum)
      for start in range(first, steps, per_call):
        stop = min(start + per_call, steps)
        if stop_at > epoch * steps + start:
          stop = min(stop, stop_at - epoch * steps)
        state = train_steps(state, users, items, labels, start, stop, side, *times)
        if stop - last_log_step >= config.train.log_every_steps or stop == steps:
          loss_sum = float(state.loss_sum)  # waits for the device: only at log points
          now = time.time()
          rate = (stop - last_log_step) * batch / (now - last_log)
          done = epoch * steps + stop
          logging.info(
            "epoch %d step %d/%d loss %.4f samples/s %.0f eta %s", epoch + 1, stop, steps,
            (loss_sum - last_loss) / (stop - last_log_step), rate,
            _format_eta((total_steps - done) * batch / max(rate, 1e-9)),
          )
          last_log, last_log_step, last_loss = now, stop, loss_sum
        if (guard.should_stop() or epoch * steps + stop == stop_at) and stop < steps:
          if ckpt is not None:
            ckpt.save(int(state.step), state, wait=True)
          logging.warning("Stopped at step %d (%s): checkpoint saved, exiting.", int(state.step),
                          "preempted" if guard.requested else "train.stop_at_step")
          log.close()
          return {}
      jax.block_until_ready(state)
      train_seconds = time.time() - epoch_start
      epoch_loss = float(state.loss_sum) / steps
      state = state.replace(epoch=state.epoch + 1, loss_sum=jnp.zeros_like(state.loss_sum))
      epoch += 1
      last = epoch == config.train.num_epochs
      if epoch % config.eval.every_epochs == 0 or last:
        eval_start = time.time()
        metrics = evaluate_fn(state, side)
        record = {
          "epoch": epoch, "step": int(state.step), "loss": epoch_loss, **metrics,
          "samples_per_sec": timed_steps * batch / train_seconds,
          "train_s": train_seconds, "eval_s": time.time() - eval_start,
          "wall_s": time.time() - start_time,
        }
        log.write(record)
        _log_metrics(config, record)
      stopping = (guard.should_stop() or epoch * steps == stop_at) and not last
      if ckpt is not None and (epoch % config.checkpoint.every_epochs == 0 or last or stopping):
        ckpt.save(int(state.step), state, wait=stopping)
      if stopping:
        logging.warning("Stopped after epoch %d: checkpoint saved, exiting.", epoch)
        log.close()
        return {}

  if ckpt is not None:
    ckpt.wait()
    ckpt.close()
  history = log.records
  log.close()
  return summarize(history, config.eval.top_k)


def summarize(history: list[dict], k: int) -> dict:
  """Best HR@K and NDCG@K over the run and the epochs they came from, logged and returned."""
  if not history:
    return {}
  best_hr = max(history, key=lambda r: r[f"hr@{k}"])
  best_ndcg = max(history, key=lambda r: r[f"ndcg@{k}"])
  summary = {
    f"best_hr@{k}": best_hr[f"hr@{k}"], "best_hr_epoch": best_hr["epoch"],
    f"best_ndcg@{k}": best_ndcg[f"ndcg@{k}"], "best_ndcg_epoch": best_ndcg["epoch"],
    "final": history[-1],
  }
  logging.info(
    "Best HR@%d %.4f (epoch %d), best NDCG@%d %.4f (epoch %d); final HR@%d %.4f NDCG@%d %.4f.",
    k, best_hr[f"hr@{k}"], best_hr["epoch"], k, best_ndcg[f"ndcg@{k}"], best_ndcg["epoch"],
    k, history[-1][f"hr@{k}"], k, history[-1][f"ndcg@{k}"],
  )
  print(
    f"Best HR@{k} {best_hr[f'hr@{k}']:.4f} (epoch {best_hr['epoch']}), "
    f"best NDCG@{k} {best_ndcg[f'ndcg@{k}']:.4f} (epoch {best_ndcg['epoch']})",
    flush=True,
  )
  return summary
