"""A plain, per-edge DARTS supernet, written to be obviously correct, for tests only.

Every edge applies all 8 ops to its own input with textbook layers (grouped depthwise
convolution, 1x1 convolution, reduce_window pools, BN with batch statistics), one edge at a
time, straight from docs/reference.md ("CNN search space", "CNN search network"). It reads
the fast network's weight pytree, indexing the stacked per-source arrays edge by edge, and
returns logits and the running BN statistics in the fast network's layout.
"""

import jax
import jax.numpy as jnp
from jax import lax

from darts_jax.spaces.darts_cnn.genotypes import PRIMITIVES, edge_index

DN = ("NHWC", "HWIO", "NHWC")
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
    self.old = {}  # id(new dict) -> the same dict of the original stats

    def pair(new, old):
      self.old[id(new)] = old
      for key, value in new.items():
        if isinstance(value, dict):
          pair(value, old[key])

    pair(self.new, stats)

  def bn(self, x, group, name, index=()):
    """BN of x with running stats group[name + '_mean'/'_var'][index]."""
    old = self.old[id(group)]
    mean, var = (f"{name}_mean", f"{name}_var") if name else ("mean", "var")
    y, (new_mean, new_var) = batch_norm(x, (old[mean][index], old[var][index]))
    group[mean] = group[mean].at[index].set(new_mean)
    group[var] = group[var].at[index].set(new_var)
    return y


# Row of the fast network's stacked first BN (bn1) for each op, and of the second (bn2).
BN1 = {"max_pool_3x3": 0, "avg_pool_3x3": 1, "sep_conv_3x3": 2, "sep_conv_5x5": 3,
       "dil_conv_3x3": 4, "dil_conv_5x5": 5}
BN2 = {"sep_conv_3x3": 0, "sep_conv_5x5": 1}


def mixed_edge(x, w, p, s, group, edge, input_slot, stride):
  """Edge `edge` (alpha row): sum_k w[k] op_k(x); input_slot: its index among stride-2 edges."""
  out = []
  for k, op in enumerate(PRIMITIVES):
    if op == "none":
      y = jnp.zeros_like(x[:, ::stride, ::stride])
    elif op in ("max_pool_3x3", "avg_pool_3x3"):
      y = s.bn(pool(x, op[:3], stride), group, "bn1", (edge, BN1[op]))
    elif op == "skip_connect":
      if stride == 1:
        y = x
      else:
        y = factorized_reduce(x, p["skip_conv1"][input_slot], p["skip_conv2"][input_slot])
        y = s.bn(y, group, "skip_bn", (input_slot,))
    else:
      size, dilation = KERNEL[op]
      y = pointwise(depthwise(jax.nn.relu(x), p[f"{op}_dw1"][edge], stride, dilation),
                    p[f"{op}_pw1"][edge])
      y = s.bn(y, group, "bn1", (edge, BN1[op]))
      if op.startswith("sep"):
        y = pointwise(depthwise(jax.nn.relu(y), p[f"{op}_dw2"][edge], 1, dilation),
                      p[f"{op}_pw2"][edge])
        y = s.bn(y, group, "bn2", (edge, BN2[op]))
    out.append(w[k] * y)
  return sum(out)


def cell(s0, s1, weights, p, s, stats, reduction, reduction_prev):
  if reduction_prev:
    s0 = s.bn(factorized_reduce(s0, p["preprocess0"]["conv1"], p["preprocess0"]["conv2"]),
              stats["preprocess0"]["bn"], "")
  else:
    s0 = s.bn(pointwise(jax.nn.relu(s0), p["preprocess0"]["kernel"]),
              stats["preprocess0"]["bn"], "")
  s1 = s.bn(pointwise(jax.nn.relu(s1), p["preprocess1"]["kernel"]), stats["preprocess1"]["bn"],
            "")
  states = [s0, s1]
  input_slot = 0
  for i in range(4):
    total = 0
    for j in range(2 + i):
      stride = 2 if reduction and j < 2 else 1
      total = total + mixed_edge(states[j], weights[edge_index(i, j)], p, s, stats,
                                 edge_index(i, j), input_slot, stride)
      input_slot += j < 2
    states.append(total)
  return jnp.concatenate(states[2:], axis=-1)


def network(params, batch_stats, images, alphas, layers):
  """Logits and new batch stats of the search network, per edge."""
  s = Stats(batch_stats)
  x = lax.conv_general_dilated(images, params["stem_conv"], (1, 1), [(1, 1), (1, 1)],
                               dimension_numbers=DN)
  x = s.bn(x, s.new["stem_bn"], "") * params["stem_bn"]["scale"] + params["stem_bn"]["bias"]
  s0 = s1 = x
  weights = {k: jax.nn.softmax(v, axis=-1) for k, v in alphas.items()}
  reduction_prev = False
  for i in range(layers):
    reduction = i in (layers // 3, 2 * layers // 3)
    out = cell(s0, s1, weights["reduce" if reduction else "normal"], params[f"cell_{i}"], s,
               s.new[f"cell_{i}"], reduction, reduction_prev)
    s0, s1, reduction_prev = s1, out, reduction
  logits = s1.mean(axis=(1, 2)) @ params["classifier_kernel"] + params["classifier_bias"]
  return logits, s.new
