"""Reading a PyTorch checkpoint (`torch.save` of a state dict) with numpy only, no PyTorch.

A `.pth` file is a pickle of plain tensors, in one of two layouts:

- zip (torch >= 1.6): `<name>/data.pkl` holds the pickled state dict, each storage is the raw
  little-endian bytes of `<name>/data/<key>`;
- legacy (torchvision's older published weights): five pickles in a row (magic number,
  protocol version, system info, the state dict, the storage keys), then each storage as an
  int64 element count followed by its bytes, in the order of the keys.

In both, a tensor is `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`
and a storage is a persistent id `('storage', torch.FloatStorage, key, location, numel[, view])`.
Unpickling calls whatever globals a file names, so a checkpoint can run code on load; the
unpickler here resolves only the names in `_ALLOWED_GLOBALS` (tensor rebuilding, storage
classes, OrderedDict) and refuses any other with the name it found.
"""

from __future__ import annotations

import collections
import io as _io
import pickle
import struct
import zipfile
from typing import BinaryIO, Callable, Dict, Tuple

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# torch storage class name -> numpy dtype (little-endian, as torch writes them).
_STORAGE_DTYPES = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),  # widened to float32 after reading: numpy has no bfloat16
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class TorchCheckpointError(ValueError):
    """The file is not a PyTorch checkpoint this reader can read safely; the message names the file and why."""


class _StorageType:
    """Stands in for torch.FloatStorage & co. in the pickle: only its element type is needed."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _Storage:
    """A storage announced by a persistent id; its bytes are attached when the file layout gives them."""

    def __init__(self, storage_type: _StorageType, key: str, numel: int):
        self.storage_type = storage_type
        self.key = key
        self.numel = numel
        self.array = None  # 1-D numpy array, filled in by the reader


class _PendingTensor:
    """A tensor whose storage bytes may not be read yet (legacy layout): materialized afterwards."""

    def __init__(self, storage: _Storage, offset: int, size: Tuple[int, ...], stride: Tuple[int, ...]):
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

    def materialize(self, name: str) -> np.ndarray:
        flat = self.storage.array
        if flat is None:
            raise TorchCheckpointError(f"tensor {name}: storage {self.storage.key} has no data in the file")
        if self.storage.storage_type.name == "BFloat16Storage":
            flat = (flat.astype(np.uint32) << 16).view(np.float32)
        itemsize = flat.dtype.itemsize
        if self.size:
            last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride) if n > 0)
            if any(n == 0 for n in self.size):
                return np.zeros(self.size, flat.dtype)
            if last >= flat.size:
                raise TorchCheckpointError(
                    f"tensor {name}: size {self.size} stride {self.stride} at offset {self.offset} "
                    f"reads past its storage of {flat.size} elements (truncated file?)"
                )
        if not self.size:  # a scalar (such as num_batches_tracked)
            if self.offset >= flat.size:
                raise TorchCheckpointError(f"tensor {name}: offset {self.offset} past its storage (truncated file?)")
            return np.array(flat[self.offset])
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :], shape=self.size, strides=[s * itemsize for s in self.stride], writeable=False
        )
        return np.array(view)  # a contiguous copy, independent of the storage


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *_):
    if not isinstance(storage, _Storage):
        raise TorchCheckpointError(f"_rebuild_tensor_v2 got {type(storage).__name__}, expected a storage")
    return _PendingTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_):
    return data  # an nn.Parameter is its tensor for reading weights


def _allowed_globals() -> Dict[Tuple[str, str], Callable]:
    allowed = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }
    for name in _STORAGE_DTYPES:
        allowed[("torch", name)] = _StorageType(name)
    return allowed


_ALLOWED_GLOBALS = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only tensor rebuilding, storage classes and OrderedDict; refuses every other global."""

    def __init__(self, file: BinaryIO, path: str, storages: Dict[str, _Storage]):
        super().__init__(file)
        self._path = path
        self._storages = storages

    def find_class(self, module, name):
        found = _ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise TorchCheckpointError(
                f"{self._path}: the checkpoint names {module}.{name}, which a plain state dict of tensors "
                "does not need; refusing to load it (unpickling it could run code). Save the model's "
                "state_dict() with torch.save and convert that file"
            )
        return found

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise TorchCheckpointError(f"{self._path}: unknown persistent id {pid!r:.80}")
        storage_type, key, _location, numel = pid[1], str(pid[2]), pid[3], int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise TorchCheckpointError(f"{self._path}: storage {key} of unknown type {storage_type!r:.80}")
        if len(pid) > 5 and pid[5] is not None:
            raise TorchCheckpointError(f"{self._path}: storage views (legacy torch < 0.4 files) are not supported")
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = _Storage(storage_type, key, numel)
        return storage


