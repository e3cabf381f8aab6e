"""Reading torch pickles (.ckpt/.bin/.pt) that hold more than tensors, without running their code.

Training checkpoints often carry Python objects next to the weights (Lightning / accelerate
configs, numpy scalars, optimiser classes).  ``torch.load(weights_only=True)`` refuses those
files; ``weights_only=False`` would execute whatever the pickle names.  This reader is the middle
way: tensors, storages and plain containers are rebuilt as usual, every other class the pickle
names becomes an inert ``Skipped`` placeholder (no import, no call of its code), so the tensors
can be used and the rest is dropped by the caller.
"""

from __future__ import annotations

import pickle
import types
from pathlib import Path
from typing import Any

import torch

_TORCH_MODULES = ("torch._utils", "torch._tensor", "torch.nn.parameter", "torch.serialization")
_TORCH_NAMES = {"Size", "device", "dtype", "Tensor", "strided", "sparse_coo"}
_BUILTINS = {"set", "frozenset", "tuple", "list", "dict", "int", "float", "str", "bytes", "bytearray", "complex",
             "bool", "slice", "range"}


class Skipped:
    """Stand-in for an object of a class the reader does not rebuild; ``name`` says which."""

    name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "Skipped":
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<skipped {self.name}>"


def _placeholder(module: str, name: str) -> type:
    return type(f"Skipped_{name}", (Skipped,), {"name": f"{module}.{name}"})


class _TensorsOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module in _TORCH_MODULES or module == "collections" and name == "OrderedDict":
            return super().find_class(module, name)
        if module == "torch" and (name in _TORCH_NAMES or name.endswith("Storage")
                                  or isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        if module == "builtins" and name in _BUILTINS:
            return super().find_class(module, name)
        return _placeholder(module, name)


_PICKLE_MODULE = types.ModuleType("track4dgen_tensors_only_pickle")
_PICKLE_MODULE.Unpickler = _TensorsOnlyUnpickler  # type: ignore[attr-defined]
_PICKLE_MODULE.load = lambda f, **kw: _TensorsOnlyUnpickler(f, **kw).load()  # type: ignore[attr-defined]
_PICKLE_MODULE.__name__ = "pickle"


def load_pickle(path: str | Path) -> Any:
    """``torch.load`` of a pickle: weights-only first, then the tensors-only reader."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return torch.load(str(path), map_location="cpu", weights_only=False, pickle_module=_PICKLE_MODULE)
