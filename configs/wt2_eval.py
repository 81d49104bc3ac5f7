"""Train a recurrent DARTS cell (found on PTB) from scratch on WikiText-2.

    python main.py --config configs/wt2_eval.py --config.genotype=DARTS_V2

The corpus is read from data/wikitext-2, or from `--config.data.dir=/path/to/wikitext-2`.

700 units (33M parameters with the 33,278-word vocabulary), L2 5e-7, node-input dropout 0.15
(docs/reference.md, "Recurrent evaluation"); everything else as configs/ptb_eval.py, from
which it derives. The
folder holds wiki.{train,valid,test}.tokens (or {train,valid,test}.txt).
"""

from configs import ptb_eval


def get_config():
  config = ptb_eval.get_config()
  config.data.name = "wikitext2"
  config.data.dir = "data/wikitext-2"
  config.model.embed_size = 700
  config.model.hidden_size = 700
  config.model.dropout_h = 0.15
  config.weight_decay = 5e-7
  return config
