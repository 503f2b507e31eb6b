"""source_match: the share of real-identity samples nearest their own source identity's centre,
against a naive loop over the same pixel embeddings."""

from __future__ import annotations

import numpy as np
from conftest import write_folder
from PIL import Image

from fsbench.data import FaceDataset
from fsbench.registry import get_registry


def test_source_match_against_a_naive_loop(cli, tmp_path):
    ref = write_folder(tmp_path / "ref", ids=4, per_id=3, size=16, seed=1)
    rng = np.random.default_rng(2)
    rows = ["path,identity,source_identity"]
    sources = ["id_000", "id_001", "id_002", "id_003", "id_001", "id_002"]
    for k, src in enumerate(sources):
        made_from = "id_000" if k == 5 else src  # the last one was made from another identity
        base = np.asarray(Image.open(ref / made_from / "img_00.png")).astype(float)
        noise = 60 if k % 2 else 120
        img = np.clip(base + rng.normal(0, noise, base.shape), 0, 255).astype(np.uint8)
        (tmp_path / "syn" / f"s{k}").mkdir(parents=True)
        Image.fromarray(img).save(tmp_path / "syn" / f"s{k}" / "0.png")
        rows.append(f"s{k}/0.png,s{k},{src}")
    (tmp_path / "syn" / "manifest.csv").write_text("\n".join(rows) + "\n")
    out = cli.json("evaluate", "--dataset", tmp_path / "syn", "--reference", ref, "--embedder", "pixels",
                   "--metrics", "source_match", "--out", tmp_path / "ev")
    got = out["metrics"]["source_match"]

    emb = get_registry().embedder("pixels")
    r, s = FaceDataset.open(ref), FaceDataset.open(tmp_path / "syn")
    rv = emb.embed(np.stack([r.read(i) for i in range(len(r))]))
    centres = []
    for k in range(r.num_identities):
        c = rv[r.labels == k].mean(0)
        centres.append(c / np.linalg.norm(c))
    hits = []
    for i in range(len(s)):
        v = emb.embed(s.read(i)[None])[0]
        nearest = int(np.argmax([float(v @ c) for c in centres]))
        hits.append(r.identities[nearest] == s.manifest.iloc[i]["source_identity"])
    assert got["share"] == np.mean(hits) and got["n_images"] == 6 and got["chance"] == 0.25
    assert 0 < got["share"] < 1  # the mislabelled image makes it a real test
    bad = cli("evaluate", "--dataset", ref, "--reference", ref, "--embedder", "pixels", "--metrics", "source_match",
              "--out", tmp_path / "bad")
    assert bad.exit_code == 2 and "source_identity" in bad.stderr
