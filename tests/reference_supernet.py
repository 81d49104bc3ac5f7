"""A plain, per-edge DARTS supernet, written to be obviously correct, for tests only.

Every edge applies all 8 ops to its own input with textbook layers (grouped depthwise
convolution, 1x1 convolution, reduce_window pools, BN with batch statistics), one edge at a
time, straight from ../shared/REFERENCE.md. It reads the fast network's weight pytree,
indexing the stacked per-source arrays edge by edge, and returns logits and the running BN
statistics in the fast network's layout.
"""

import jax
import jax.numpy as jnp
from jax import lax

from darts_jax.genotypes import PRIMITIVES, edge_index

DN = ("NHWC", "HWIO", "NHWC")
CONV_OPS = ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
KERNEL = {"sep_conv_3x3": (3, 1), "sep_conv_5x5": (5, 1), "dil_conv_3x3": (3, 2),
          "dil_conv_5x5": (5, 2)}


def batch_norm(x, running, momentum=0.1, eps=1e-5):
  """Training-mode BN over (N, H, W); returns y and the updated (mean, var) pair."""
  mean = x.mean(axis=(0, 1, 2))
  var = ((x - mean) ** 2).mean(axis=(0, 1, 2))
  n = x.shape[0] * x.shape[1] * x.shape[2]
  new = ((1 - momentum) * running[0] + momentum * mean,
         (1 - momentum) * running[1] + momentum * var * n / (n - 1))
  return (x - mean) / jnp.sqrt(var + eps), new


def depthwise(x, kernel, stride, dilation):
  k = kernel.shape[0]
  pad = dilation * (k - 1) // 2
  return lax.conv_general_dilated(x, kernel[:, :, None, :], (stride, stride), [(pad, pad)] * 2,
                                  rhs_dilation=(dilation, dilation), dimension_numbers=DN,
                                  feature_group_count=x.shape[-1])


def pointwise(x, kernel, stride=1):
  return lax.conv_general_dilated(x, kernel[None, None], (stride, stride), "VALID",
                                  dimension_numbers=DN)


def factorized_reduce(x, conv1, conv2):
  x = jax.nn.relu(x)
  return jnp.concatenate([pointwise(x, conv1, 2), pointwise(x[:, 1:, 1:], conv2, 2)], axis=-1)


def pool(x, kind, stride):
  pads = [(0, 0), (1, 1), (1, 1), (0, 0)]
  window = (1, 3, 3, 1), (1, stride, stride, 1), pads
  if kind == "max":
    return lax.reduce_window(x, -jnp.inf, lax.max, *window)
  total = lax.reduce_window(x, 0.0, lax.add, *window)
  count = lax.reduce_window(jnp.ones_like(x), 0.0, lax.add, *window)
  return total / count


class Stats:
  """Collects new running statistics into a copy of the fast network's stats pytree."""

  def __init__(self, stats):
    self.new = jax.tree.map(lambda x: x, stats)
    self.old = {}  # id(new node) -> the same node of the original stats

    def pair(new, old):
      self.old[id(new)] = old
      for key, value in new.items():
        if isinstance(value, dict):
          pair(value, old[key])

    pair(self.new, stats)

  def bn(self, x, node, index=()):
    """BN of x with running stats at node['mean'/'var'][index].

    Every edge updates from the statistics before this step: the fast network shares one
    pool BN between the edges of a source, which equals E identical per-edge updates.
    """
    old = self.old[id(node)]
    running = (old["mean"][index], old["var"][index])
    y, (mean, var) = batch_norm(x, running)
    node["mean"] = node["mean"].at[index].set(mean)
    node["var"] = node["var"].at[index].set(var)
    return y


def mixed_edge(x, w, p, s, slot, stride):
  """One edge: sum_k w[k] op_k(x). p/s: the source group's weights/stats; slot: its edge."""
  out = []
  for k, op in enumerate(PRIMITIVES):
    if op == "none":
      y = jnp.zeros_like(x[:, ::stride, ::stride])
    elif op in ("max_pool_3x3", "avg_pool_3x3"):
      i = 0 if op == "max_pool_3x3" else 1
      y = s.bn(pool(x, op[:3], stride), s.group["pool_bn"], (i,))
    elif op == "skip_connect":
      if stride == 1:
        y = x
      else:
        y = factorized_reduce(x, p["skip_conv1"][slot], p["skip_conv2"][slot])
        y = s.bn(y, s.group["skip_bn"], (slot,))
    else:
      size, dilation = KERNEL[op]
      o = CONV_OPS.index(op)
      y = pointwise(depthwise(jax.nn.relu(x), p[f"{op}_dw1"][slot], stride, dilation),
                    p[f"{op}_pw1"][slot])
      y = s.bn(y, s.group["bn1"], (o, slot))
      if op.startswith("sep"):
        y = pointwise(depthwise(jax.nn.relu(y), p[f"{op}_dw2"][slot], 1, dilation),
                      p[f"{op}_pw2"][slot])
        y = s.bn(y, s.group["bn2"], (o, slot))
    out.append(w[k] * y)
  return sum(out)


def relu_conv_bn(x, p, s):
  return s.bn(pointwise(jax.nn.relu(x), p["kernel"]), s.node["bn"])


def cell(s0, s1, weights, p, s, reduction, reduction_prev):
  stats = s.new_cell
  if reduction_prev:
    s.node = stats["preprocess0"]
    s0 = s.bn(factorized_reduce(s0, p["preprocess0"]["conv1"], p["preprocess0"]["conv2"]),
              stats["preprocess0"]["bn"])
  else:
    s.node = stats["preprocess0"]
    s0 = relu_conv_bn(s0, p["preprocess0"], s)
  s.node = stats["preprocess1"]
  s1 = relu_conv_bn(s1, p["preprocess1"], s)
  states = [s0, s1]
  for i in range(4):
    total = 0
    for j in range(2 + i):
      slot = i - max(0, j - 1)  # position of node i among the targets of source j
      s.group = stats[f"edges_from_{j}"]
      stride = 2 if reduction and j < 2 else 1
      total = total + mixed_edge(states[j], weights[edge_index(i, j)],
                                 p[f"edges_from_{j}"], s, slot, stride)
    states.append(total)
  return jnp.concatenate(states[2:], axis=-1)


def network(params, batch_stats, images, alphas, layers):
  """Logits and new batch stats of the search network, per edge."""
  s = Stats(batch_stats)
  x = lax.conv_general_dilated(images, params["stem_conv"], (1, 1), [(1, 1), (1, 1)],
                               dimension_numbers=DN)
  x = s.bn(x, s.new["stem_bn"]) * params["stem_bn"]["scale"] + params["stem_bn"]["bias"]
  s0 = s1 = x
  weights = {k: jax.nn.softmax(v, axis=-1) for k, v in alphas.items()}
  reduction_prev = False
  for i in range(layers):
    reduction = i in (layers // 3, 2 * layers // 3)
    s.new_cell = s.new[f"cell_{i}"]
    out = cell(s0, s1, weights["reduce" if reduction else "normal"], params[f"cell_{i}"], s,
               reduction, reduction_prev)
    s0, s1, reduction_prev = s1, out, reduction
  logits = s1.mean(axis=(1, 2)) @ params["classifier_kernel"] + params["classifier_bias"]
  return logits, s.new
