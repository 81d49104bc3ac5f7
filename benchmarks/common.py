"""What the benchmark scripts share: a measurement in a fresh process, and the results file."""

import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure_in_subprocess(args, **labels) -> dict:
  """Runs `python <args>` in a fresh process (so its peak RSS is its own) and returns the dict
  its last `RESULT {json}` line printed, or `labels` with the failure's return code."""
  out = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT)
  lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
  if out.returncode or not lines:
    return {**labels, "failed": True, "returncode": out.returncode,
            "stderr_tail": out.stderr[-2000:]}
  return json.loads(lines[-1][len("RESULT "):])


def write_results(path: str, benchmark: str, rows: list, **extra):
  """Writes the rows with the machine's description to the JSON file `path`."""
  import jax

  record = {"benchmark": benchmark, "jax": jax.__version__, "backend": jax.default_backend(),
            "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "date": time.strftime("%Y-%m-%d"), **extra, "rows": rows}
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(record, f, indent=1)
