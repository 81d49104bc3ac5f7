"""Times one step of the official DARTS release (github.com/quark0/darts) on this machine.

    TORCH_PYTHON benchmarks/official_step.py --official DIR --part cnn_search --batch 16 --order 2

Run with an interpreter that has PyTorch (a CPU build: `pip install torch==2.13.0 numpy` in a
venv of its own); `benchmarks/side_by_side.py` calls it next to darts_jax's own step. DIR is a
checkout of the release (commit f276dd3, the one DARTS' paper points to), unedited: it was
written for PyTorch 0.3 on a GPU, so this script adapts the few calls that no longer exist
before importing it, in this process only, none of which changes the maths:

- `.cuda()` on tensors and modules returns the object itself (the code runs on the CPU);
- `torch.cuda.FloatTensor(n, 1, 1, 1)` (drop path's mask) is `torch.empty` of that size;
- `nn.Embedding._backend.Embedding.apply` (recurrent embedding dropout, a PyTorch 0.3 internal)
  is `F.embedding`, with the old "-1 = no padding" convention mapped to None;
- `torchvision.transforms`, imported by cnn/utils.py but unused by a step, may be an empty
  module when torchvision is not installed.

Parts (each reproduces the loop body of the official script named, with its defaults):
  cnn_search  cnn/train_search.py: `architect.step` (order 1 or 2, DARTS' finite difference)
              then the weight step (SGD 0.025, momentum 0.9, wd 3e-4, clip 5); C=16, 8 cells.
  eval_train  cnn/train.py: DARTS_V2, C=36, 20 cells, auxiliary head (0.4), drop path 0.2.
  rnn_search  rnn/train_search.py: batch 256, BPTT 35, 300 units, PTB's 10,000 words,
              `architect.step` then the weight step (SGD 20, wd 5e-7, clip 0.25, beta 1e-3).
Prints `RESULT {json}`: median step time over --steps after --warmup untimed steps, peak RSS.
Uses only the standard library and torch; this repository contains none of the release's code.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time
import types


def _adapt_torch(torch):
  """The release's PyTorch 0.3 GPU calls, mapped onto today's CPU PyTorch (see the docstring)."""
  import torch.nn.functional as F

  torch.Tensor.cuda = lambda self, *args, **kwargs: self
  torch.nn.Module.cuda = lambda self, *args, **kwargs: self
  torch.cuda.FloatTensor = lambda *size: torch.empty(*size)

  def embedding(words, weight, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse):
    return F.embedding(words, weight, None if padding_idx == -1 else padding_idx, max_norm,
                       norm_type, scale_grad_by_freq, sparse)

  torch.nn.Embedding._backend = types.SimpleNamespace(
      Embedding=types.SimpleNamespace(apply=embedding))


def _import_release(root, sub):
  path = os.path.join(root, sub)
  if not os.path.isfile(os.path.join(path, "model_search.py")):
    sys.exit(f"error: no DARTS release at {root} ({sub}/model_search.py is missing); pass "
             "--official with a checkout of github.com/quark0/darts")
  sys.path.insert(0, path)  # cnn/ and rnn/ share module names: one of them per process
  try:
    import torchvision.transforms  # noqa: F401
  except Exception:  # missing, or PyPI's torchvision beside a +cpu torch
    tv = types.ModuleType("torchvision")
    tv.transforms = types.ModuleType("torchvision.transforms")
    sys.modules.update({"torchvision": tv, "torchvision.transforms": tv.transforms})


def _time(step, warmup, steps):
  for _ in range(warmup):
    step()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return times


def cnn_search(torch, args):
  import torch.nn as nn
  from architect import Architect
  from model_search import Network

  criterion = nn.CrossEntropyLoss()
  model = Network(16, 10, 8, criterion)
  optimizer = torch.optim.SGD(model.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
  hp = argparse.Namespace(momentum=0.9, weight_decay=3e-4, arch_learning_rate=3e-4,
                          arch_weight_decay=1e-3)
  architect = Architect(model, hp)
  batch = lambda: (torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,)))

  def step():
    (x, y), (x_val, y_val) = batch(), batch()
    model.train()
    architect.step(x, y, x_val, y_val, 0.025, optimizer, unrolled=args.order == 2)
    optimizer.zero_grad()
    criterion(model(x), y).backward()
    nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimizer.step()

  return step


def eval_train(torch, args):
  import contextlib
  import io

  import genotypes
  import model as eval_model
  import torch.nn as nn

  with contextlib.redirect_stdout(io.StringIO()):  # the cells print their channel counts
    net = eval_model.NetworkCIFAR(36, 10, 20, True, genotypes.DARTS_V2)
  net.drop_path_prob = 0.2
  criterion = nn.CrossEntropyLoss()
  optimizer = torch.optim.SGD(net.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)

  def step():
    x, y = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    net.train()
    optimizer.zero_grad()
    logits, logits_aux = net(x)
    (criterion(logits, y) + 0.4 * criterion(logits_aux, y)).backward()
    nn.utils.clip_grad_norm_(net.parameters(), 5.0)
    optimizer.step()

  return step


def rnn_search(torch, args):
  import gc

  import model_search
  import torch.nn as nn
  from architect import Architect

  batch, bptt, vocab, units = args.batch, 35, 10000, 300
  model = model_search.RNNModelSearch(vocab, units, units, units, 0.75, 0.25, 0.75, 0.2, 0.0)
  architect = Architect(model, argparse.Namespace(wdecay=5e-7, clip=0.25, arch_lr=3e-3,
                                                  arch_wdecay=1e-3))
  optimizer = torch.optim.SGD(model.parameters(), lr=20.0, weight_decay=5e-7)
  hidden = {"train": model.init_hidden(batch), "valid": model.init_hidden(batch)}
  detach = lambda h: [t.detach() for t in h]  # init_hidden gives a list of one layer's state

  def tokens():
    d = torch.randint(0, vocab, (bptt + 1, batch))
    return d[:-1], d[1:].contiguous().view(-1)

  def step():
    (x, y), (x_val, y_val) = tokens(), tokens()
    model.train()
    h = detach(hidden["train"])
    hidden["valid"], _ = architect.step(h, x, y, detach(hidden["valid"]), x_val, y_val,
                                        optimizer, args.order == 2)
    optimizer.zero_grad()
    log_prob, h, rnn_hs, _ = model(x, h, return_h=True)
    loss = nn.functional.nll_loss(log_prob.view(-1, log_prob.size(2)), y)
    loss = loss + sum(1e-3 * (r[1:] - r[:-1]).pow(2).mean() for r in rnn_hs[-1:])
    loss.backward()
    gc.collect()  # as the official loop does, once per batch
    nn.utils.clip_grad_norm_(model.parameters(), 0.25)
    optimizer.step()
    hidden["train"] = h

  return step


PARTS = {"cnn_search": ("cnn", cnn_search), "eval_train": ("cnn", eval_train),
         "rnn_search": ("rnn", rnn_search)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--official", default=os.environ.get("DARTS_ROOT", ""),
                      help="checkout of github.com/quark0/darts (default: $DARTS_ROOT)")
  parser.add_argument("--part", choices=sorted(PARTS), default="cnn_search")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--order", type=int, choices=(1, 2), default=1)
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--steps", type=int, default=3)
  args = parser.parse_args()
  sub, build = PARTS[args.part]
  _import_release(os.path.abspath(args.official), sub)
  import warnings

  try:
    import torch
  except ImportError:
    sys.exit(f"error: {sys.executable} has no PyTorch; run this script with a Python that "
             "has it (a venv with `pip install torch==2.13.0 numpy`)")
  warnings.filterwarnings("ignore")  # the release's deprecated overloads, e.g. t.sub(eta, x)
  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  _adapt_torch(torch)
  times = _time(build(torch, args), args.warmup, args.steps)
  print("RESULT " + json.dumps({
      "part": args.part, "batch": args.batch, "order": args.order, "threads": args.threads,
      "step_s": statistics.median(times), "steps_s": times, "torch": torch.__version__,
      "cpu_capability": torch.backends.cpu.get_cpu_capability(),
      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}), flush=True)


if __name__ == "__main__":
  main()
