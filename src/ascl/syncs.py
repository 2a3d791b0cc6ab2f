"""The ops that make the host wait for a GPU, recorded by a dispatch mode on any device.

A training step that reads no value back and copies nothing between host and device lets the
host queue the next step's kernels while the GPU works (and could be captured as a CUDA graph).
`forces_sync` names the aten ops that break this: a value read back (`item()`, `float()`,
`bool()` of a tensor, `nonzero`, boolean-mask indexing, `unique`, `repeat_interleave` with
tensor repeats and no `output_size`), a tensor made from host data (`torch.tensor(list, ...)`,
a host-to-device copy from pageable memory on CUDA) and any copy between host and device. The
same ops are dispatched on the CPU, so `SyncCounter` finds them in CPU runs (where a copy
between host and device cannot occur); on CUDA `torch.cuda.set_sync_debug_mode` reports the
synchronising calls themselves. Used by tests/test_sync_free.py and benchmarks/gpu_check.py.
"""

from __future__ import annotations

import traceback
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Ops whose result the host reads back.
READ_BACK_OPS = frozenset(
    {
        "_local_scalar_dense",  # item(), float(), bool(), int() of a tensor
        "is_nonzero",  # bool() of a one-element tensor (decomposes to the above)
        "nonzero",
        "masked_select",
        "equal",
        "_unique2",
        "unique_dim",
        "unique_consecutive",
    }
)
# Tensors made from host data (torch.tensor of a list): a copy from pageable host memory, which
# synchronises on CUDA.
HOST_DATA_OPS = frozenset({"lift_fresh", "lift_fresh_copy"})
# Indexing ops that read a boolean mask back (their output size depends on its values).
MASK_INDEX_OPS = frozenset({"index", "index_put", "index_put_", "_index_put_impl_"})


def _is_mask(a: object) -> bool:
    return isinstance(a, torch.Tensor) and a.dtype in (torch.bool, torch.uint8)


def forces_sync(func, args: tuple, kwargs: dict) -> bool:
    """Whether the aten op `func` with these arguments makes the host wait for a GPU: a value
    read back, boolean-mask indexing, `repeat_interleave` without `output_size`, a tensor made
    from host data, or a copy between host and device memory."""
    name = func.overloadpacket.__name__
    if name in READ_BACK_OPS or name in HOST_DATA_OPS:
        return True
    if name in MASK_INDEX_OPS and len(args) > 1 and isinstance(args[1], list | tuple):
        return any(_is_mask(a) for a in args[1])
    if name == "repeat_interleave" and isinstance(args[0], torch.Tensor) and len(args) > 1:
        return isinstance(args[1], torch.Tensor) and kwargs.get("output_size") is None
    if name in ("_to_copy", "copy_"):
        src = args[1] if name == "copy_" else args[0]
        dst = args[0].device if name == "copy_" else kwargs.get("device") or args[0].device
        return torch.device(src.device).type != torch.device(dst).type
    return False


def _caller() -> str:
    """'file.py:line' of the innermost frame in the ascl package (or outside torch)."""
    frames = traceback.extract_stack()[:-3]
    ours = [f for f in frames if "/ascl/" in f.filename]
    outside = [f for f in frames if "/torch/" not in f.filename]
    frame = (ours or outside or frames)[-1]
    return f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}"


class SyncCounter(TorchDispatchMode):
    """Counts the ops `forces_sync` flags while active: `count`, `ops` by op name and `where`
    by 'op at file:line' (the innermost frame of the ascl package)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.ops: Counter[str] = Counter()
        self.where: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if forces_sync(func, args, kwargs):
            name = func.overloadpacket.__name__
            self.count += 1
            self.ops[name] += 1
            self.where[f"{name} at {_caller()}"] += 1
        return func(*args, **kwargs)
