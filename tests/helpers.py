"""Shared test helpers."""


def override(config, **overrides):
  """Sets dotted config fields, `override(config, **{"model.channels": 4})`; returns config."""
  for key, value in overrides.items():
    target = config
    *path, last = key.split(".")
    for part in path:
      target = target[part]
    target[last] = value
  return config
