"""ncf_jax: Neural Collaborative Filtering in JAX/Flax, with sharded embedding tables."""
