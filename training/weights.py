"""Weights as files: a safetensors reader that holds one tensor at a time, and the model fingerprint.

Reading: ``safetensors.safe_open`` maps the whole file, and every mapped page counts in the process's resident
memory until the file is closed (measured: a 1 GiB fp16 file read into fp32 peaked at 3.5 GiB, not 2). Here
each tensor's bytes are mapped on their own and cast straight from the page cache into the result, and the
mapping is closed before the next tensor: the peak stays at the result plus the largest tensor, and the bytes
are copied once (reading into a buffer first and casting from there cost 1.5× the time for SDXL's UNet).

Fingerprint (``fingerprint``): sha256 over every tensor's name, dtype and shape, the full contents of tensors of
up to ``FULL_NUMEL`` elements (biases, norms) and ``SAMPLES`` elements of each larger one at pseudo-random
positions fixed by its element count. For SDXL's UNet that is ~1.7 M of 2.6 G elements (~3 MB read instead of
5.1 GB: well under a second instead of ~8 s). Collision risk: two models collide only if every name, shape and
dtype and every sampled value is equal. A fine-tune, merge or baked-in LoRA changes dense weight matrices
almost everywhere, so it changes sampled values of every tensor it touches; what the fingerprint cannot see is
an edit confined to unsampled elements of a few tensors (hand-edited single weights) or a file crafted to
collide. It keys local caches (a LoRA already trained from these inputs, the UNet export), so such a case
costs a stale cache hit on a near-identical model, never a wrong model: before the trainer reads any file, the
file is compared with the weights in memory at ``CHECK_SAMPLES`` positions per tensor (``file_matches``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import mmap
import os
import struct
from collections.abc import Mapping

import torch

FINGERPRINT_FORMAT = "image_alchemy.fingerprint/1"
FULL_NUMEL = 4096
SAMPLES = 1024
CHECK_SAMPLES = 8
MAX_HEADER = 100 * 2**20

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


@functools.lru_cache(maxsize=4096)  # SDXL's UNet has ~100 distinct sizes; callers only read the result
def sample_positions(numel: int, count: int) -> torch.Tensor:
    """``count`` positions in ``[0, numel)``, the same on every machine for the same element count."""
    return torch.randint(0, numel, (count,), generator=torch.Generator().manual_seed(numel))


def _bytes(values: torch.Tensor) -> bytes:
    return values.cpu().contiguous().view(torch.uint8).numpy().tobytes() if values.numel() else b""


def fingerprint(tensors: Mapping[str, torch.Tensor]) -> str:
    """Sampled content hash of a state dict (see the module docstring for what it covers)."""
    digest = hashlib.sha256(FINGERPRINT_FORMAT.encode())
    for key in sorted(tensors):
        tensor = tensors[key].detach()
        digest.update(f"|{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        flat = tensor.reshape(-1)
        if flat.numel() > FULL_NUMEL:
            flat = flat[sample_positions(flat.numel(), SAMPLES).to(flat.device)]
        digest.update(_bytes(flat))
    return digest.hexdigest()


def read_header(path: str | os.PathLike) -> tuple[dict, int, dict]:
    """(tensor entries by name, byte offset of the data, metadata) of a safetensors file."""
    with open(path, "rb") as f:
        raw = f.read(8)
        size = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
        if not 0 < size <= MAX_HEADER:
            raise ValueError(f"{path} is not a safetensors file (header size {size})")
        header = json.loads(f.read(size))
    metadata = header.pop("__metadata__", None) or {}
    return header, 8 + size, metadata


def _dtype(path, name: str, entry: dict) -> torch.dtype:
    if entry.get("dtype") not in DTYPES:
        raise ValueError(f"{path}: tensor {name} has dtype {entry.get('dtype')}, which the trainer cannot read")
    return DTYPES[entry["dtype"]]


def _cast_from_file(
    f, start: int, end: int, source: torch.dtype, shape: list[int], target: torch.dtype, device: torch.device
) -> torch.Tensor:
    """The bytes ``[start, end)`` of the open file ``f`` (``source`` values) cast to ``target`` on ``device``,
    through a private mapping of just those pages that is closed before returning (its pages leave the
    process's resident memory)."""
    if end > os.fstat(f.fileno()).st_size:
        raise ValueError(f"{f.name} ends early: the file is truncated")
    offset = start - start % mmap.ALLOCATIONGRANULARITY
    mapped = mmap.mmap(f.fileno(), end - offset, offset=offset, access=mmap.ACCESS_COPY)
    raw = None
    try:
        if hasattr(mapped, "madvise") and hasattr(mmap, "MADV_WILLNEED"):
            mapped.madvise(mmap.MADV_WILLNEED)  # read the whole tensor ahead when the file is not cached yet
        raw = torch.frombuffer(mapped, dtype=torch.uint8, offset=start - offset, count=end - start)
        values = raw.view(source).view(shape)
        if device.type == "cpu":  # cast from the page cache straight into the result: one copy
            out = torch.empty(shape, dtype=target).copy_(values)
        else:
            out = values.to(device, target)
        del values
    finally:
        raw = None  # the tensor holds the buffer: it must go before the mapping can close
        mapped.close()
    return out


def read_tensors(
    path: str | os.PathLike, prefix: str, dtype: torch.dtype, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Every tensor whose name starts with ``prefix`` (names kept whole), read one at a time and cast to
    ``dtype`` on ``device``; floating-point tensors only are cast."""
    device = torch.device(device)
    header, base, _metadata = read_header(path)
    out = {}
    with open(path, "rb") as f:
        for name, entry in header.items():
            if not name.startswith(prefix):
                continue
            source = _dtype(path, name, entry)
            target = dtype if source.is_floating_point else source
            start, end = (base + o for o in entry["data_offsets"])
            if end == start:
                out[name] = torch.empty(entry["shape"], dtype=target, device=device)
            else:
                out[name] = _cast_from_file(f, start, end, source, entry["shape"], target, device)
    return out


def write_tensors(
    path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """Writes a safetensors file straight from the tensors' memory, one tensor at a time (safetensors'
    ``save_file`` first copies every tensor into a bytes object: a 5 GB UNet would briefly take 10 GB)."""
    names = {dtype: name for name, dtype in DTYPES.items()}
    header, offset, order = {}, 0, sorted(tensors)
    for key in order:
        tensor = tensors[key]
        size = tensor.numel() * tensor.element_size()
        header[key] = {
            "dtype": names[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    if metadata:
        header["__metadata__"] = dict(metadata)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for key in order:
            tensor = tensors[key].detach().to("cpu").contiguous()
            if tensor.numel():
                f.write(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))


def file_matches(
    path: str | os.PathLike,
    tensors: Mapping[str, torch.Tensor],
    prefixes: tuple[str, ...] = ("model.diffusion_model.", ""),
) -> str | None:
    """The prefix under which the safetensors file ``path`` holds exactly these tensors: the same names and
    shapes, and equal values (the file's cast to the dtype in memory) at ``CHECK_SAMPLES`` positions of each.
    None when it does not (another or a changed file, an unreadable dtype, not a safetensors file)."""
    try:
        header, base, _metadata = read_header(path)
    except (OSError, ValueError):
        return None
    for prefix in prefixes:
        names = {k for k in header if k.startswith(prefix)}
        if names == {prefix + k for k in tensors}:
            break
    else:
        return None
    with open(path, "rb") as f:
        for key, tensor in tensors.items():
            entry = header[prefix + key]
            if entry.get("dtype") not in DTYPES or list(tensor.shape) != entry.get("shape"):
                return None
            if not tensor.numel():
                continue
            source = DTYPES[entry["dtype"]]
            size = torch.empty((), dtype=source).element_size()
            positions = sample_positions(tensor.numel(), CHECK_SAMPLES)
            raw = bytearray()
            for p in positions.tolist():
                f.seek(base + entry["data_offsets"][0] + p * size)
                raw += f.read(size)
            if len(raw) != size * CHECK_SAMPLES:
                return None
            stored = torch.frombuffer(raw, dtype=source).to(tensor.dtype)
            if _bytes(stored) != _bytes(tensor.detach().reshape(-1)[positions.to(tensor.device)]):
                return None
    return prefix
