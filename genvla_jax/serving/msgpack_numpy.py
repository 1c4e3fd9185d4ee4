"""msgpack with numpy arrays, in the wire format openpi's clients use (so their robot runtimes can talk to
our server): an ndarray is a map {b"__ndarray__": True, b"data": raw bytes, b"dtype": dtype.str,
b"shape": shape}; a numpy scalar {b"__npgeneric__": True, b"data": value, b"dtype": dtype.str}.
Object, void and complex dtypes are refused."""

import msgpack
import numpy as np


def _encode(obj):
  if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in ("V", "O", "c"):
    raise ValueError(f"unsupported dtype {obj.dtype}")
  if isinstance(obj, np.ndarray):
    return {
      b"__ndarray__": True,
      b"data": np.ascontiguousarray(obj).tobytes(),
      b"dtype": obj.dtype.str,
      b"shape": list(obj.shape),
    }
  if isinstance(obj, np.generic):
    return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
  return obj


def _decode(obj):
  if b"__ndarray__" in obj:
    dtype = np.dtype(obj[b"dtype"])
    if dtype.kind in ("V", "O", "c"):
      raise ValueError(f"unsupported dtype {dtype}")
    return np.frombuffer(obj[b"data"], dtype=dtype).reshape(obj[b"shape"])
  if b"__npgeneric__" in obj:
    return np.dtype(obj[b"dtype"]).type(obj[b"data"])
  return obj


def packb(obj) -> bytes:
  return msgpack.packb(obj, default=_encode)


def unpackb(data: bytes):
  return msgpack.unpackb(data, object_hook=_decode)
