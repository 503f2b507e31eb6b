"""An Embedder over a backbone trained by `fsbench fr train`, for verification of the run.

Not registered as a plugin: `fsbench benchmark fr` builds it from a run folder. It resizes
the (already 112 px) benchmark images to the run's input size with the same named transform
training used, normalises to [-1, 1] and returns L2-normalised embeddings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fsbench.api import Embedder


class RunEmbedder(Embedder):
    name = "fr-run"
    description = "a backbone trained by fsbench fr train"
    dim = 512
    batch_size = 128

    def __init__(self, run_dir: str | Path, device: Any = None) -> None:
        import torch

        from fsbench.train.device import pick_device
        from fsbench.train.fr import load_backbone

        super().__init__(option=str(run_dir))
        self.device = device or pick_device("auto")
        self.model, self.cfg = load_backbone(run_dir, self.device)
        self.dim = int(self.cfg["embedding_size"])  # type: ignore[misc]
        self.input_size = (self.cfg["input_size"], self.cfg["input_size"])  # type: ignore[misc]
        self._torch = torch
        self._id = str(self.cfg.get("data_fingerprint", "run"))

    def weights_id(self) -> str:
        return self._id

    def embed(self, images: np.ndarray) -> np.ndarray:
        torch = self._torch
        from fsbench.train.data import normalize, resize_uint8

        images = resize_uint8(np.ascontiguousarray(images), self.cfg["input_size"])  # (N, S, S, 3)
        with torch.no_grad():
            x = normalize(torch.from_numpy(images).to(self.device))
            emb = self.model(x).float()
            emb = torch.nn.functional.normalize(emb, dim=1)
        return emb.cpu().numpy().astype(np.float32)
