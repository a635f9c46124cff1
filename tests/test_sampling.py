"""The epoch sampler's keyed permutation: a bijection, deterministic, and well mixed."""

import jax
import numpy as np
import pytest

from ncf_jax.data import sampling


@pytest.mark.parametrize("n", [1, 2, 3, 255, 256, 257, 1000, 4099])
def test_permutation_prefix_is_a_permutation(n):
  full = np.asarray(sampling.permutation_prefix(jax.random.key(3), n, n))
  np.testing.assert_array_equal(np.sort(full), np.arange(n))
  # A prefix is the start of the same permutation, not a different one.
  prefix = np.asarray(sampling.permutation_prefix(jax.random.key(3), n, max(1, n // 2)))
  np.testing.assert_array_equal(prefix, full[: prefix.shape[0]])


def test_permutation_prefix_is_deterministic_and_keyed():
  a = np.asarray(sampling.permutation_prefix(jax.random.key(0), 10_000, 5_000))
  b = np.asarray(sampling.permutation_prefix(jax.random.key(0), 10_000, 5_000))
  c = np.asarray(sampling.permutation_prefix(jax.random.key(1), 10_000, 5_000))
  np.testing.assert_array_equal(a, b)
  assert (a != c).mean() > 0.99


def test_permutation_prefix_mixes_like_a_random_shuffle():
  n = 10_000
  p = np.asarray(sampling.permutation_prefix(jax.random.key(7), n, n)).astype(np.int64)
  # No visible order: as many rises as falls, neighbours uncorrelated, each tenth of the
  # output drawn evenly from every tenth of the input (chi-square, 81 degrees of freedom).
  assert abs((np.diff(p) > 0).mean() - 0.5) < 0.02
  assert abs(np.corrcoef(p[:-1], p[1:])[0, 1]) < 0.03
  counts = np.histogram2d(np.arange(n), p, bins=10)[0]
  chi2 = ((counts - n / 100) ** 2 / (n / 100)).sum()
  assert chi2 < 140  # p ~ 1e-4 under a uniform shuffle
  # The first entry over many keys covers the range evenly.
  keys = jax.random.split(jax.random.key(0), 400)
  firsts = np.asarray(jax.vmap(lambda k: sampling.permutation_prefix(k, 100, 1)[0])(keys))
  assert np.histogram(firsts, bins=4, range=(0, 100))[0].min() > 60


def test_permutation_prefix_rejects_bad_sizes():
  with pytest.raises(ValueError, match="size=5"):
    sampling.permutation_prefix(jax.random.key(0), 4, 5)


def test_uniform_ints_are_uniform_in_range_and_keyed():
  draws = np.asarray(sampling.uniform_ints(jax.random.key(5), 200_000, 37))
  assert draws.min() == 0 and draws.max() == 36
  counts = np.bincount(draws, minlength=37)
  expected = draws.size / 37
  assert ((counts - expected) ** 2 / expected).sum() < 80  # chi-square, 36 dof: p ~ 5e-5
  other = np.asarray(sampling.uniform_ints(jax.random.key(6), 200_000, 37))
  assert (draws != other).mean() > 0.9
  np.testing.assert_array_equal(draws, sampling.uniform_ints(jax.random.key(5), 200_000, 37))
