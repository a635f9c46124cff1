"""Data: TFDS builders, loading into numpy, on-device sampling, synthetic data."""
