"""`dlib`: dlib's ResNet face descriptor (128-d), the one pretrained face recognizer that
is available offline here (its weights ship in the `face-recognition-models` package).

Two modes, named in the spec:

- ``dlib`` / ``dlib:detect`` (default): dlib's HOG frontal face detector (upsampling once
  when the image's short side is under 300 px), the largest face, dlib's 5-point landmarks,
  ``get_face_chip`` at 150 px with padding 0.25, descriptor. Images with no face are
  reported through `failures()` (the context drops and lists them), never silently.
- ``dlib:aligned``: the input already is a face crop; it is resized to 150 x 150 (area
  interpolation when shrinking, bilinear when enlarging) and described whole.

Descriptors are L2-normalised (dlib's own are not unit length; its 0.6 Euclidean threshold
does not apply to these). Work is spread over worker processes (forked, each loading the
models once); ``FSBENCH_DLIB_WORKERS=N`` overrides the count (1 = in-process).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

import fsbench
from fsbench.api import Embedder
from fsbench.errors import CheckpointError, UsageError
from fsbench.hashing import weights_id

CHIP = 150  # dlib's descriptor network input
FILES = {
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
    "landmarks": "shape_predictor_5_face_landmarks.dat",
}
MODES = ("detect", "aligned")


def model_files() -> dict[str, Path]:
    """Paths of dlib's weight files, found without importing face_recognition_models
    (its __init__ needs pkg_resources, which new setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise CheckpointError(
            "face_recognition_models", "package not installed; `pip install face-recognition-models` ships dlib's weights"
        )
    folder = Path(spec.origin).parent / "models"
    paths = {key: folder / name for key, name in FILES.items()}
    for path in paths.values():
        if not path.is_file():
            raise CheckpointError(path, "missing; reinstall face-recognition-models, which ships this file")
    return paths


def weights_available() -> bool:
    try:
        model_files()
    except CheckpointError:
        return False
    return True


# --------------------------------------------------------------------------- per-process work

_MODELS: dict[str, Any] = {}


def _models() -> dict[str, Any]:
    """dlib's detector, shape predictor and descriptor net, loaded once per process."""
    if not _MODELS:
        import dlib

        files = model_files()
        _MODELS["detector"] = dlib.get_frontal_face_detector()
        _MODELS["landmarks"] = dlib.shape_predictor(str(files["landmarks"]))
        _MODELS["recognition"] = dlib.face_recognition_model_v1(str(files["recognition"]))
    return _MODELS


def _resize(img: np.ndarray) -> np.ndarray:
    import cv2

    if img.shape[:2] == (CHIP, CHIP):
        return np.ascontiguousarray(img)
    shrink = min(img.shape[:2]) > CHIP
    return cv2.resize(img, (CHIP, CHIP), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def face_chip(img: np.ndarray) -> np.ndarray | None:
    """Detect the largest face, align it with 5 landmarks: (150, 150, 3) uint8, or None."""
    import dlib

    m = _models()
    img = np.ascontiguousarray(img)
    upsample = 1 if min(img.shape[:2]) < 300 else 0
    faces = m["detector"](img, upsample)
    if len(faces) == 0:
        return None
    face = max(faces, key=lambda r: r.width() * r.height())
    shape = m["landmarks"](img, face)
    return dlib.get_face_chip(img, shape, size=CHIP, padding=0.25)


def embed_chunk(images: np.ndarray, mode: str) -> tuple[np.ndarray, dict[int, str]]:
    """(n, H, W, 3) uint8 -> ((n, 128) float32 unit rows, {position: reason} for failures)."""
    m = _models()
    out = np.zeros((len(images), 128), dtype=np.float32)
    failed: dict[int, str] = {}
    chips, where = [], []
    for k, img in enumerate(images):
        chip = _resize(img) if mode == "aligned" else face_chip(img)
        if chip is None:
            failed[k] = "no face found by dlib's frontal detector"
            continue
        chips.append(chip)
        where.append(k)
    if chips:
        desc = np.asarray(m["recognition"].compute_face_descriptor(chips), dtype=np.float32)  # (n_ok, 128)
        out[where] = desc / np.linalg.norm(desc, axis=1, keepdims=True)
    return out, failed


# --------------------------------------------------------------------------- embedder


def _default_workers() -> int:
    env = os.environ.get("FSBENCH_DLIB_WORKERS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise UsageError(f"FSBENCH_DLIB_WORKERS={env!r} is not an integer") from None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


class DlibEmbedder(Embedder):
    name = "dlib"
    description = "dlib ResNet 128-d (face-recognition-models weights); dlib:detect (default) or dlib:aligned"
    dim = 128
    input_size = (CHIP, CHIP)
    aligned_input = False
    batch_size = 64

    def __init__(self, option: str | None = None, workers: int | None = None) -> None:
        super().__init__(option)
        self.mode = option or "detect"
        if self.mode not in MODES:
            raise UsageError(f"dlib:{option}: unknown mode (known: {', '.join(MODES)})")
        self.aligned_input = self.mode == "aligned"
        self.files = model_files()  # fail early, naming the missing file
        self.workers = _default_workers() if workers is None else max(1, int(workers))
        self._pool: ProcessPoolExecutor | None = None
        self._failures: dict[int, str] = {}
        self._weights: str | None = None

    def weights_id(self) -> str:
        if self._weights is None:
            self._weights = weights_id(*(self.files[key] for key in sorted(self.files)))
        return self._weights

    def cache_key(self) -> str:
        # The preprocessing is part of the space: chip size, padding, detector upsampling rule.
        prep = "resize150" if self.mode == "aligned" else "hog-5pt-chip150-pad0.25"
        return f"dlib-{self.mode}-{prep}-{self.weights_id()}"

    def failures(self) -> dict[int, str]:
        return dict(self._failures)

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing as mp

            # fork: starts in milliseconds and needs no `if __name__ == "__main__"` guard in
            # the caller's script; children only run dlib and numpy (no torch, no OpenMP).
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context(method), initializer=_models)
            atexit.register(self.close)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def embed(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise UsageError(f"dlib expects uint8 (N, H, W, 3) RGB images, got {images.dtype} {images.shape}")
        n = len(images)
        if self.workers <= 1 or n < 2 * self.workers:
            out, self._failures = embed_chunk(images, self.mode)
            return out
        bounds = np.linspace(0, n, self.workers + 1).astype(int)
        pool = self._executor()
        futures = [pool.submit(embed_chunk, images[a:b], self.mode) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        parts, failures = [], {}
        for a, fut in zip(bounds, futures):
            vec, bad = fut.result()
            parts.append(vec)
            failures.update({int(a) + int(k): reason for k, reason in bad.items()})
        self._failures = failures
        return np.concatenate(parts)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


@fsbench.hookimpl
def fsbench_register_embedders():
    return [DlibEmbedder]
