"""XLA settings measured to speed up darts_jax on CPU; call before JAX starts its backend."""

import os

# On 2 CPU cores (jax 0.10.2) XLA's older loop emitters run the supernet's fused elementwise
# work faster than the new fusion emitters: forward + backward of the paper-size supernet at
# batch 64 took 10.5 s instead of 12.1 s (batch 16: 2.2 s instead of 2.6 s), same values.
# They compile slower, though: the exact search step took 80 s to compile instead of 28 s.
# So: on for long searches (configs/cifar_search.py), off where compile time dominates.
CPU_FLAGS = ("--xla_cpu_use_fusion_emitters=false",)


def configure_cpu():
  """Adds CPU_FLAGS to XLA_FLAGS (a flag the user already set wins). CPU-only flags, ignored
  by GPU/TPU backends; no effect once JAX has initialised its backends."""
  flags = os.environ.get("XLA_FLAGS", "")
  for flag in CPU_FLAGS:
    if flag.split("=")[0] not in flags:
      flags = f"{flags} {flag}".strip()
  os.environ["XLA_FLAGS"] = flags
