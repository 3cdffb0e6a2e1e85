"""Default configuration of the personalized-dialog experiment (``python -m experiments.dialog``)."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # data (data_dir "" = the copies shipped in metadial/data/files)
    c.data_dir = ""
    c.target_dialogs = (50, 100, 250, 1000)  # an int or a list; nested subsets of small/ train per seed
    c.max_dialogs = 0  # > 0 keeps only the first N dialogs of every file (smoke runs)
    # runs
    c.methods = ("target_only", "union", "pretrain_finetune", "l2rw", "meta_table", "meta_net")
    c.num_seeds = 3
    c.seed = 0
    c.train_steps = 3000
    c.eval_every = 500  # dev evaluation for model selection (best dev per-response accuracy)
    c.eval_batch_size = 256
    c.checkpoint_every = 500  # checkpoints under DIR/checkpoints/<method>-<size>-seed<k>; a rerun resumes
    c.keep_checkpoints = 2
    c.tensorboard = True  # event files under DIR/tensorboard/ (metrics also in DIR/metrics.jsonl)
    c.pretrain_fraction = 0.5  # pretrain_finetune: this fraction of the steps on related, the rest on target
    # model (MemN2N) and optimizer
    c.hops = 3
    c.embedding_size = 20
    c.memory_size = 250  # most recent sentences kept in memory (capped at the longest dialog)
    c.target_projection = True
    c.batch_size = 32  # target, related and outer batches
    c.learning_rate = 1e-3
    c.grad_clip = 0.5  # global-norm clipping of the model's gradients; 0 disables
    c.eps_root = 1e-8
    # weighting
    c.meta_learning_rate = 1e-3
    c.table_meta_learning_rate = 0.1
    c.gate_embedding_size = 20
    c.normalize_weights = True
    c.inner_steps = 1
    c.fresh_inner_batches = False  # True: the inner_steps simulated steps each draw new batches (a longer horizon)
    c.outer_batch = "fresh"  # outer loss on a second target batch ("fresh") or the inner step's ("target")
    c.target_in_inner = True
    c.separate_target_step = False  # True: real related step, then a real target step (the authors' code)
    return c
