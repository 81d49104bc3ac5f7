"""Pictures of a search: how softmax(alpha) moved over the epochs, and the shared drawing
helpers each space's cell picture uses (`darts_cnn.draw`, `nas_bench_201.draw_cell`)."""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from darts_jax.spaces.darts_cnn.genotypes import PRIMITIVES, STEPS

OP_COLOURS = dict(zip(PRIMITIVES, matplotlib.colormaps["tab10"].colors))


def op_colours(ops) -> dict:
  """DARTS' op colours; another space's ops get tab10's colours in their own order."""
  if set(ops) <= set(OP_COLOURS):
    return {op: OP_COLOURS[op] for op in ops}
  return {op: matplotlib.colormaps["tab10"].colors[k % 10] for k, op in enumerate(ops)}


def figure(**kwargs) -> Figure:
  # A Figure with its own Agg canvas, not pyplot: files only, and the backend of a notebook
  # or script that imports darts_jax stays as it was.
  fig = Figure(**kwargs)
  FigureCanvasAgg(fig)
  return fig


RAD = 0.25  # curvature of the edges


def arrow(ax, start, end, label, colour, rad=RAD):
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
  fig = figure(figsize=(1.6 * num_edges, 2.2 * len(kinds) + 0.6))
  axes = fig.subplots(len(kinds), num_edges, sharex=True, sharey=True, squeeze=False)
  labels = edges or [f"{i}<-{j}" for i in range(STEPS) for j in range(2 + i)]
  colours = op_colours(ops)
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
