"""Pictures of a search: the derived cells, and how softmax(alpha) moved over the epochs."""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from darts_jax.genotypes import PRIMITIVES, STEPS

_OP_COLOURS = dict(zip(PRIMITIVES, matplotlib.colormaps["tab10"].colors))


def _colours(ops) -> dict:
  """DARTS' op colours; another space's ops get tab10's colours in their own order."""
  if set(ops) <= set(_OP_COLOURS):
    return {op: _OP_COLOURS[op] for op in ops}
  return {op: matplotlib.colormaps["tab10"].colors[k % 10] for k, op in enumerate(ops)}


def _figure(**kwargs) -> Figure:
  # A Figure with its own Agg canvas, not pyplot: files only, and the backend of a notebook
  # or script that imports darts_jax stays as it was.
  fig = Figure(**kwargs)
  FigureCanvasAgg(fig)
  return fig


def plot_cell(edges, concat, filename, title=""):
  """Draws a cell: inputs c_{k-2}, c_{k-1} left, nodes 0..3, the output c_{k} right.

  Args:
    edges: the genotype's list of (op, source) pairs, two per node in node order.
    concat: the nodes (as state indices, 2..5) concatenated into the output.
  """
  steps = len(edges) // 2
  pos = {0: (0.0, 1.0), 1: (0.0, -1.0)}
  for i in range(steps):
    pos[2 + i] = (1.0 + i, 0.9 if i % 2 == 0 else -0.9)  # zigzag: arcs pass between nodes
  pos["out"] = (steps + 1.0, 0.0)
  names = {0: "c_{k-2}", 1: "c_{k-1}", "out": "c_{k}"}
  names.update({2 + i: str(i) for i in range(steps)})

  fig = _figure(figsize=(2.2 * (steps + 2), 4.5))
  ax = fig.subplots()
  # Fix the layout first: arrows curve in display space, and labels follow them there.
  ax.set_xlim(-0.6, steps + 1.6)
  ax.set_ylim(-2.0, 2.0)
  ax.axis("off")
  ax.set_title(title)
  fig.tight_layout()
  for node, (op, source) in zip([2 + i // 2 for i in range(len(edges))], edges):
    _arrow(ax, pos[source], pos[node], op.replace("_", " "), _OP_COLOURS.get(op, "black"))
  for node in concat:
    _arrow(ax, pos[node], pos["out"], "", "grey")
  for key, (x, y) in pos.items():
    colour = "lightblue" if key in (0, 1) else "khaki" if key == "out" else "lightgrey"
    ax.text(x, y, f"${names[key]}$" if key in (0, 1, "out") else names[key], ha="center",
            va="center", fontsize=12, bbox=dict(boxstyle="round", fc=colour), zorder=3)
  fig.savefig(filename, dpi=100)


_RAD = 0.25  # curvature of the edges


def _arrow(ax, start, end, label, colour, rad=_RAD):
  ax.annotate("", xy=end, xytext=start, zorder=1,
              arrowprops=dict(arrowstyle="->", color=colour, lw=1.5, shrinkA=14, shrinkB=14,
                              connectionstyle=f"arc3,rad={rad}"))
  if label:
    # A point 40% along matplotlib's arc3 curve (a quadratic Bezier built in display space).
    to_display = ax.transData.transform
    p0, p2 = to_display(start), to_display(end)
    (dx, dy), t = p2 - p0, 0.4
    control = (p0 + p2) / 2 + rad * np.array([dy, -dx])
    point = (1 - t) ** 2 * p0 + 2 * t * (1 - t) * control + t ** 2 * p2
    x, y = ax.transData.inverted().transform(point)
    ax.text(x, y, label, fontsize=8, color=colour, ha="center", va="center", zorder=2,
            bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8))


def plot_nb201_cell(genotype, filename):
  """Draws a NAS-Bench-201 cell: nodes 0 (input) to 3 (output), an arrow per edge whose op
  is not `none`, labelled with the op."""
  from darts_jax.nas_bench_201 import EDGES, NODES, OPS

  pos = {i: (1.6 * i, 0.0 if i in (0, NODES - 1) else (0.9 if i % 2 else -0.9))
         for i in range(NODES)}
  fig = _figure(figsize=(2.2 * NODES, 4.0))
  ax = fig.subplots()
  ax.set_xlim(-0.6, 1.6 * (NODES - 1) + 0.6)
  ax.set_ylim(-2.0, 2.0)
  ax.axis("off")
  ax.set_title(str(genotype), fontsize=8)
  fig.tight_layout()
  colours = _colours(OPS)
  for (to, source), op in zip(EDGES, genotype.ops):
    if op != "none":
      # Input to output runs straight, between the nodes above and below it.
      rad = 0.0 if (source, to) == (0, NODES - 1) else _RAD
      _arrow(ax, pos[source], pos[to], op.replace("_", " "), colours.get(op, "black"), rad)
  for node, (x, y) in pos.items():
    name = "input" if node == 0 else "output" if node == NODES - 1 else str(node)
    ax.text(x, y, name, ha="center", va="center", fontsize=12, zorder=3,
            bbox=dict(boxstyle="round", fc="lightblue" if node in (0, NODES - 1)
                      else "lightgrey"))
  fig.savefig(filename, dpi=100)


def plot_alpha_history(history, filename, ops=PRIMITIVES, edges=None):
  """One panel per edge and cell type: softmax(alpha) of each op against the epoch.

  Args:
    history: {kind: (epochs, edges, ops)} softmax weights, e.g. DARTS' "normal" and
      "reduce", each (epochs, 14, 8).
    ops: the names of the alpha columns.
    edges: the names of the alpha rows (default: DARTS' "i<-j").
  """
  kinds = list(history)
  num_edges = np.asarray(history[kinds[0]]).shape[1]
  fig = _figure(figsize=(1.6 * num_edges, 2.2 * len(kinds) + 0.6))
  axes = fig.subplots(len(kinds), num_edges, sharex=True, sharey=True, squeeze=False)
  labels = edges or [f"{i}<-{j}" for i in range(STEPS) for j in range(2 + i)]
  colours = _colours(ops)
  for row, kind in enumerate(kinds):
    weights = np.asarray(history[kind])
    epochs = np.arange(1, len(weights) + 1)  # the softmax after each epoch
    for e in range(num_edges):
      ax = axes[row, e]
      for k, op in enumerate(ops):
        ax.plot(epochs, weights[:, e, k], color=colours[op], lw=1.2, label=op)
      ax.set_title(f"{kind} {labels[e] if e < len(labels) else e}", fontsize=7)
      ax.tick_params(labelsize=6)
      ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  axes[0, 0].set_ylabel("softmax(alpha)", fontsize=7)
  axes[-1, 0].set_xlabel("epoch", fontsize=7)
  handles, names = axes[0, 0].get_legend_handles_labels()
  fig.legend(handles, names, loc="lower center", ncol=len(ops), fontsize=8)
  fig.tight_layout(rect=(0, 0.08, 1, 1))
  fig.savefig(filename, dpi=80)
