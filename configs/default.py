"""Default config: NeuMF on the bundled ml-latest-small, every field documented.

Run it:
  python -m ncf_jax.main --config=configs/default.py --workdir=/tmp/ncf_default

Every other config starts from this one and changes a few fields. Any field can be
overridden on the command line, e.g. `--config.train.batch_size=4096`.
"""

import os

import ml_collections

# The project root, so relative data paths work from any current directory.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Real (non-redistributable) MovieLens data lives beside the project, never inside it.
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  # ---------------------------------------------------------------- data
  config.data = data = ml_collections.ConfigDict()
  # Which TFDS builder prepares the data:
  #   'movielens'  a MovieLens archive or extracted folder (variant below); the
  #                project makes its own leave-one-out split and test negatives.
  #   'ncf'        the NCF paper's *.train.rating / *.test.rating / *.test.negative.
  #   'synthetic'  Zipf-distributed ids generated on the device (see data.synthetic).
  data.name = "movielens"
  # MovieLens variant: 'latest-small', '100k', '1m', '20m', '25m'.
  data.variant = "latest-small"
  # Folder with the raw files (or a .zip archive). Empty: download the official
  # archive (needs network) into data.cache_dir.
  data.dir = os.path.join(ROOT, "third_party", "ml-latest-small")
  # MovieLens only: the ratings file inside data.dir. Empty: the variant's usual name
  # (ratings.csv, ratings.dat, u.data; a .gz beside it is read too).
  data.ratings_file = ""
  # NCF only: file prefix inside data.dir ('ml-1m' -> ml-1m.train.rating, ...),
  # and optional explicit paths that override the prefix (absolute or relative to data.dir).
  data.ncf_prefix = "ml-1m"
  data.train_file = ""
  data.test_file = ""
  data.negative_file = ""
  # NCF only: optional ML-1M side features. side_dir is a folder with users.dat and/or
  # movies.dat (NCF user u is UserID u+1); ncf_item_map is a tsv 'ncf_item_index<TAB>
  # movielens_movie_id' (absolute or relative to data.dir) joining NCF items to movies.dat
  # (unmapped items: unknown year, no genres). '' = none.
  data.side_dir = ""
  data.ncf_item_map = ""
  # Test negatives per user when the project samples them (99 in the paper, 999 in MLPerf).
  data.num_test_negatives = 99
  # Seed of the test-negative sampler (fixed: the test set must not change between runs).
  data.split_seed = 0
  # Where prepared TFDS datasets are cached. Empty: ~/.cache/ncf_jax/tfds.
  data.cache_dir = ""
  # Synthetic data (data.name == 'synthetic'): vocabulary, size and popularity skew.
  data.synthetic = ml_collections.ConfigDict()
  data.synthetic.num_users = 100_000
  data.synthetic.num_items = 100_000
  data.synthetic.num_interactions = 1_000_000
  data.synthetic.zipf_exponent = 1.0  # 0.0 is uniform
  data.synthetic.num_test_users = 1_000
  data.synthetic.seed = 0

  # ---------------------------------------------------------------- model
  config.model = model = ml_collections.ConfigDict()
  # 'gmf', 'mlp', 'neumf' (He et al. 2017), 'neuralcf' (concatenated user/item
  # embeddings -> MLP), 'mf' (dot product + biases), 'two_tower'.
  model.name = "neumf"
  # GMF / MF embedding size (the paper's "predictive factors").
  model.factors = 8
  # MLP tower widths. The first is the concatenated user+item MLP embedding, so each
  # MLP embedding has mlp_layers[0] // 2 dims (the paper's convention).
  model.mlp_layers = (64, 32, 16, 8)
  # Std of the normal initialiser of embedding tables (the paper uses 0.01).
  model.embedding_init_std = 0.01
  # NeuMF pretraining: workdirs of trained GMF and MLP runs ('' = train from scratch),
  # and the weight alpha of the GMF half in the output layer (0.5 in the paper).
  model.pretrained_gmf = ""
  model.pretrained_mlp = ""
  model.pretrain_alpha = 0.5
  # Compute dtype of lookups and dense layers: 'float32' or 'bfloat16' (mixed
  # precision: master weights and the loss stay float32).
  model.dtype = "float32"
  # Two-tower model (model.name == 'two_tower').
  model.tower_layers = (64, 32)  # hidden widths of each tower; the last is the output dim
  model.use_side_features = True  # user/item side features from the dataset
  model.use_context = False  # a context tower (hour-of-day, day-of-week)
  model.learn_temperature = False  # learned temperature and bias on the dot product

  # ---------------------------------------------------------------- embeddings
  config.embedding = emb = ml_collections.ConfigDict()
  # Optimizer of the embedding tables:
  #   'dense_adam'  optax Adam over whole tables every step (the paper's and MLPerf's choice)
  #   'adam'        sparse Adam: per-row moments and per-row step counts, touched rows only
  #   'adagrad'     row-wise Adagrad (one accumulator per row, as TorchRec/FBGEMM)
  #   'sgd'         plain SGD on the touched rows
  emb.optimizer = "dense_adam"
  # Learning rate of the tables; <= 0 uses train.learning_rate.
  emb.learning_rate = -1.0
  # Storage dtype of tables: 'float32' or 'bfloat16' (optimizer state stays float32).
  emb.dtype = "float32"
  # Table rows are padded to a multiple of this, so any device count dividing it
  # shards them evenly and checkpoints restore onto other meshes.
  emb.pad_multiple = 256
  # > 0: hash original user/item ids into this many buckets (stable, documented hash
  # in ncf_jax/embedding.py) instead of the exact dense remapping.
  emb.user_hash_buckets = 0
  emb.item_hash_buckets = 0

  # ---------------------------------------------------------------- training
  config.train = train = ml_collections.ConfigDict()
  train.batch_size = 256  # global batch, split over all devices
  train.num_epochs = 20
  train.learning_rate = 0.001
  train.optimizer = "adam"  # dense layers: 'adam', 'adamw', 'sgd'
  train.adam_b1 = 0.9
  train.adam_b2 = 0.999
  train.adam_eps = 1e-8
  train.weight_decay = 0.0  # 'adamw' only
  train.num_negatives = 4  # sampled negatives per positive, redrawn every epoch on the device
  train.seed = 0  # parameters, negatives and shuffling
  # Loss: 'bce' (pointwise, sampled negatives) or 'softmax' (two-tower in-batch
  # sampled softmax with log-Q correction).
  train.loss = "bce"
  # > 0: compute each step's gradient over slices of this many rows in turn and sum them
  # (gradient accumulation; bce only): the same step and result, with the activations of one
  # slice at a time (MLPerf shape, batch 1,048,576: peak memory 7.6 -> 4.4 GB).
  train.microbatch_size = 0
  # Training steps fused into one jitted call (lax.scan); 0 = a whole epoch per call.
  train.steps_per_call = 0
  # Progress line every this many steps (rounded up to whole calls).
  train.log_every_steps = 1000
  # > 0: stop after this global step with a checkpoint, as on preemption (time-boxed jobs);
  # rerunning with a larger value or 0 continues exactly where it stopped.
  train.stop_at_step = 0

  # ---------------------------------------------------------------- evaluation
  config.eval = ev = ml_collections.ConfigDict()
  ev.top_k = 10
  ev.every_epochs = 1  # evaluate every N epochs (and after the last)
  ev.batch_users = 4096  # test users scored per device call
  ev.full_ranking = False  # also Recall@K / NDCG@K against all items
  ev.item_block = 65536  # items scored per block in full ranking

  # ---------------------------------------------------------------- checkpoints
  config.checkpoint = ckpt = ml_collections.ConfigDict()
  ckpt.every_epochs = 1  # 0 disables checkpoints
  ckpt.keep = 3
  ckpt.async_save = True

  # ---------------------------------------------------------------- devices
  config.mesh = mesh = ml_collections.ConfigDict()
  # Device mesh; -1 takes the remaining devices. The batch is split over all devices;
  # embedding table rows are sharded over all devices; dense layers are replicated.
  mesh.shape = (-1, 1)
  mesh.axes = ("data", "model")

  # ---------------------------------------------------------------- multi-host
  config.distributed = dist = ml_collections.ConfigDict()
  # 'auto': call jax.distributed.initialize() when a cluster is detected (Cloud TPU,
  # SLURM, Kubernetes, OpenMPI) or a coordinator is given; 'off': never.
  dist.mode = "auto"
  dist.coordinator_address = ""
  dist.num_processes = -1
  dist.process_id = -1
  dist.initialization_timeout_s = 300

  return config
