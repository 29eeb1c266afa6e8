"""Writing small PyTorch checkpoints (torch >= 1.6 zip layout) without PyTorch, for tests.

The pickle is emitted opcode by opcode, exactly as `torch.save` writes a state dict:
an OrderedDict of `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`
whose storages are persistent ids `('storage', torch.FloatStorage, key, 'cpu', numel)`, and the
storage bytes in `<name>/data/<key>`. `extra_global` adds an entry that calls another global,
the way a malicious file would.
"""

from __future__ import annotations

import pickle
import struct
import zipfile
from typing import Dict, Optional, Tuple

import numpy as np

_STORAGES = {
    np.dtype("float32"): "FloatStorage",
    np.dtype("float64"): "DoubleStorage",
    np.dtype("float16"): "HalfStorage",
    np.dtype("int64"): "LongStorage",
    np.dtype("int32"): "IntStorage",
    np.dtype("uint8"): "ByteStorage",
}


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _str(text: str) -> bytes:
    data = text.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    return pickle.BININT + struct.pack("<i", value)


def _tuple(items) -> bytes:
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def _ordered_dict(items: bytes = b"") -> bytes:
    body = _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
    return body + (pickle.MARK + items + pickle.SETITEMS if items else b"")


def _tensor(key: str, storage: str, numel: int, shape, stride, offset: int = 0) -> bytes:
    persistent = _tuple([_str("storage"), _global("torch", storage), _str(key), _str("cpu"), _int(numel)])
    args = _tuple(
        [
            persistent + pickle.BINPERSID,
            _int(offset),
            _tuple([_int(n) for n in shape]),
            _tuple([_int(s) for s in stride]),
            pickle.NEWFALSE,
            _ordered_dict(),
        ]
    )
    return _global("torch._utils", "_rebuild_tensor_v2") + args + pickle.REDUCE


def write_zip_checkpoint(
    path: str,
    tensors: Dict[str, np.ndarray],
    transposed: Tuple[str, ...] = (),
    extra_global: Optional[Tuple[str, str, str]] = None,
    name: str = "archive",
) -> None:
    """Writes `tensors` as torch.save would. Names in `transposed` are stored as a transposed view
    (the storage holds the transpose, the stride reverses it), as torch saves non-contiguous tensors.
    extra_global=(module, name, argument) adds an entry `module.name(argument)`."""
    items, storages = b"", {}
    for index, (tensor_name, value) in enumerate(tensors.items()):
        value = np.asarray(value)
        key = str(index)
        if tensor_name in transposed:
            stored = np.ascontiguousarray(value.T)
            itemsize = stored.itemsize
            stride = tuple(s // itemsize for s in stored.strides)[::-1]
        else:
            stored = np.ascontiguousarray(value)
            stride = tuple(s // stored.itemsize for s in stored.strides)
        storages[key] = stored.astype(stored.dtype.newbyteorder("<")).tobytes()
        items += _str(tensor_name) + _tensor(key, _STORAGES[value.dtype], stored.size, value.shape, stride)
    if extra_global is not None:
        module, function, argument = extra_global
        items += _str("extra") + _global(module, function) + _tuple([_str(argument)]) + pickle.REDUCE
    data = pickle.PROTO + bytes([2]) + _ordered_dict(items) + pickle.STOP
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}/data.pkl", data)
        archive.writestr(f"{name}/byteorder", "little")
        for key, raw in storages.items():
            archive.writestr(f"{name}/data/{key}", raw)
        archive.writestr(f"{name}/version", "3\n")
