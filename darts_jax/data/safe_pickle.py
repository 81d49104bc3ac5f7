"""Reading pickles that may come from anyone: plain containers and numbers only.

The NAS-Bench-201 / NATS-Bench files and the downsampled-ImageNet batches are pickles, and
`pickle.load` runs whatever a pickle asks for. `load` admits only what those files hold:
the built-in containers and scalars (`list`, `dict`, `tuple`, `set`, `bytes`, ...),
`collections.OrderedDict`, and numpy arrays and scalars of number dtypes. Any other global
(`os.system`, a class from the benchmark's API, a torch tensor) is refused with an
`UnsafePickleError` naming it, before it is imported or called.

    data = safe_pickle.load(open(path, "rb"))          # a .pickle
    data = safe_pickle.load_file(path)                  # .pickle, .pickle.pbz2, torch .pth
"""

from __future__ import annotations

import bz2
import collections
import io
import pickle
import zipfile

import numpy as np

from darts_jax.errors import DataError


class UnsafePickleError(DataError):
  """A pickle asked for something other than plain containers and numbers."""


def _dtype(*args):
  dtype = np.dtype(*args)
  if dtype.hasobject:
    raise UnsafePickleError("the pickle holds a numpy array of Python objects")
  return dtype


def _reconstruct(cls, shape, code):
  if cls is not np.ndarray:
    raise UnsafePickleError(f"the pickle rebuilds a {cls!r}, not a numpy array")
  return np.ndarray.__new__(np.ndarray, shape, code)


def _scalar(dtype, data=None):
  if not isinstance(dtype, np.dtype) or dtype.hasobject:
    raise UnsafePickleError("the pickle holds a numpy scalar that is not a number")
  return np.frombuffer(data, dtype)[0] if data is not None else dtype.type()


def _frombuffer(buffer, dtype, shape, order):
  """Pickle protocol 5 writes numpy arrays as `numpy._core.numeric._frombuffer(...)`."""
  dtype = _dtype(dtype)
  array = np.frombuffer(buffer, dtype).reshape(shape, order=order)
  return array.copy()  # writable, and not tied to the pickle's buffer


def _encode(text, encoding="utf-8"):
  """Pickle protocols 0-2 write bytes as `_codecs.encode(text, "latin1")`."""
  if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8"):
    raise UnsafePickleError("the pickle calls _codecs.encode on something other than text")
  return text.encode(encoding)


_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")
_BUILTINS = (set, frozenset, bytearray, bytes, complex, list, dict, tuple)
ADMITTED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _encode,
    **{(m, c.__name__): c for m in ("builtins", "__builtin__") for c in _BUILTINS},
    ("numpy", "dtype"): _dtype,
    ("numpy", "ndarray"): np.ndarray,
    **{(m, "_reconstruct"): _reconstruct for m in _NUMPY_CORE},
    **{(m, "scalar"): _scalar for m in _NUMPY_CORE},
    **{(m, "_frombuffer"): _frombuffer for m in ("numpy.core.numeric", "numpy._core.numeric")},
}


class SafeUnpickler(pickle.Unpickler):
  """`pickle.Unpickler` that resolves only the globals in `ADMITTED`."""

  def find_class(self, module, name):
    if (module, name) in ADMITTED:
      return ADMITTED[(module, name)]
    raise UnsafePickleError(f"the pickle asks for {module}.{name}, which is not a plain "
                            "container or number")

  def persistent_load(self, pid):
    raise UnsafePickleError("the pickle refers to tensor storage (a torch file that holds "
                            "tensors)")


def load(file) -> object:
  """Unpickles one object from the binary `file`, admitting only `ADMITTED` globals."""
  obj = SafeUnpickler(file, encoding="latin1").load()
  _check_arrays(obj)
  return obj


def _check_arrays(obj) -> None:
  """Refuses object arrays whose dtype a BUILD opcode changed after `_dtype` saw it."""
  stack, seen = [obj], set()
  while stack:
    x = stack.pop()
    if id(x) in seen:  # a pickle may build cycles
      continue
    seen.add(id(x))
    if isinstance(x, np.ndarray) and x.dtype.hasobject:
      raise UnsafePickleError("the pickle holds a numpy array of Python objects")
    if isinstance(x, dict):
      stack.extend(x.keys())
      stack.extend(x.values())
    elif isinstance(x, (list, tuple, set, frozenset)):
      stack.extend(x)


# torch.save's legacy format: three small pickles (magic number, protocol, system info), then
# the object, then the storage keys; its zip format: the object in "<name>/data.pkl".
_TORCH_MAGIC = 0x1950a86a20f9469cfc6c


def load_file(path: str) -> object:
  """The object in a `.pickle`, `.pickle.pbz2` (bz2-compressed) or torch `.pth` file.

  Raises:
    UnsafePickleError: the file asks for anything but plain containers and numbers.
    DataError: the file is missing, truncated or not a pickle.
  """
  try:
    with open(path, "rb") as f:
      head = f.read(4)
    if head[:3] == b"BZh":
      with bz2.open(path, "rb") as f:
        return load(io.BytesIO(f.read()))
    if head == b"PK\x03\x04":
      with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if n.endswith("data.pkl")]
        if not names:
          raise DataError(f"{path!r} is a zip archive without the data.pkl of a torch file.")
        return load(io.BytesIO(z.read(names[0])))
    with open(path, "rb") as f:
      first = load(f)
      if first != _TORCH_MAGIC:
        return first
      load(f)  # protocol version
      load(f)  # system info: {"protocol_version", "little_endian", "type_sizes"}
      return load(f)
  except UnsafePickleError as e:
    raise UnsafePickleError(f"{path!r}: {e}; darts_jax reads only plain containers and "
                            "numbers from a pickle, so this file is refused (is it the "
                            "benchmark's own file?).") from None
  except FileNotFoundError:
    raise DataError(f"No file {path!r}.") from None
  except (pickle.UnpicklingError, EOFError, OSError, zipfile.BadZipFile, ValueError,
          TypeError, AttributeError, IndexError) as e:
    raise DataError(f"{path!r} is not a readable pickle ({type(e).__name__}: {e}).") from None
