"""Flax NNX modules of the NCF family: GMF, MLP, NeuMF (He et al. 2017), NeuralCF, MF.

The modules hold only the dense layers. Embedding tables are declared by
`table_specs` and live outside the module (ncf_jax.embedding shards them over the
mesh and updates them sparsely); the trainer looks up the rows of a batch and calls
the module on them:

  rows = {name: f32[B, dim] for each table}   # looked up by the trainer
  batch = {'user': int32[B], 'item': int32[B], 'timestamp': int32[B] (when used)}
  logits = model(rows, batch)                 # f32[B]

`batch` carries the ids themselves, for models that read side features of an id.

Table names are shared across models so that NeuMF can be initialised from trained
GMF and MLP runs (the paper's pretraining): GMF owns 'user_gmf'/'item_gmf', MLP owns
'user_mlp'/'item_mlp' and the tower 'mlp', NeuMF owns all of them.
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

MODEL_NAMES = ("gmf", "mlp", "neumf", "neuralcf", "mf", "two_tower")


@dataclasses.dataclass(frozen=True)
class TableDecl:
  """A table a model needs: its name, which id column indexes it, and its width."""

  name: str
  feature: str  # 'user' or 'item'
  dim: int


def _dense(in_dim: int, out_dim: int, dtype, rngs: nnx.Rngs, init=None) -> nnx.Linear:
  # The paper's Keras code uses Glorot-uniform hidden layers and a LeCun-uniform output.
  return nnx.Linear(
    in_dim,
    out_dim,
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=init or nnx.initializers.glorot_uniform(),
    rngs=rngs,
  )


def linear_of_concat(layer: nnx.Linear, parts: list[jax.Array]) -> jax.Array:
  """layer(jnp.concatenate(parts, -1)), without building the concatenation.

  One matmul per part against its own rows of the kernel, summed: the same parameters and
  FLOPs, but no [B, sum of widths] copy forward and no slicing of its gradient backward
  (8% of the MLPerf-shaped NeuMF step on a CPU; BENCHMARKS.md). Follows nnx.Linear's dtype
  promotion (compute in `layer.dtype`).
  """
  kernel = layer.kernel[...]
  bias = layer.bias[...] if layer.bias is not None else None
  out, start = None, 0
  for part in parts:
    x, w = layer.promote_dtype((part, kernel[start:start + part.shape[-1]]), dtype=layer.dtype)
    start += part.shape[-1]
    y = x @ w
    out = y if out is None else out + y
  if bias is not None:
    (bias,) = layer.promote_dtype((bias,), dtype=layer.dtype)
    out = out + bias
  return out


class Tower(nnx.Module):
  """ReLU MLP: in_dim -> widths[0] -> ... -> widths[-1]."""

  def __init__(self, in_dim: int, widths: tuple[int, ...], dtype, rngs: nnx.Rngs):
    self.num_layers = len(widths)
    dims = (in_dim, *widths)
    for i in range(len(widths)):
      # Named attributes (not a list) keep checkpoint paths readable: mlp/hidden_0/kernel.
      setattr(self, f"hidden_{i}", _dense(dims[i], dims[i + 1], dtype, rngs))

  def __call__(self, x: jax.Array) -> jax.Array:
    for i in range(self.num_layers):
      x = nnx.relu(getattr(self, f"hidden_{i}")(x))
    return x

  def of_concat(self, parts: list[jax.Array]) -> jax.Array:
    """self(jnp.concatenate(parts, -1)) without the concatenation (`linear_of_concat`)."""
    x = nnx.relu(linear_of_concat(self.hidden_0, parts))
    for i in range(1, self.num_layers):
      x = nnx.relu(getattr(self, f"hidden_{i}")(x))
    return x


def _mlp_widths(mlp_layers: tuple[int, ...], field: str = "model.mlp_layers") -> tuple[int, int]:
  if len(mlp_layers) < 2 or mlp_layers[0] % 2:
    raise ValueError(
      f"{field}={tuple(mlp_layers)}: need at least two widths and an even first width "
      "(it is the concatenated user+item embedding, e.g. (64, 32, 16, 8))."
    )
  return mlp_layers[0] // 2, mlp_layers[-1]


class GMF(nnx.Module):
  """Generalized matrix factorisation: logit = h . (p_u * q_i) + b."""

  def __init__(self, factors: int, dtype, rngs: nnx.Rngs):
    self.out = _dense(factors, 1, dtype, rngs, nnx.initializers.lecun_uniform())

  @staticmethod
  def tables(config: ml_collections.ConfigDict) -> list[TableDecl]:
    f = config.model.factors
    return [TableDecl("user_gmf", "user", f), TableDecl("item_gmf", "item", f)]

  def features(self, rows: dict[str, jax.Array]) -> jax.Array:
    return rows["user_gmf"] * rows["item_gmf"]

  def __call__(self, rows: dict[str, jax.Array], batch: dict | None = None) -> jax.Array:
    return self.out(self.features(rows))[:, 0]


class MLP(nnx.Module):
  """MLP over the concatenated user and item embeddings (the paper's MLP model)."""

  def __init__(self, mlp_layers: tuple[int, ...], dtype, rngs: nnx.Rngs):
    emb, last = _mlp_widths(mlp_layers)
    self.mlp = Tower(2 * emb, tuple(mlp_layers[1:]), dtype, rngs)
    self.out = _dense(last, 1, dtype, rngs, nnx.initializers.lecun_uniform())

  @staticmethod
  def tables(config: ml_collections.ConfigDict) -> list[TableDecl]:
    emb, _ = _mlp_widths(tuple(config.model.mlp_layers))
    return [TableDecl("user_mlp", "user", emb), TableDecl("item_mlp", "item", emb)]

  def features(self, rows: dict[str, jax.Array]) -> jax.Array:
    return self.mlp.of_concat([rows["user_mlp"], rows["item_mlp"]])

  def __call__(self, rows: dict[str, jax.Array], batch: dict | None = None) -> jax.Array:
    return self.out(self.features(rows))[:, 0]


class NeuMF(nnx.Module):
  """GMF and MLP with separate embeddings; the output layer sees both, concatenated."""

  def __init__(self, factors: int, mlp_layers: tuple[int, ...], dtype, rngs: nnx.Rngs):
    emb, last = _mlp_widths(mlp_layers)
    self.mlp = Tower(2 * emb, tuple(mlp_layers[1:]), dtype, rngs)
    self.out = _dense(factors + last, 1, dtype, rngs, nnx.initializers.lecun_uniform())

  @staticmethod
  def tables(config: ml_collections.ConfigDict) -> list[TableDecl]:
    return GMF.tables(config) + MLP.tables(config)

  def __call__(self, rows: dict[str, jax.Array], batch: dict | None = None) -> jax.Array:
    gmf = rows["user_gmf"] * rows["item_gmf"]
    mlp = self.mlp.of_concat([rows["user_mlp"], rows["item_mlp"]])
    return linear_of_concat(self.out, [gmf, mlp])[:, 0]


class NeuralCF(nnx.Module):
  """One embedding per side, concatenated, through an MLP to a logit."""

  def __init__(self, factors: int, mlp_layers: tuple[int, ...], dtype, rngs: nnx.Rngs):
    widths = tuple(mlp_layers[1:]) or (factors,)
    self.mlp = Tower(2 * factors, widths, dtype, rngs)
    self.out = _dense(widths[-1], 1, dtype, rngs, nnx.initializers.lecun_uniform())

  @staticmethod
  def tables(config: ml_collections.ConfigDict) -> list[TableDecl]:
    f = config.model.factors
    return [TableDecl("user_ncf", "user", f), TableDecl("item_ncf", "item", f)]

  def __call__(self, rows: dict[str, jax.Array], batch: dict | None = None) -> jax.Array:
    return self.out(self.mlp.of_concat([rows["user_ncf"], rows["item_ncf"]]))[:, 0]


class MF(nnx.Module):
  """Dot-product matrix factorisation with user, item and global biases (Rendle et al. 2020)."""

  def __init__(self, rngs: nnx.Rngs):
    del rngs
    self.bias = nnx.Param(jnp.zeros((), jnp.float32))

  @staticmethod
  def tables(config: ml_collections.ConfigDict) -> list[TableDecl]:
    f = config.model.factors
    return [
      TableDecl("user_mf", "user", f),
      TableDecl("item_mf", "item", f),
      TableDecl("user_bias", "user", 1),
      TableDecl("item_bias", "item", 1),
    ]

  def __call__(self, rows: dict[str, jax.Array], batch: dict | None = None) -> jax.Array:
    dot = jnp.sum(rows["user_mf"] * rows["item_mf"], axis=-1)
    return dot + rows["user_bias"][:, 0] + rows["item_bias"][:, 0] + self.bias[...]


def _dtype(config: ml_collections.ConfigDict):
  names = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
  if config.model.dtype not in names:
    raise ValueError(f"model.dtype={config.model.dtype!r}: expected one of {sorted(names)}.")
  return names[config.model.dtype]


def check_model_name(config: ml_collections.ConfigDict) -> None:
  if config.model.name not in MODEL_NAMES:
    raise ValueError(
      f"model.name={config.model.name!r} is not a model; expected one of {', '.join(MODEL_NAMES)}."
    )


def create_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs, dataset=None) -> nnx.Module:
  """Builds the dense part of `config.model.name`. `dataset` supplies side-feature sizes."""
  check_model_name(config)
  name, dtype = config.model.name, _dtype(config)
  if name == "gmf":
    return GMF(config.model.factors, dtype, rngs)
  if name == "mlp":
    return MLP(tuple(config.model.mlp_layers), dtype, rngs)
  if name == "neumf":
    return NeuMF(config.model.factors, tuple(config.model.mlp_layers), dtype, rngs)
  if name == "neuralcf":
    return NeuralCF(config.model.factors, tuple(config.model.mlp_layers), dtype, rngs)
  if name == "mf":
    return MF(rngs)
  from ncf_jax import two_tower  # noqa: PLC0415  (only this model needs side features)

  return two_tower.TwoTower.from_config(config, dataset, rngs)


