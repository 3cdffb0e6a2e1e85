r"""Default configuration of the personalized-dialog experiment.

python -m experiments.dialog --config=experiments/dialog/configs/default.py --workdir=results/dialog
"""

import ml_collections

from experiments.shared.config import base_config


def get_config() -> ml_collections.ConfigDict:
    c = base_config()
    # data (data_dir "" = the copies shipped in metadial/data/files)
    c.data_dir = ""
    c.target_dialogs = (50, 100, 250, 1000)  # an int or a list; nested subsets of small/ train per seed
    c.max_dialogs = 0  # > 0 keeps only the first N dialogs of every file (smoke runs)
    # runs
    c.methods = ("target_only", "union", "pretrain_finetune", "l2rw", "meta_table", "meta_net")
    c.num_seeds = 3
    c.train_steps = 3000
    c.eval_every = 500  # dev evaluation for model selection (best dev per-response accuracy)
    c.log_every = c.get_ref("eval_every")  # logged with every dev evaluation
    c.eval_batch_size = 256
    c.checkpoint_every = 500
    # model (MemN2N) and optimizer
    c.hops = 3
    c.embedding_size = 20
    c.memory_size = 250  # most recent sentences kept in memory (capped at the longest dialog)
    c.target_projection = True
    c.batch_size = 32  # target, related and outer batches
    c.learning_rate = 1e-3
    c.grad_clip = 0.5
    # weighting
    c.meta_learning_rate = 1e-3
    c.table_meta_learning_rate = 0.1
    c.gate_embedding_size = 20
    return c
