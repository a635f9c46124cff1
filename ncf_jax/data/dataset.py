"""The in-memory form of a prepared dataset, the contract between data and trainer."""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A leave-one-out interaction dataset with dense ids.

  User ids are 0..num_users-1 and item ids 0..num_items-1. `user_ids[u]` and
  `item_ids[i]` give the original ids (int64 or str) of dense ids u and i.
  """

  train_users: np.ndarray  # int32[N]
  train_items: np.ndarray  # int32[N]
  train_timestamps: np.ndarray  # int64[N] (0 where the source has none)
  test_users: np.ndarray  # int32[U], each evaluated user once
  test_items: np.ndarray  # int32[U], the held-out positive
  test_negatives: np.ndarray  # int32[U, M], sampled negatives of each test user
  num_users: int
  num_items: int
  user_ids: np.ndarray  # [num_users] original ids
  item_ids: np.ndarray  # [num_items] original ids
  item_titles: np.ndarray | None = None  # str[num_items] where known
  # Side features, one row per dense id: name -> int32[num_users] (categorical) or
  # float32/int32[num_users, K] (multi-hot bags). `*_feature_sizes[name]` is the
  # number of categories of a categorical feature (or K of a bag).
  user_features: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  item_features: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  user_feature_sizes: dict[str, int] = dataclasses.field(default_factory=dict)
  item_feature_sizes: dict[str, int] = dataclasses.field(default_factory=dict)
  test_timestamps: np.ndarray | None = None  # int64[U] timestamp of the held-out positive
  name: str = ""

  @property
  def num_train(self) -> int:
    return int(self.train_users.shape[0])

  @property
  def num_test(self) -> int:
    return int(self.test_users.shape[0])
