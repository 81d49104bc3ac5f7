"""Word-level language-modelling corpora (Penn Treebank, WikiText-2) from their token files.

The files are the standard preprocessed ones: one sentence a line, words separated by spaces,
rare words already `<unk>`; each line ends with an `<eos>` token. As in the official DARTS
(and AWD-LSTM) code, the vocabulary is built in order of first appearance over train, valid
and test; a split becomes `batch_size` parallel streams (`batchify`), and training reads
windows of `seq_len` tokens from them, predicting each next token.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from darts_jax.errors import DataError

SPLITS = ("train", "valid", "test")
# File names by corpus layout: AWD-LSTM's getdata.sh ({split}.txt), Mikolov's PTB release
# (ptb.{split}.txt) and the WikiText-2 archive (wiki.{split}.tokens).
_NAMES = ("{split}.txt", "ptb.{split}.txt", "wiki.{split}.tokens")
_SOURCES = {
    "ptb": "Mikolov's simple-examples.tgz (data/ptb.{train,valid,test}.txt), "
           "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz",
    "wikitext2": "wikitext-2-v1.zip (wiki.{train,valid,test}.tokens), "
                 "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip",
}


class Corpus(NamedTuple):
  vocab: tuple[str, ...]  # token id -> word
  train: np.ndarray  # (n,) int32 token ids
  valid: np.ndarray
  test: np.ndarray


def load_corpus(path: str, name: str = "ptb") -> Corpus:
  """Reads `{train,valid,test}` token files from the folder `path`."""
  files = {}
  for split in SPLITS:
    candidates = [os.path.join(path, pattern.format(split=split)) for pattern in _NAMES]
    found = [f for f in candidates if os.path.isfile(f)]
    if not found:
      source = _SOURCES.get(name, _SOURCES["ptb"])
      raise DataError(f"No {split} split of the {name} corpus in {path!r} (looked for "
                      f"{', '.join(p.format(split=split) for p in _NAMES)}): get it from "
                      f"{source}, and set --config.data.dir to the folder.")
    files[split] = found[0]
  index: dict[str, int] = {}
  ids = {}
  for split in SPLITS:  # the official order: train, then valid, then test
    with open(files[split], encoding="utf-8") as f:
      tokens = [index.setdefault(w, len(index)) for line in f for w in line.split() + ["<eos>"]]
    if not tokens:
      raise DataError(f"{files[split]} holds no tokens.")
    ids[split] = np.asarray(tokens, np.int32)
  return Corpus(tuple(index), ids["train"], ids["valid"], ids["test"])


def batchify(tokens: np.ndarray, batch_size: int) -> np.ndarray:
  """(T, batch_size): the stream cut into batch_size contiguous pieces, side by side; the
  tokens that do not fill a last row are dropped, as in the official code."""
  steps = len(tokens) // batch_size
  if steps < 2:
    raise DataError(f"{len(tokens)} tokens cannot make streams of batch size {batch_size}: "
                    "lower the batch size.")
  return tokens[:steps * batch_size].reshape(batch_size, steps).T.copy()


def window(streams: np.ndarray, start: int, seq_len: int, max_len: int | None = None):
  """Inputs and next-token targets of `seq_len` steps from `start`, padded to `max_len` rows.

  Returns `{"inputs": (max_len, B), "targets": (max_len, B), "mask": (max_len,)}` with mask 1
  on the real steps. Padding to a few fixed lengths keeps the number of compiled step shapes
  small while the window length varies every step (DARTS' random BPTT).
  """
  seq_len = min(seq_len, len(streams) - 1 - start)
  max_len = max_len or seq_len
  inputs = np.zeros((max_len, streams.shape[1]), np.int32)
  targets = np.zeros_like(inputs)
  inputs[:seq_len] = streams[start:start + seq_len]
  targets[:seq_len] = streams[start + 1:start + 1 + seq_len]
  mask = (np.arange(max_len) < seq_len).astype(np.float32)
  return {"inputs": inputs, "targets": targets, "mask": mask}


def bucket(seq_len: int, width: int = 5) -> int:
  """The compiled length a window of `seq_len` steps is padded to: the next multiple of
  `width`. Width 5 pads the common 35-step window not at all and compiles about 5 shapes
  for DARTS' N(35, 5) lengths."""
  return -(-seq_len // width) * width


def random_seq_len(rng: np.random.Generator, bptt: int, max_len: int) -> int:
  """DARTS' random BPTT length: int(N(bptt, 5)), N(bptt / 2, 5) with probability 0.05, in
  [5, max_len]."""
  mean = bptt if rng.random() < 0.95 else bptt / 2
  return min(max(5, int(rng.normal(mean, 5))), max_len)


def epoch_window_lengths(rng: np.random.Generator, steps: int, bptt: int, max_len: int):
  """The random window lengths of one pass over `steps` time steps (drawn up front: their
  number varies, and the progress bar wants it)."""
  lengths, position = [], 0
  while position < steps - 2:
    lengths.append(random_seq_len(rng, bptt, max_len))
    position += lengths[-1]
  return lengths
