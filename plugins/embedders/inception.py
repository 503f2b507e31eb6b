"""`inception`: the FID feature extractor (2048-d pool3 features of the FID Inception-v3).

Spec: ``inception[:RESIZE][,WEIGHTS]`` or ``inception:WEIGHTS``, RESIZE being

- ``bilinear`` (default, pytorch-fid): uint8 -> [0, 1] -> bilinear resize to 299x299
  (align_corners=False, no antialiasing) -> [-1, 1];
- ``clean`` (clean-fid's resize): each channel resized as a float image with PIL's bicubic
  filter to 299x299, clipped to [0, 255], no quantisation -> [0, 1] -> [-1, 1].

The weights are never downloaded. They are looked up, in order, in the spec, in
`weights_path` (``fsbench fid --inception PATH``), in the FSBENCH_INCEPTION environment
variable (a file, or a folder holding it), and in torch's hub cache, where pytorch-fid
leaves its download. Features are raw (`normalized = False`), as FID expects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

import fsbench
from fsbench.api import Embedder
from fsbench.errors import CheckpointError, UsageError
from fsbench.hashing import sha256_of

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_FILE
PUBLISHED_SHA256_PREFIX = "6726825d"  # torch-hub naming: the file name carries its sha256 prefix
ENV_VAR = "FSBENCH_INCEPTION"
RESIZE_MODES = ("bilinear", "clean")
SIZE = 299

_models: dict[tuple[str, str, str], Any] = {}  # (path, sha256, device) -> loaded module
_warned: set[str] = set()  # weights files already reported as unpublished


def _hub_cache_file() -> Path:
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch"
    )
    return Path(torch_home) / "hub" / "checkpoints" / WEIGHTS_FILE


def missing_weights_message() -> str:
    return (
        f"the FID Inception weights {WEIGHTS_FILE} are needed and fsbench never downloads: "
        f"fetch {WEIGHTS_URL} on a machine with internet, then pass --inception PATH (fsbench fid/stats) "
        f"or --features inception:PATH (evaluate), set {ENV_VAR}=PATH (the file or its folder), "
        f"or put it at {_hub_cache_file()}; "
        "face-feature variants need no Inception (fd:dlib, or --features dlib for fid/kid/prdc)"
    )


def resize_batch(images: np.ndarray, mode: str, device: str = "cpu"):  # -> torch.Tensor
    """uint8 (N, H, W, 3) -> float (N, 3, 299, 299) in [0, 1] on `device`, by the named resize."""
    import torch
    import torch.nn.functional as F

    if mode == "bilinear":
        x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 255.0
        return F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    if mode == "clean":
        from PIL import Image

        out = np.empty((len(images), 3, SIZE, SIZE), dtype=np.float32)
        for i, img in enumerate(images):
            for c in range(3):
                chan = Image.fromarray(img[:, :, c].astype(np.float32), mode="F")
                chan = chan.resize((SIZE, SIZE), resample=Image.BICUBIC)
                out[i, c] = np.clip(np.asarray(chan), 0.0, 255.0)
        return torch.from_numpy(out).to(device) / 255.0
    raise UsageError(f"inception: unknown resize {mode!r} (known: {', '.join(RESIZE_MODES)})")


def load_fid_inception(path: Path, device: str = "cpu"):
    """The FID Inception with weights from `path`; CheckpointError for anything else."""
    import torch

    from fsbench.plugins.embedders._inception_net import FIDInceptionV3

    key = (str(path), sha256_of(path), device)
    if key in _models:
        return _models[key]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means "not a weights file"
        raise CheckpointError(path, f"not a PyTorch weights file ({exc.__class__.__name__}); expected {WEIGHTS_FILE}") from None
    model = FIDInceptionV3()
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise CheckpointError(path, f"holds no plain state_dict of tensors; expected {WEIGHTS_FILE}")
    got = {k: v.shape for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if tuple(expected[k]) != tuple(got[k]))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} tensors of the wrong shape (e.g. {wrong[0]})")
        raise CheckpointError(
            path, f"is not the FID Inception-v3 network ({WEIGHTS_FILE}): " + "; ".join(parts)
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(path, f"does not load into the FID Inception-v3: {str(exc).splitlines()[0]}") from None
    model.eval().to(device)
    _models[key] = model
    return model


class InceptionEmbedder(Embedder):
    """FID Inception-v3 pool3 features (2048-d, not normalised)."""

    name: ClassVar[str] = "inception"
    description: ClassVar[str] = "FID Inception-v3 pool3 features (pytorch-fid weights; resize bilinear|clean)"
    dim: ClassVar[int] = 2048
    input_size: ClassVar[tuple[int, int]] = (SIZE, SIZE)
    aligned_input: ClassVar[bool] = True  # takes images as they are; no face detection
    normalized: ClassVar[bool] = False
    batch_size: ClassVar[int] = 32

    def __init__(self, option: str | None = None, weights: str | Path | None = None) -> None:
        super().__init__(option)
        self.resize = "bilinear"
        self.weights_path: Path | None = Path(weights) if weights else None
        for part in filter(None, (option or "").split(",", 1)):
            if part in RESIZE_MODES:
                self.resize = part
            elif part.endswith((".pth", ".pt")) or os.sep in part or Path(part).exists():
                self.weights_path = Path(part)
            else:
                raise UsageError(
                    f"inception: option {part!r} is neither a resize ({', '.join(RESIZE_MODES)}) "
                    "nor a weights file (.pth)"
                )
        self._device: str | None = None

    # ----------------------------------------------------------------- weights

    def resolve_weights(self) -> Path:
        """The weights file to use; CheckpointError naming the file needed when there is none."""
        if self.weights_path is not None:
            path, origin = self.weights_path, "given"
        elif os.environ.get(ENV_VAR):
            path, origin = Path(os.environ[ENV_VAR]), ENV_VAR
        else:
            path, origin = _hub_cache_file(), "torch hub cache"
        if path.is_dir():
            path = path / WEIGHTS_FILE
        if not path.is_file():
            raise CheckpointError(path, f"not found ({origin}); " + missing_weights_message())
        return path

    def weights_id(self) -> str:
        return sha256_of(self.resolve_weights())[:12]

    def cache_key(self) -> str:
        # The weights path is not part of the key; its content hash is.
        return f"{self.name}-{self.resize}-{self.weights_id()}"

    def is_published_weights(self) -> bool:
        return self.weights_id().startswith(PUBLISHED_SHA256_PREFIX)

    def _model(self):
        import torch

        if self._device is None:
            self._device = "cuda" if torch.cuda.is_available() else "cpu"
        path = self.resolve_weights()
        model = load_fid_inception(path, self._device)
        if not self.is_published_weights() and str(path) not in _warned:
            from fsbench import ui

            _warned.add(str(path))
            ui.warn(
                f"{path}: sha256 starts with {self.weights_id()[:8]}, not {PUBLISHED_SHA256_PREFIX} as the "
                f"published {WEIGHTS_FILE}; these FIDs are not comparable with published ones"
            )
        return model

    # ----------------------------------------------------------------- features

    def embed(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, 2048) float32 pool3 features."""
        import torch

        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise UsageError(f"inception: expected (N, H, W, 3) images, got shape {images.shape}")
        model = self._model()
        feats = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                x = resize_batch(images[start : start + self.batch_size], self.resize, self._device)
                x = 2.0 * x - 1.0  # (n, 3, 299, 299) in [-1, 1]
                feats.append(model.features(x).float().cpu().numpy())
        if not feats:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(feats).astype(np.float32, copy=False)


@fsbench.hookimpl
def fsbench_register_embedders() -> list[type[Embedder]]:
    return [InceptionEmbedder]
