"""insightface verification packs (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``...).

A pack is a pickle of ``(bins, issame)``: ``bins`` holds 2N encoded images (items 2k and
2k+1 form pair k), ``issame`` N booleans. insightface loads it with a plain `pickle.load`,
which runs whatever code the file names. fsbench reads packs from strangers, so the
unpickler here resolves only the handful of globals that real packs need (numpy's array
reconstruction) and refuses everything else *before* calling it: a pack that names
``os.system`` fails with a `DatasetError` and nothing runs.

Globals allowed, and why:

- ``numpy.ndarray``, ``numpy.dtype`` and ``numpy(._)core.multiarray._reconstruct``: newer
  packs store each image as a 1-D uint8 array of JPEG bytes (protocols 2-4);
- ``numpy(._)core.numeric._frombuffer``: the same arrays pickled with protocol 5;
- ``numpy(._)core.multiarray.scalar``: numpy scalars, e.g. a list of ``np.bool_`` flags;
- ``_codecs.encode``: how Python 3 spells a ``bytes`` object under pickle protocol 2
  (``encode(text, 'latin1')``); it only converts text with a registered codec;
- ``bytearray`` (``builtins`` or Python 2's ``__builtin__``): images some exporters store as
  bytearrays (protocols 2-4 rebuild them with a call); only from text or bytes, never from a
  size, so a pack cannot ask for a gigantic zeroed buffer.

Images may be bytes, bytearray, 1-D uint8 arrays (or a 1-D object array of those), flags a
list of bools/0-1 ints/numpy bools or a numpy array; anything else is refused by its type. Every
image's header size is checked here (`fsbench.data.images.size_problem`), so a pack holding a
decompression bomb is refused before anything is embedded.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fsbench.data.images import encoded_size, size_problem
from fsbench.errors import DatasetError

__all__ = ["read_bin", "write_bin"]


class _Refused(Exception):
    """Raised inside the unpickler; turned into a DatasetError once unpickling has stopped."""

    def __init__(self, qualified: str) -> None:
        super().__init__(qualified)
        self.qualified = qualified


def _bytearray(*args):
    """`bytearray` from text (+ encoding) or bytes only: ``bytearray(10**12)`` is refused."""
    if args and not isinstance(args[0], (str, bytes, bytearray)):
        raise _Refused(f"bytearray({type(args[0]).__name__})")
    return bytearray(*args)


def _allowed_globals() -> dict[tuple[str, str], object]:
    """Exact (module, name) pairs -> the object, resolved here so no module is imported by name."""
    import codecs

    from numpy._core import multiarray, numeric

    def reconstruct(subtype, shape, dtype):
        # numpy pickles always start from an empty array, filled by __setstate__ from the
        # file's bytes; any other shape would allocate memory the file does not hold
        if subtype is not np.ndarray or tuple(shape) != (0,):
            raise _Refused(f"numpy _reconstruct of shape {shape!r}")
        return multiarray._reconstruct(subtype, shape, dtype)

    frombuffer = numeric._frombuffer
    scalar = multiarray.scalar
    return {
        ("numpy.core.multiarray", "scalar"): scalar,
        ("numpy._core.multiarray", "scalar"): scalar,
        ("builtins", "bytearray"): _bytearray,
        ("__builtin__", "bytearray"): _bytearray,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy.core.numeric", "_frombuffer"): frombuffer,
        ("numpy._core.numeric", "_frombuffer"): frombuffer,
        ("_codecs", "encode"): codecs.encode,
    }


class _PackUnpickler(pickle.Unpickler):
    """An unpickler that knows only the globals in `_allowed_globals`."""

    def __init__(self, file, **kwargs) -> None:
        super().__init__(file, **kwargs)
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid):  # packs never use persistent ids
        raise _Refused(f"persistent id {pid!r}")


def _unpickle(path: Path, data: bytes):
    """Plain load first, then Python 2's `encoding='bytes'` on a UnicodeDecodeError, as
    insightface does; every failure becomes one DatasetError naming the file."""
    last: Exception | None = None
    for kwargs in ({}, {"encoding": "bytes"}):
        try:
            return _PackUnpickler(io.BytesIO(data), **kwargs).load()
        except _Refused as exc:
            raise DatasetError(
                path, f"refused to load: the pickle asks for {exc.qualified}, which a "
                "verification pack never needs (it may try to run code)"
            ) from None
        except UnicodeDecodeError as exc:
            last = exc
            continue
        except (pickle.UnpicklingError, EOFError) as exc:
            raise DatasetError(path, f"truncated or corrupt .bin ({exc or 'unexpected end of data'})") from None
        except (ValueError, TypeError, AttributeError, IndexError, KeyError, OverflowError,
                MemoryError, RecursionError) as exc:
            raise DatasetError(path, f"corrupt .bin ({exc.__class__.__name__}: {exc})") from None
    raise DatasetError(path, f"corrupt .bin (undecodable text: {last})")


def _as_bytes(path: Path, item: object, k: int) -> bytes:
    if isinstance(item, (bytes, bytearray)):
        data = bytes(item)
    elif isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 1:
        data = item.tobytes()
    elif isinstance(item, str):  # a Python 2 str read with latin1-style decoding
        try:
            data = item.encode("latin1")
        except UnicodeEncodeError:
            raise DatasetError(path, f"image {k} is text, expected encoded image bytes") from None
    elif isinstance(item, np.ndarray):
        raise DatasetError(path, f"image {k} is a numpy {item.dtype} array of shape {item.shape}, "
                                 "expected encoded image bytes (bytes, or a 1-D uint8 array)")
    else:
        raise DatasetError(path, f"image {k} is a {type(item).__name__}, expected encoded image bytes")
    hw = encoded_size(data)  # a decompression bomb is refused here, before anything decodes it
    problem = size_problem(*hw) if hw is not None else None
    if problem:
        raise DatasetError(f"{path}[image {k}]", problem)
    return data


def read_bin(path: str | Path) -> tuple[list[bytes], list[bool]]:
    """Read a verification pack safely: (2N encoded images, N is-same flags)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(path, "no such verification pack") from None
    except IsADirectoryError:
        raise DatasetError(path, "is a folder, expected an insightface .bin file") from None
    if not data:
        raise DatasetError(path, "empty file, expected an insightface .bin pack")
    obj = _unpickle(path, data)
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise DatasetError(path, f"expected a pickled 2-tuple (images, issame), got {type(obj).__name__}")
    bins, issame = obj
    if isinstance(bins, np.ndarray) and bins.dtype == object and bins.ndim == 1:
        bins = bins.tolist()  # an object array of encoded images
    if isinstance(issame, np.ndarray):
        if issame.ndim != 1 or issame.dtype.kind not in "biu":
            raise DatasetError(path, f"issame is a numpy {issame.dtype} array of shape {issame.shape}, "
                                     "expected N booleans")
        issame = issame.tolist()
    if not isinstance(bins, (list, tuple)) or not isinstance(issame, (list, tuple)):
        raise DatasetError(path, "expected (list of encoded images, list of booleans)")
    if len(bins) != 2 * len(issame):
        raise DatasetError(
            path, f"holds {len(bins)} images for {len(issame)} pairs (expected 2 x {len(issame)})"
        )
    if not issame:
        raise DatasetError(path, "holds no pairs")
    images = [_as_bytes(path, item, k) for k, item in enumerate(bins)]
    flags: list[bool] = []
    for k, flag in enumerate(issame):
        if not isinstance(flag, (bool, np.bool_, int, np.integer)) or int(flag) not in (0, 1):
            raise DatasetError(path, f"issame[{k}] is {flag!r}, expected a boolean")
        flags.append(bool(flag))
    return images, flags


def write_bin(path: str | Path, encoded_images: Sequence[bytes], issame: Sequence[bool]) -> None:
    """Write a pack insightface can read (protocol 4), via a temporary file and a rename."""
    path = Path(path)
    images = [bytes(b) for b in encoded_images]
    flags = [bool(s) for s in issame]
    if len(images) != 2 * len(flags):
        raise ValueError(f"write_bin: {len(images)} images for {len(flags)} pairs (need 2 per pair)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            pickle.dump((images, flags), fh, protocol=4)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
