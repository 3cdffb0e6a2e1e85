r"""Default configuration of the ideal noisy-label experiment.

python -m experiments.ideal --config=experiments/ideal/configs/default.py --workdir=runs/ideal
"""

import ml_collections

from experiments.shared.config import base_config


def get_config() -> ml_collections.ConfigDict:
    c = base_config()
    # task
    c.num_classes = 10
    c.input_dim = 20
    c.num_target = 200
    c.num_related = 5000
    c.num_test = 10000
    c.corrupt_fraction = 0.75
    c.corruption = "uniform"  # or "shift": every corrupted label becomes (y + 1) mod C
    c.model_sees_flag = False  # the flag is an input of the weighting network; optionally of the model too
    # runs
    c.methods = ("target_only", "union", "pretrain_finetune", "oracle", "l2rw", "meta_table", "meta_net", "mwnet")
    c.num_seeds = 5
    c.train_steps = 4000
    c.log_every = 500
    c.checkpoint_every = 1000
    # model and its optimizer
    c.hidden_sizes = (64,)
    c.batch_size = 32  # target (and outer) batch
    c.related_batch_size = 128
    c.learning_rate = 1e-3
    c.grad_clip = 0.0
    # weighting
    c.meta_learning_rate = 1e-2
    c.table_meta_learning_rate = 0.1
    c.weight_net_hidden = (32,)
    # any of x, flag, label; with x and label too the net also scores correct examples unevenly (see README)
    c.weight_net_inputs = ("flag",)
    # the meta-gradient estimator and related sampling that came out best in the comparison of
    # results/ideal_estimators (within 0.4 points of the oracle at 75 % and 90 % wrong labels)
    c.estimator = "implicit"
    c.related_sampling = "weighted"
    return c
