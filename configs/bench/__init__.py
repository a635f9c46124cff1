"""Benchmark configs: `python -m ncf_jax.benchmark --config=configs/bench/<name>.py`."""
