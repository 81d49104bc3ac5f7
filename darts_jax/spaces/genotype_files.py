"""Reading a genotype by name or from the `genotype.json` a search wrote, for every space."""

from __future__ import annotations

from darts_jax.errors import GenotypeError


def from_name_or_file(spec: str, registry: dict, from_json, what: str):
  """`registry[spec]`, or `from_json` of the file `spec` names (a path ending in .json).

  Raises:
    GenotypeError: an unknown name, or a file that is missing, unreadable or malformed.
  """
  if spec in registry:
    return registry[spec]
  if spec.endswith(".json"):
    try:
      with open(spec, encoding="utf-8") as f:
        text = f.read()
    except FileNotFoundError:
      raise GenotypeError(f"Genotype file {spec!r} not found; pass a path to a genotype.json "
                          f"or one of {', '.join(registry)}.") from None
    except (OSError, UnicodeDecodeError) as e:  # a folder, no permission, binary bytes
      raise GenotypeError(f"Cannot read genotype file {spec!r} ({e}); pass a genotype.json "
                          f"a search wrote or one of {', '.join(registry)}.") from None
    try:
      return from_json(text)
    except GenotypeError as e:  # its message says what is wrong; this says where
      raise GenotypeError(f"{spec}: {e}") from None
    except RecursionError:  # json.loads of "[[[[...": nesting deeper than Python's stack
      raise GenotypeError(f"{spec}: the genotype JSON is malformed (nested too deeply); use "
                          "the genotype.json a search wrote.") from None
    except (ValueError, KeyError, TypeError) as e:  # a parser that does not wrap its errors
      raise GenotypeError(f"{spec}: the genotype JSON is malformed ({e}); use the "
                          "genotype.json a search wrote.") from None
  raise GenotypeError(f"Unknown {what} {spec!r}; use one of {', '.join(registry)} or a path "
                      "to a genotype.json.")


