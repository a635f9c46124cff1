"""NeuMF initialised from trained GMF and MLP runs (He et al. 2017, section 3.4.1).

The GMF run supplies the 'user_gmf'/'item_gmf' tables and its output weights h_gmf;
the MLP run supplies 'user_mlp'/'item_mlp', the tower and h_mlp. NeuMF's output
layer becomes [alpha * h_gmf, (1 - alpha) * h_mlp] with bias
alpha * b_gmf + (1 - alpha) * b_mlp. Optimizer state starts fresh.
"""

import jax
import ml_collections
import numpy as np
from absl import logging

from ncf_jax import checkpoint, sharding


def _put_like(value: np.ndarray, like: jax.Array, what: str) -> jax.Array:
  if value.shape != like.shape:
    raise ValueError(
      f"Pretrained {what} has shape {value.shape} but NeuMF needs {like.shape}: train GMF/MLP "
      "with the same data, model.factors, model.mlp_layers and embedding.pad_multiple."
    )
  return sharding.put_global(np.asarray(value, like.dtype), like.sharding)


def load_into(config: ml_collections.ConfigDict, state):
  """Returns `state` (a fresh NeuMF TrainState) with pretrained GMF and MLP weights."""
  if config.model.name != "neumf":
    raise ValueError(
      f"model.pretrained_gmf/pretrained_mlp are for model.name='neumf', not {config.model.name!r}."
    )
  if not (config.model.pretrained_gmf and config.model.pretrained_mlp):
    raise ValueError("Set both model.pretrained_gmf and model.pretrained_mlp (trained workdirs).")
  gmf = checkpoint.restore_raw(config.model.pretrained_gmf)
  mlp = checkpoint.restore_raw(config.model.pretrained_mlp)
  alpha = config.model.pretrain_alpha
  tables = dict(state.tables)
  for name, source in (("user_gmf", gmf), ("item_gmf", gmf), ("user_mlp", mlp), ("item_mlp", mlp)):
    if name not in source["tables"]:
      raise ValueError(f"The pretrained run has no table {name!r}: is it a GMF/MLP workdir?")
    tables[name] = _put_like(source["tables"][name], state.tables[name], f"table {name}")
  params = jax.tree.map(lambda x: x, state.params)
  params["mlp"] = jax.tree.map(
    lambda new, old: _put_like(new, old, "MLP tower"), mlp["params"]["mlp"], state.params["mlp"]
  )
  out = state.params["out"]
  kernel = np.concatenate(
    [alpha * gmf["params"]["out"]["kernel"], (1 - alpha) * mlp["params"]["out"]["kernel"]], axis=0
  )
  bias = alpha * gmf["params"]["out"]["bias"] + (1 - alpha) * mlp["params"]["out"]["bias"]
  params["out"] = {
    "kernel": _put_like(kernel, out["kernel"], "output kernel"),
    "bias": _put_like(bias, out["bias"], "output bias"),
  }
  logging.info(
    "NeuMF initialised from GMF %s and MLP %s (alpha %.2f).",
    config.model.pretrained_gmf, config.model.pretrained_mlp, alpha,
  )
  return state.replace(tables=tables, params=params)