def model_tables(config: ml_collections.ConfigDict, dataset=None) -> list[TableDecl]:
  """The embedding tables `config.model.name` looks up."""
  check_model_name(config)
  classes = {"gmf": GMF, "mlp": MLP, "neumf": NeuMF, "neuralcf": NeuralCF, "mf": MF}
  if config.model.name in classes:
    return classes[config.model.name].tables(config)
  from ncf_jax import two_tower  # noqa: PLC0415

  return two_tower.TwoTower.tables(config, dataset)


def model_flops_per_sample(config: ml_collections.ConfigDict) -> float:
  """Analytic training FLOPs per sample of the dense layers (forward + backward = 3x forward).

  Counts multiply-adds as 2 FLOPs; lookups and the optimizer are memory traffic, not FLOPs.
  """
  name, f = config.model.name, config.model.factors
  layers = tuple(config.model.mlp_layers)

  def tower(dims):  # ReLU tower plus the 1-unit output layer
    return sum(2 * a * b for a, b in zip(dims[:-1], dims[1:], strict=False)) + 2 * dims[-1]

  if name == "gmf":
    forward = f + tower((f,))
  elif name == "mlp":
    forward = tower(layers)
  elif name == "neumf":
    forward = f + tower(layers) - 2 * layers[-1] + 2 * (f + layers[-1])
  elif name == "neuralcf":
    forward = tower((2 * f, *(layers[1:] or (f,))))
  elif name == "mf":
    forward = 2 * f + 3
  else:
    from ncf_jax import two_tower  # noqa: PLC0415

    forward = two_tower.forward_flops(config)
  return 3.0 * forward
