"""SegTex's classification protocol (its Table 7): train on 50 images per identity, test on the rest.

Per identity, the first `train_per_id` images in the dataset's order (sorted file names) are
for training and every later image is for validation; the score is top-1 accuracy of the
classifier over all identities. An identity with `train_per_id` images or fewer contributes
all of them to training (it stays a class the classifier can confuse others with) and none
to validation; the result counts such identities. A dataset where no identity has more than
`train_per_id` images cannot be scored and is refused.

SegTex trains a ResNet-50 with plain softmax cross-entropy at lr 0.01 (preset ``segtex``);
with other presets, the head is a plain linear softmax unless ``-o margin=...`` says otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fsbench.data import FaceDataset
from fsbench.errors import UsageError

__all__ = ["classify_benchmark", "split_first_k"]


def split_first_k(labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the first k items of each label (train) and of the others (validation)."""
    if k < 1:
        raise UsageError(f"--train-per-id must be at least 1, got {k}")
    rank = np.zeros(len(labels), dtype=np.int64)
    seen: dict[int, int] = {}
    for i, lab in enumerate(labels.tolist()):
        rank[i] = seen.get(lab, 0)
        seen[lab] = rank[i] + 1
    train = np.flatnonzero(rank < k)
    val = np.flatnonzero(rank >= k)
    return train, val


def classify_benchmark(
    data: Path, work: Path, preset: str = "tiny", overrides: dict[str, Any] | None = None, train_per_id: int = 50
) -> dict[str, Any]:
    """Train on the split, return accuracy and the split's counts."""
    import torch

    from fsbench.train.data import normalize, resize_uint8
    from fsbench.train.fr import load_fr_model, train_fr

    overrides = dict(overrides or {})
    overrides.setdefault("margin", "linear")
    ds = FaceDataset.open(data)
    if ds.num_identities < 2:
        raise UsageError(f"{data}: {ds.num_identities} identity; classification needs at least 2")
    train_idx, val_idx = split_first_k(ds.labels, train_per_id)
    counts = ds.counts()
    no_val = int((counts <= train_per_id).sum())
    if len(val_idx) == 0:
        raise UsageError(
            f"{data}: no identity has more than {train_per_id} images, so nothing is left to validate on "
            f"(largest has {int(counts.max())}); lower --train-per-id"
        )
    run = train_fr(ds, work, preset, overrides, indices=train_idx)
    model, cfg, _ = load_fr_model(work, "cpu" if not torch.cuda.is_available() else "cuda")
    device = next(model.parameters()).device
    correct = 0
    with torch.no_grad():
        for b in ds.batches(batch_size=256, indices=val_idx):
            x = normalize(torch.from_numpy(resize_uint8(b.images, cfg["input_size"])).to(device))
            labels = torch.from_numpy(b.labels).to(device)
            # labels -1: no margin at test time, the plain (scaled) cosines or linear logits
            logits = model.head(model.backbone(x), torch.full_like(labels, -1))
            correct += int((logits.argmax(1) == labels).sum())
    return {
        "dataset": str(data), "identities": ds.num_identities, "images": len(ds),
        "train_images": int(len(train_idx)), "val_images": int(len(val_idx)),
        "ids_without_val": no_val, "train_per_id": train_per_id,
        "accuracy": 100.0 * correct / len(val_idx), "train_seconds": round(run.seconds, 1),
        "steps": run.steps, "preset": preset, "margin": cfg["margin"], "run_dir": str(work),
    }
