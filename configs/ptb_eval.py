"""Train a recurrent DARTS cell from scratch on Penn Treebank (docs/reference.md,
"Recurrent evaluation").

    python main.py --config configs/ptb_eval.py --config.genotype=DARTS_V2

The corpus is read from data/ptb, or from `--config.data.dir=/path/to/ptb`.

850 units (22,960,000 parameters), batch 64, SGD lr 20 switching to averaged SGD when the
validation perplexity stops improving. The genotype is DARTS_V1, DARTS_V2 or the
genotype.json of a recurrent search. Where the paper is silent, the official rnn/train.py's
settings: seed 1267, 8000 epochs (averaged SGD converges long before; stop when the
validation perplexity does), non-monotone window 5, validation batch 10, test batch 1.
"""

from configs import ptb_search


def get_config():
  config = ptb_search.get_config()
  config.task = "rnn_eval"
  config.seed = 1267
  config.genotype = "DARTS_V2"
  del config.hypergradient, config.alpha_learning_rate, config.alpha_weight_decay
  del config.relaxation
  del config.data.num_valid
  config.model.embed_size = 850
  config.model.hidden_size = 850
  config.model.dropout_e = 0.1
  config.epochs = 8000
  config.batch_size = 64
  config.test_batch_size = 1
  config.weight_decay = 8e-7
  config.nonmono = 5  # epochs without improvement over the best before it, then averaging
  config.log_every = 50
  return config
