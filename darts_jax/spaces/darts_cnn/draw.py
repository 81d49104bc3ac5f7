"""Pictures of DARTS CNN cells (a genotype's normal and reduction cell)."""

from __future__ import annotations

from darts_jax.spaces import drawing


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

  fig = drawing.figure(figsize=(2.2 * (steps + 2), 4.5))
  ax = fig.subplots()
  # Fix the layout first: arrows curve in display space, and labels follow them there.
  ax.set_xlim(-0.6, steps + 1.6)
  ax.set_ylim(-2.0, 2.0)
  ax.axis("off")
  ax.set_title(title)
  fig.tight_layout()
  for node, (op, source) in zip([2 + i // 2 for i in range(len(edges))], edges):
    drawing.arrow(ax, pos[source], pos[node], op.replace("_", " "),
                  drawing.OP_COLOURS.get(op, "black"))
  for node in concat:
    drawing.arrow(ax, pos[node], pos["out"], "", "grey")
  for key, (x, y) in pos.items():
    colour = "lightblue" if key in (0, 1) else "khaki" if key == "out" else "lightgrey"
    ax.text(x, y, f"${names[key]}$" if key in (0, 1, "out") else names[key], ha="center",
            va="center", fontsize=12, bbox=dict(boxstyle="round", fc=colour), zorder=3)
  fig.savefig(filename, dpi=100)
