"""Reading ``.npz`` archives of untrusted bytes: :func:`read_npz`, shared by data and model files.

``np.load`` trusts an archive's structure: a byte-damaged ``.npy`` header can
escape as ``tokenize.TokenError`` or ``SyntaxError``, a member that is not an
``.npy`` file comes back as ``bytes`` (then ``AttributeError`` in the caller),
and a header claiming shape ``(10**12, 3)`` allocates 21.8 TiB before reading a
byte.  :func:`read_npz` reads the ZIP archive itself, parses each member's
``.npy`` header, checks the size the header claims against the bytes the
member actually holds *before* allocating anything, reads the data (the ZIP
CRC is checked), and raises the caller's error class with a one-line message
naming the member for every kind of damage.  Nothing is ever unpickled.
"""

from __future__ import annotations

import math
import zipfile

import numpy as np

__all__ = ["read_npz"]

_NPY_MAGIC = b"\x93NUMPY"
_CHUNK = 1 << 24


def _header_reader():
    impl = getattr(np.lib, "_format_impl", None)
    fn = getattr(impl, "_read_array_header", None) or getattr(
        np.lib.format, "_read_array_header", None
    )
    return fn


_READ_HEADER = _header_reader()


def _parse_header(fp, version):
    if _READ_HEADER is not None:
        return _READ_HEADER(fp, version)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    return np.lib.format.read_array_header_2_0(fp)


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, key: str, error):
    """One ``.npy`` member as an array, or ``error`` saying how the member is damaged."""
    damaged = f"{where}: array {key!r} is truncated or corrupted"
    with zf.open(info) as m:
        try:
            version = np.lib.format.read_magic(m)
            shape, fortran, dtype = _parse_header(m, version)
        except Exception as exc:  # any parser error on damaged bytes (TokenError, SyntaxError...)
            raise error(
                f"{damaged}: unreadable .npy header ({type(exc).__name__}: {exc})"
            ) from None
        if not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape):
            raise error(f"{damaged}: bad shape {shape!r} in its .npy header")
        if dtype.hasobject:
            raise error(
                f"{where}: array {key!r} has object dtype, which would need unpickling: "
                "refused (not plain numbers: truncated or corrupted, or saved from objects)"
            )
        header_size = m.tell()
        held = info.file_size - header_size
        claimed = math.prod(shape) * dtype.itemsize
        if claimed != held:  # checked before anything the header claims is allocated
            raise error(
                f"{damaged}: its header claims shape {shape} of {dtype} ({claimed:,} bytes), "
                f"the archive member holds {max(held, 0):,} bytes"
            )
        buf = bytearray()
        while len(buf) < held:
            chunk = m.read(min(_CHUNK, held - len(buf)))
            if not chunk:
                break
            buf += chunk
        if len(buf) != held or m.read(1):  # the last read also checks the ZIP CRC
            raise error(f"{damaged}: the archive member's size does not match its data")
    if claimed == 0:
        return np.empty(shape, dtype=dtype, order="F" if fortran else "C")
    flat = np.frombuffer(buf, dtype=dtype)
    if fortran:
        return flat.reshape(shape[::-1]).transpose()
    return flat.reshape(shape)


def read_npz(f, where: str, error) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` archive in the binary file object ``f`` (seekable), by name.

    Every damage raises ``error`` (an exception class) with a one-line message
    starting with ``where``: not a ZIP archive, a broken ZIP structure or CRC,
    a member that is not an ``.npy`` file, a duplicated name, an unreadable
    ``.npy`` header, an object dtype (never unpickled), or a header whose shape
    and dtype do not fit the bytes the member holds (checked before allocating).
    """
    start = f.read(len(_NPY_MAGIC))
    f.seek(0)
    if start == _NPY_MAGIC:
        raise error(f"{where}: a single .npy array, not an .npz archive")
    try:
        zf = zipfile.ZipFile(f)
    except Exception as exc:  # BadZipFile, OSError, EOFError, ValueError... on damaged bytes
        raise error(
            f"{where}: not a readable .npz archive: truncated or corrupted, empty, or another "
            f"format ({type(exc).__name__}: {exc})"
        ) from None
    out: dict[str, np.ndarray] = {}
    with zf:
        try:
            infos = zf.infolist()
            for info in infos:
                name = info.filename
                if not name.endswith(".npy") or info.is_dir():
                    raise error(
                        f"{where}: archive member {name!r} is not an .npy array (a corrupted "
                        "file, or not written by NumPy)"
                    )
                key = name[: -len(".npy")]
                if key in out:
                    raise error(f"{where}: the archive holds {key!r} twice (corrupted file)")
                out[key] = _read_member(zf, info, where, key, error)
        except error:
            raise
        except MemoryError:
            raise  # the sizes were checked against the file: a real shortage of memory
        except Exception as exc:  # zipfile, zlib, CRC, encryption flags... on damaged bytes
            raise error(
                f"{where}: truncated or corrupted .npz archive ({type(exc).__name__}: {exc})"
            ) from None
    return out
