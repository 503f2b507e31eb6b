"""`insightface`: any local ONNX face-recognition model through insightface's model zoo.

Spec syntax (after ``--embedder insightface:``)::

    insightface:/models/w600k_r50.onnx                         input = aligned face crops
    insightface:/models/w600k_r50.onnx,det=/models/det_10g.onnx  detect + 5-point align

Nothing is downloaded: both files must exist locally (insightface distributes them in its
model packs, e.g. ``buffalo_l`` holds ``w600k_r50.onnx`` and ``det_10g.onnx``).

Aligned mode: crops that are not the model's input size (112 for every published model) are
resized with area interpolation. Detect mode: the detector's largest face, warped with
insightface's ``norm_crop`` (the ArcFace 5-point template) to the model's input size;
images without a face are reported through `failures()`. The model zoo chooses the pixel
normalisation from the graph (mean 127.5 / std 127.5 for arcface_torch exports, none for
old MXNet exports). Output rows are L2-normalised.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

import fsbench
from fsbench.api import Embedder
from fsbench.errors import CheckpointError, UsageError
from fsbench.hashing import weights_id

_HOWTO = "copy a recognition model such as w600k_r50.onnx (insightface's buffalo_l pack) to this machine"


def parse_spec(option: str | None) -> tuple[Path, Path | None]:
    if not option:
        raise UsageError("insightface needs a model: --embedder insightface:/path/model.onnx[,det=/path/det.onnx]")
    parts = option.split(",")
    rec, det = Path(parts[0]).expanduser(), None
    for extra in parts[1:]:
        key, _, value = extra.partition("=")
        if key != "det" or not value:
            raise UsageError(f"insightface:{option}: unknown part {extra!r} (expected det=/path/detector.onnx)")
        det = Path(value).expanduser()
    return rec, det


def _load(path: Path, role: str):
    """insightface.model_zoo's model for `path`, checked to be of the `role` we need."""
    import onnxruntime  # noqa: F401  (imported first so a broken install fails here, clearly)
    from insightface.model_zoo import model_zoo

    if not path.is_file():
        raise CheckpointError(path, f"no such ONNX file; {_HOWTO}" if role == "recognition" else "no such ONNX file")
    try:
        model = model_zoo.get_model(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnx/onnxruntime raise many types for a bad file
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise CheckpointError(path, f"not a loadable ONNX model ({first[:160]})") from None
    task = getattr(model, "taskname", None)
    if task != role:
        raise CheckpointError(
            path, f"insightface's model zoo reads this as a {task or 'unknown'} model, not a {role} model"
        )
    return model


class InsightFaceEmbedder(Embedder):
    name = "insightface"
    description = "local insightface ONNX recognition model (insightface:/path/model.onnx[,det=/path/det.onnx])"
    dim = 512
    input_size = (112, 112)
    aligned_input = True
    batch_size = 64

    def __init__(self, option: str | None = None) -> None:
        super().__init__(option)
        self.rec_path, self.det_path = parse_spec(option)
        self.rec = _load(self.rec_path, "recognition")
        self.det = _load(self.det_path, "detection") if self.det_path else None
        if self.det is not None:
            self.det.prepare(ctx_id=-1, input_size=(640, 640))
        side = int(self.rec.input_size[0])
        self.input_size = (side, side)
        dim = self.rec.output_shape[-1]
        if isinstance(dim, int):
            self.dim = dim
        else:  # symbolic output width: ask the model once
            self.dim = int(self.rec.get_feat(np.zeros((side, side, 3), np.uint8)).shape[-1])
        self.aligned_input = self.det is None
        self._weights: str | None = None
        self._failures: dict[int, str] = {}

    def weights_id(self) -> str:
        if self._weights is None:
            self._weights = weights_id(*(p for p in (self.rec_path, self.det_path) if p is not None))
        return self._weights

    def cache_key(self) -> str:
        mode = "det-normcrop" if self.det is not None else "aligned-area"
        return f"insightface-{self.rec_path.stem}-{mode}{self.input_size[0]}-{self.weights_id()}"

    def failures(self) -> dict[int, str]:
        return dict(self._failures)

    def _crop(self, rgb: np.ndarray) -> np.ndarray | None:
        """RGB image -> BGR aligned crop of the model's size (insightface works in BGR)."""
        import cv2
        from insightface.utils import face_align

        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        side = self.input_size[0]
        if self.det is None:
            if bgr.shape[:2] == (side, side):
                return bgr
            return cv2.resize(bgr, (side, side), interpolation=cv2.INTER_AREA)
        boxes, kps = self.det.detect(bgr, max_num=0)
        if len(boxes) == 0 or kps is None:
            return None
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        with warnings.catch_warnings():  # scikit-image's deprecation notice inside insightface
            warnings.simplefilter("ignore", FutureWarning)
            return face_align.norm_crop(bgr, landmark=kps[int(np.argmax(areas))], image_size=side)

    def embed(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise UsageError(f"insightface expects (N, H, W, 3) RGB images, got shape {images.shape}")
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        self._failures = {}
        crops: list[np.ndarray] = []
        where: list[int] = []
        for k, img in enumerate(images):
            crop = self._crop(img)
            if crop is None:
                self._failures[k] = "no face found by the insightface detector"
                continue
            crops.append(crop)
            where.append(k)
        for start in range(0, len(crops), self.batch_size):
            feats = np.asarray(self.rec.get_feat(crops[start : start + self.batch_size]), dtype=np.float32)
            norms = np.linalg.norm(feats, axis=1, keepdims=True)
            out[where[start : start + self.batch_size]] = feats / np.where(norms > 0, norms, 1.0)
        return out


@fsbench.hookimpl
def fsbench_register_embedders():
    return [InsightFaceEmbedder]