def _flatten(obj, path: str, path_name: str, out: Dict[str, np.ndarray]) -> None:
    """state dict (possibly nested under 'state_dict' / 'model') -> {dotted name: array}."""
    if isinstance(obj, _PendingTensor):
        out[path] = obj.materialize(path)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _flatten(value, f"{path}.{key}" if path else str(key), path_name, out)
    elif isinstance(obj, (int, float, str, bool, type(None), tuple, list)):
        pass  # metadata beside the tensors (epoch numbers, versions): not weights
    else:
        raise TorchCheckpointError(f"{path_name}: entry {path} is a {type(obj).__name__}, not a tensor")


def _read_zip(path: str, handle: BinaryIO) -> Dict[str, np.ndarray]:
    with zipfile.ZipFile(handle) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise TorchCheckpointError(f"{path}: a zip without exactly one data.pkl ({len(pickles)} found)")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = prefix + "byteorder"
        if byteorder in names and archive.read(byteorder).strip() != b"little":
            raise TorchCheckpointError(f"{path}: big-endian tensors are not supported")
        storages: Dict[str, _Storage] = {}
        state = _RestrictedUnpickler(_io.BytesIO(archive.read(pickles[0])), path, storages).load()
        for key, storage in storages.items():
            member = f"{prefix}data/{key}"
            if member not in names:
                raise TorchCheckpointError(f"{path}: storage {member} is missing from the archive")
            raw = archive.read(member)
            dtype = storage.storage_type.dtype
            if len(raw) < storage.numel * dtype.itemsize:
                raise TorchCheckpointError(
                    f"{path}: storage {member} holds {len(raw)} bytes, {storage.numel} x {dtype.itemsize} expected"
                )
            storage.array = np.frombuffer(raw, dtype, count=storage.numel)
    return state


def _read_legacy(path: str, handle: BinaryIO) -> Dict[str, np.ndarray]:
    storages: Dict[str, _Storage] = {}

    def load():
        return _RestrictedUnpickler(handle, path, storages).load()

    try:
        magic = load()
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        if isinstance(error, TorchCheckpointError):
            raise
        raise TorchCheckpointError(f"{path}: neither a zip nor a legacy PyTorch checkpoint ({error})") from None
    if magic != _LEGACY_MAGIC:
        raise TorchCheckpointError(f"{path}: not a PyTorch checkpoint (no torch.save magic number)")
    load()  # protocol version
    load()  # system info: endianness and type sizes
    state = load()
    keys = load()
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise TorchCheckpointError(f"{path}: storage key {key} listed but never used")
        dtype = storage.storage_type.dtype
        header = handle.read(8)
        if len(header) != 8:
            raise TorchCheckpointError(f"{path}: file ends before storage {key} (truncated download?)")
        (numel,) = struct.unpack("<q", header)
        raw = handle.read(numel * dtype.itemsize)
        if len(raw) != numel * dtype.itemsize:
            raise TorchCheckpointError(f"{path}: file ends inside storage {key} (truncated download?)")
        storage.array = np.frombuffer(raw, dtype)
    return state


def read_state_dict(path: str) -> Dict[str, np.ndarray]:
    """{tensor name: numpy array} of a `torch.save`d state dict, in the file's order, read without PyTorch.

    Raises TorchCheckpointError naming the file when it is not a checkpoint of plain tensors.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    buffer = _io.BytesIO(data)
    state = _read_zip(path, buffer) if zipfile.is_zipfile(buffer) else _read_legacy(path, _io.BytesIO(data))
    if isinstance(state, dict) and not any(isinstance(v, _PendingTensor) for v in state.values()):
        for wrapper in ("state_dict", "model"):  # training checkpoints that wrap the weights
            if isinstance(state.get(wrapper), dict):
                state = state[wrapper]
                break
    if not isinstance(state, dict):
        raise TorchCheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    tensors: Dict[str, np.ndarray] = collections.OrderedDict()
    _flatten(state, "", path, tensors)
    if not tensors:
        raise TorchCheckpointError(f"{path}: holds no tensors")
    return tensors
