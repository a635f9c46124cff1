"""pytest setup shared by all tests."""

import os

# 8 simulated CPU devices, so sharding code runs on real meshes. Must precede `import jax`.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
