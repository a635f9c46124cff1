"""Command line entry point: `python -m ncf_jax.main --config=configs/<name>.py --workdir=DIR`.

Any config field can be overridden, e.g. `--config.train.batch_size=4096`. Multi-host
runs add `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` (or rely on
jax's auto-detection on Cloud TPU, SLURM and Kubernetes); see docs/launch.md.
"""

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and TensorBoard logs.")
flags.DEFINE_string("coordinator_address", None, "Multi-host: HOST:PORT of process 0.")
flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-host: index of this process.")
config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(logging.logging.Filter):
  """Drops INFO chatter of orbax and tfds (dozens of lines per checkpoint); keeps warnings."""

  def filter(self, record) -> bool:
    noisy = "/orbax/" in record.pathname or "/tensorflow_datasets/" in record.pathname
    return record.levelno >= logging.logging.WARNING or not noisy


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.get_absl_logger().addFilter(_QuietLibraries())
  # Imported here so absl has parsed flags (and jax sees XLA_FLAGS) before jax loads.
  from ncf_jax import distributed, train

  distributed.initialize(
    FLAGS.config.distributed, FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
  )
  distributed.check_same_config(FLAGS.config)
  logging.info("Config:\n%s", FLAGS.config)
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
