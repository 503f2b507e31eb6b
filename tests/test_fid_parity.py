"""FID parity: fsbench's Inception features and FID against pytorch-fid 0.3.0 and torch-fidelity 0.4.0.

The published FID weights cannot be downloaded here, so one seeded random state_dict (BatchNorm
running statistics included, so TF's eps = 0.001 matters) is loaded strictly into all three
networks; the same uint8 images of several sizes go through each package's own preprocessing.

- pytorch-fid: `pytorch_fid.inception.InceptionV3` (its wiring, resize, [-1, 1] scaling and the
  FIDInceptionA/C/E_1/E_2 blocks), fed as its `get_activations` feeds it. fsbench's `bilinear`
  embedder must give the same features at every size.
- torch-fidelity: `FeatureExtractorInceptionV3` (its own network, TF1-style resize and
  (x - 128) / 128 scaling). fsbench's network on torch-fidelity's preprocessed input must give the
  same features. End to end the two differ by design: TF1's resize samples at i * in/out where
  PyTorch's samples at (i + 0.5) * in/out - 0.5, and x / 127.5 - 1 is not (x - 128) / 128. The
  figures are in reports/benchmarks/fid_parity.md (tests/benchmarks/bench_fid_parity.py).
- The FID formula: fsbench's `frechet_distance` on `RunningMoments` statistics against
  pytorch-fid's `calculate_frechet_distance` and torch-fidelity's `fid_statistics_to_metric`.

Both packages declare torchvision as a dependency, which would pull a CUDA torch, so `make install`
installs them with --no-deps, and torchvision is absent. pytorch-fid subclasses torchvision's
Inception blocks and torch-fidelity's package imports torchvision (datasets, CLIP, VGG) at import
time; neither needs it for what is compared here. While the two packages are imported, a stand-in
`torchvision` answers their imports: every name in it is a class that raises when used, except
`torchvision.models.inception`, whose layer definitions (BasicConv2d, InceptionA..E, the stem of
`inception_v3`) are torch-fidelity's copies of torchvision's, never fsbench's. The stand-in is
removed from sys.modules afterwards. Where a real torchvision is installed it is used instead.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.linalg import LinAlgWarning

PINNED = ("pytorch-fid==0.3.0", "torch-fidelity==0.4.0")
INSTALL = f"pip install --no-deps {' '.join(PINNED)}  (make install does this)"
SEED = 0
# (height, width) of the test images: upsampled, at size, non-square, downsampled (no antialiasing in any)
SIZES = ((32, 32), (112, 112), (299, 299), (90, 120), (400, 400))
PER_SIZE = 2
# The network-only checks (fsbench's network on each reference's own input tensor): one size where the resize is
# the identity and one non-square upsampling are enough, the network's input being 299 x 299 either way.
NET_SIZES = ((299, 299), (90, 120))
# The published file's key names are those of all three networks: no key is renamed.
KEY_MAP: dict[str, str] = {}  # fsbench key -> reference key, for any key that differs (none)


# --------------------------------------------------------------------------- the references


class _Absent:
    """A name in the stand-in torchvision: it can be imported and subclassed, never used."""

    def __init__(self, *args, **kwargs) -> None:
        raise RuntimeError(f"{type(self).__module__}.{type(self).__qualname__} was used, but torchvision is not "
                           "installed (tests/test_fid_parity.py imports the references with a stand-in)")


class _StandInModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        absent = type(name, (_Absent,), {"__module__": self.__name__})
        setattr(self, name, absent)
        return absent


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    # pytorch-fid tries torchvision.models.utils first and falls back to torch's own loader.
    REFUSED = frozenset({"torchvision.models.utils"})

    def find_spec(self, name, path=None, target=None):
        if (name == "torchvision" or name.startswith("torchvision.")) and name not in self.REFUSED:
            return importlib.util.spec_from_loader(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return _StandInModule(spec.name)

    def exec_module(self, module) -> None:
        if module.__name__ == "torchvision":
            module.__version__ = "0.0"  # pytorch-fid's version switch: plain inception_v3(num_classes=..., ...)


@contextlib.contextmanager
def _torchvision_stand_in():
    finder = _StandInFinder()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]


class References(types.SimpleNamespace):
    """The reference packages' modules: pfi (pytorch_fid.inception), pfs (pytorch_fid.fid_score),
    tfi (torch_fidelity.feature_extractor_inceptionv3), tf_resize (its TF1 bilinear resize),
    tfm (torch_fidelity.metric_fid); versions: package -> version; stand_in: whether torchvision was stood in."""


_building: dict[str, Path] = {}  # the weights file torch-fidelity's network loads while pytorch-fid builds on it


def _inception_v3_from_torch_fidelity(**kwargs):
    """Stand-in `torchvision.models.inception_v3` for pytorch-fid's `fid_inception_v3`: torchvision's Inception3
    layout as torch-fidelity defines it (pytorch-fid keeps its stem, Mixed_6a and Mixed_7a; it replaces the rest)."""
    assert kwargs.get("num_classes") == 1008 and kwargs.get("aux_logits") is False, kwargs
    assert not kwargs.get("pretrained") and kwargs.get("weights") is None, kwargs
    tfi = sys.modules["torch_fidelity.feature_extractor_inceptionv3"]
    return tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(_building["w"]))


def load_references() -> References | None:
    """The two packages, imported once; None when either is not installed."""
    if hasattr(load_references, "cached"):
        return load_references.cached
    from importlib.metadata import PackageNotFoundError, version

    try:
        versions = {p: version(p) for p in ("pytorch-fid", "torch-fidelity")}
    except PackageNotFoundError:
        load_references.cached = None
        return None
    stand_in = importlib.util.find_spec("torchvision") is None
    with _torchvision_stand_in() if stand_in else contextlib.nullcontext():
        tfi = importlib.import_module("torch_fidelity.feature_extractor_inceptionv3")
        tfr = importlib.import_module("torch_fidelity.interpolate_compat_tensorflow")
        tfm = importlib.import_module("torch_fidelity.metric_fid")
        if stand_in:
            tvi = importlib.import_module("torchvision.models.inception")
            for name in ("BasicConv2d", "InceptionA", "InceptionB", "InceptionC", "InceptionD"):
                setattr(tvi, name, getattr(tfi, name))
            tvi.InceptionE = tfi.InceptionE_1  # torchvision's InceptionE.__init__; pytorch-fid overrides forward
            sys.modules["torchvision.models"].inception_v3 = _inception_v3_from_torch_fidelity
        pfi = importlib.import_module("pytorch_fid.inception")
        pfs = importlib.import_module("pytorch_fid.fid_score")
    load_references.cached = References(pfi=pfi, pfs=pfs, tfi=tfi, tfm=tfm, stand_in=stand_in, versions=versions,
                                        tf_resize=tfr.interpolate_bilinear_2d_like_tensorflow1x)
    return load_references.cached


# --------------------------------------------------------------------------- weights, images, the three pipelines


def random_fid_state_dict(seed: int = SEED) -> dict[str, torch.Tensor]:
    """A seeded random FID Inception state_dict: He-scaled convolutions, BatchNorm with non-trivial
    affine parameters and running statistics (so eps and the running stats are exercised)."""
    from fsbench.plugins.embedders._inception_net import FIDInceptionV3

    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, t in FIDInceptionV3().state_dict().items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros_like(t)
        elif key.endswith("conv.weight"):
            out[key] = torch.randn(t.shape, generator=g) * (2.0 / t[0].numel()) ** 0.5
        elif key.endswith("bn.weight"):
            out[key] = 0.5 + torch.rand(t.shape, generator=g)
        elif key.endswith(("bn.bias", "bn.running_mean")):
            out[key] = 0.2 * torch.randn(t.shape, generator=g)
        elif key.endswith("bn.running_var"):
            out[key] = 0.5 + 1.5 * torch.rand(t.shape, generator=g)
        elif key.startswith("fc."):
            out[key] = 0.01 * torch.randn(t.shape, generator=g)
        else:
            raise AssertionError(f"unexpected key {key}")
    return out


def test_images(seed: int = SEED, sizes=SIZES, per_size: int = PER_SIZE) -> dict[tuple[int, int], np.ndarray]:
    """uint8 (n, H, W, 3) images per size: smooth colour fields plus pixel noise (edges and flat areas)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = {}
    for h, w in sizes:
        imgs = []
        for _ in range(per_size):
            coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
            img = np.asarray(coarse, dtype=np.int16) + rng.integers(-24, 25, (h, w, 3))
            imgs.append(np.clip(img, 0, 255).astype(np.uint8))
        out[(h, w)] = np.stack(imgs)
    return out


test_images.__test__ = False  # a helper, not a test


@contextlib.contextmanager
def _pytorch_fid_weights(ref: References, weights: Path):
    """While active, pytorch-fid's `load_state_dict_from_url(FID_WEIGHTS_URL)` returns `weights` instead of downloading."""
    state = torch.load(weights, map_location="cpu", weights_only=True)

    def from_file(url, *args, **kwargs):
        assert url == ref.pfi.FID_WEIGHTS_URL, url
        return {KEY_MAP.get(k, k): v for k, v in state.items()}

    original, ref.pfi.load_state_dict_from_url = ref.pfi.load_state_dict_from_url, from_file
    _building["w"] = weights
    try:
        yield
    finally:
        ref.pfi.load_state_dict_from_url = original
        _building.clear()


def pytorch_fid_net(ref: References, weights: Path):
    """pytorch-fid's InceptionV3 (2048-d output block), its weights `weights` instead of the download."""
    with _pytorch_fid_weights(ref, weights):
        net = ref.pfi.InceptionV3([ref.pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    return net.eval()


def pytorch_fid_features(net, images: np.ndarray) -> np.ndarray:
    """As pytorch_fid.fid_score.get_activations: ToTensor (uint8 HWC -> float CHW / 255), forward, squeeze."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous().float().div(255)
    with torch.no_grad():
        pred = net(x)[0]
    if pred.size(2) != 1 or pred.size(3) != 1:
        pred = F.adaptive_avg_pool2d(pred, output_size=(1, 1))
    return pred.squeeze(3).squeeze(2).cpu().numpy()


def torch_fidelity_net(ref: References, weights: Path):
    """torch-fidelity's FeatureExtractorInceptionV3, 2048-d features, loading `weights` (strictly)."""
    tmp = weights.with_name(weights.stem + "-torch-fidelity.pth")
    torch.save({KEY_MAP.get(k, k): v for k, v in torch.load(weights, weights_only=True).items()}, tmp)
    return ref.tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(tmp))


def torch_fidelity_features(net, images: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()  # uint8 NCHW, as its datasets
    with torch.no_grad():
        return net(x)[0].numpy()


def fsbench_on_torch_fidelity_input(ref: References, weights: Path, images: np.ndarray) -> np.ndarray:
    """fsbench's network on torch-fidelity's preprocessing (TF1 resize, (x - 128) / 128): the network alone."""
    from fsbench.plugins.embedders.inception import SIZE, load_fid_inception

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    x = ref.tf_resize(x, size=(SIZE, SIZE), align_corners=False)
    with torch.inference_mode():
        return load_fid_inception(weights).features((x - 128) / 128).numpy()


def fsbench_features(weights: Path, images: np.ndarray, resize: str = "bilinear", device: str = "cpu") -> np.ndarray:
    """fsbench's `inception` embedder as shipped (on the CPU, where the references run)."""
    from fsbench.plugins.embedders.inception import InceptionEmbedder

    emb = InceptionEmbedder(option=resize, weights=weights)
    emb._device = device
    return emb.embed(images)


def fsbench_on_pytorch_fid_input(weights: Path, images: np.ndarray) -> np.ndarray:
    """fsbench's network on pytorch-fid's input tensor, memory layout included (ToTensor makes it NCHW-contiguous;
    fsbench's embedder feeds the permuted NHWC batch as it is, channels-last, which the CPU convolutions sum in
    another order: ~1e-7 relative, and ~25 % faster)."""
    from fsbench.plugins.embedders.inception import SIZE, load_fid_inception

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous().float().div(255)
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    with torch.inference_mode():
        return load_fid_inception(weights).features(2 * x - 1).numpy()


def max_diff(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(max |a - b|, that over max |b|)."""
    d = float(np.abs(a.astype(np.float64) - b).max())
    return d, d / max(float(np.abs(b).max()), 1e-30)


# --- FID from features: each package's own statistics and distance

def fsbench_fid(a: np.ndarray, b: np.ndarray, chunk: int = 256) -> float:
    from fsbench.plugins.metrics._distribution_math import frechet_distance
    from fsbench.stats import RunningMoments

    ma, mb = RunningMoments(a.shape[1]), RunningMoments(b.shape[1])
    for start in range(0, len(a), chunk):
        ma.update(a[start : start + chunk])
    for start in range(0, len(b), chunk):
        mb.update(b[start : start + chunk])
    return frechet_distance(ma.mean, ma.cov, mb.mean, mb.cov)


def pytorch_fid_fid(ref: References, a: np.ndarray, b: np.ndarray) -> float:
    # calculate_activation_statistics' two lines on the activations, then its calculate_frechet_distance
    stats = [(np.mean(x, axis=0), np.cov(x, rowvar=False)) for x in (a, b)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # scipy >= 1.16 deprecates sqrtm(disp=False)
        warnings.simplefilter("ignore", LinAlgWarning)  # "Matrix is singular": expected when N <= d
        return float(ref.pfs.calculate_frechet_distance(*stats[0], *stats[1]))


def torch_fidelity_fid(ref: References, a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = (ref.tfm.fid_features_to_statistics(torch.from_numpy(x)) for x in (a, b))
    return float(ref.tfm.fid_statistics_to_metric(sa, sb, verbose=False)[ref.tfm.KEY_METRIC_FID])


def feature_sets(d: int, n1: int, n2: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Two float32 (n, d) sets like pool3 features: non-negative, correlated, with different distributions."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    a = np.abs(rng.normal(size=(n1, d)) @ mix) + 0.1
    b = np.abs(rng.normal(size=(n2, d)) @ (mix + 0.3 * rng.normal(size=(d, d)) / np.sqrt(d))) * 1.1
    return a.astype(np.float32), b.astype(np.float32)


# --------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def ref() -> References:
    r = load_references()
    if r is None:
        pytest.skip(f"the FID reference packages are not installed: {INSTALL}")
    return r


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from fsbench.plugins.embedders.inception import WEIGHTS_FILE

    path = tmp_path_factory.mktemp("fid-parity") / WEIGHTS_FILE  # random weights under the published name
    torch.save(random_fid_state_dict(), path)
    return path


@pytest.fixture(scope="module")
def images() -> dict[tuple[int, int], np.ndarray]:
    return test_images()


def test_same_state_dict_layout_loads_strictly_everywhere(ref, weights):
    from fsbench.plugins.embedders._inception_net import FIDInceptionV3
    from fsbench.plugins.embedders.inception import load_fid_inception

    ours = set(FIDInceptionV3().state_dict())
    tf_net = torch_fidelity_net(ref, weights)  # loads strictly
    with _pytorch_fid_weights(ref, weights):
        pf_net = ref.pfi.fid_inception_v3()  # the named network InceptionV3 is cut from; loads strictly
    assert {KEY_MAP.get(k, k) for k in ours} == set(tf_net.state_dict()) == set(pf_net.state_dict())
    sd = load_fid_inception(weights).state_dict()
    for key, value in tf_net.state_dict().items():
        assert torch.equal(sd[key], value) and torch.equal(pf_net.state_dict()[key], value), key
    # pytorch-fid's FID blocks are its own classes (on torchvision's layer definitions), not torch-fidelity's
    assert type(pf_net.Mixed_5b).__module__ == type(pf_net.Mixed_7c).__module__ == "pytorch_fid.inception"


@pytest.fixture(scope="module")
def features(ref, weights, images) -> dict[str, dict[tuple[int, int], np.ndarray]]:
    """Pipeline -> size -> (n, 2048) features, each image batch through each pipeline once."""
    pf_net, tf_net = pytorch_fid_net(ref, weights), torch_fidelity_net(ref, weights)
    some = {s: images[s] for s in NET_SIZES}
    return {
        "fsbench": {s: fsbench_features(weights, x) for s, x in images.items()},
        "pytorch-fid": {s: pytorch_fid_features(pf_net, x) for s, x in images.items()},
        "fsbench net, pytorch-fid input": {s: fsbench_on_pytorch_fid_input(weights, x) for s, x in some.items()},
        "torch-fidelity": {s: torch_fidelity_features(tf_net, x) for s, x in some.items()},
        "fsbench net, torch-fidelity input": {s: fsbench_on_torch_fidelity_input(ref, weights, x) for s, x in some.items()},
    }


def test_features_equal_pytorch_fid(features, images):
    """fsbench's default `inception` (bilinear) embedder = pytorch-fid's InceptionV3, end to end, at every size."""
    for size, imgs in images.items():
        ours, theirs = features["fsbench"][size], features["pytorch-fid"][size]
        assert ours.shape == theirs.shape == (len(imgs), 2048)
        assert float(theirs.std()) > 0.05 and (theirs > 0).mean() > 0.5, "random weights gave degenerate features"
        absdiff, rel = max_diff(ours, theirs)
        assert rel <= 1e-5, f"{size}: max |fsbench - pytorch-fid| = {absdiff:.3g} ({rel:.3g} of the largest feature)"
    for size, ours in features["fsbench net, pytorch-fid input"].items():
        # on pytorch-fid's own input tensor (NCHW-contiguous) the network gives the same floats (0 here; round-off allowed)
        absdiff, rel = max_diff(ours, features["pytorch-fid"][size])
        assert rel <= 1e-6, f"{size}: max |fsbench net - pytorch-fid| = {absdiff:.3g} ({rel:.3g})"


def test_network_equals_torch_fidelity(features):
    """fsbench's network on torch-fidelity's own preprocessing = torch-fidelity's extractor."""
    for size in NET_SIZES:
        theirs = features["torch-fidelity"][size]
        absdiff, rel = max_diff(features["fsbench net, torch-fidelity input"][size], theirs)
        assert rel <= 1e-6, f"{size}: max |fsbench net - torch-fidelity| = {absdiff:.3g} ({rel:.3g})"
        # end to end the preprocessing differs (TF1 resize grid, (x - 128) / 128): close, not equal
        absdiff, rel = max_diff(features["fsbench"][size], theirs)
        assert 1e-5 < rel < 0.05, f"{size}: fsbench vs torch-fidelity end to end {rel:.3g}"


def test_resize_is_pytorch_fids_and_where_tf1_differs(ref, images):
    """fsbench's bilinear resize is pytorch-fid's F.interpolate call exactly; torch-fidelity's TF1 resize
    agrees at 299 px (both the identity) and differs elsewhere (another sampling grid, by design)."""
    from fsbench.plugins.embedders.inception import SIZE, resize_batch

    for (h, w), imgs in images.items():
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float()
        ours = resize_batch(imgs, "bilinear")
        assert torch.equal(ours, F.interpolate(x / 255, size=(SIZE, SIZE), mode="bilinear", align_corners=False))
        tf1 = ref.tf_resize(x, size=(SIZE, SIZE), align_corners=False)
        if (h, w) == (SIZE, SIZE):
            assert torch.equal(tf1, x) and torch.equal(ours, x / 255)
        else:
            assert float((ours * 255 - tf1).abs().max()) > 1.0  # a different sampling grid, not round-off


def test_fid_formula_equals_both_packages(ref):
    """fsbench's FID (RunningMoments + frechet_distance) = pytorch-fid's and torch-fidelity's, full rank and N < d."""
    for d, n1, n2 in ((256, 1200, 1000), (256, 120, 100)):
        a, b = feature_sets(d, n1, n2)
        ours = fsbench_fid(a, b)
        for name, theirs in (("pytorch-fid", pytorch_fid_fid(ref, a, b)), ("torch-fidelity", torch_fidelity_fid(ref, a, b))):
            assert abs(ours - theirs) <= 1e-6 * abs(theirs), f"d {d}, n {n1}/{n2}: fsbench {ours!r}, {name} {theirs!r}"


def test_fid_of_inception_features_equals_both_packages(ref, features):
    """The whole chain: FID(first images, second images) from fsbench's features and FID, and from pytorch-fid's
    features with pytorch-fid's and torch-fidelity's FID (a handful of images: rank-deficient covariances)."""
    ours = [np.concatenate([f[i : i + 1] for f in features["fsbench"].values()]) for i in range(PER_SIZE)]
    theirs = [np.concatenate([f[i : i + 1] for f in features["pytorch-fid"].values()]) for i in range(PER_SIZE)]
    # Keep the formula's cost down: 256 of the 2048 dimensions (the same ones everywhere; the benchmark uses all).
    cols = np.random.default_rng(SEED).choice(2048, 256, replace=False)
    fid_ours = fsbench_fid(*(f[:, cols] for f in ours))
    fid_pf = pytorch_fid_fid(ref, *(f[:, cols] for f in theirs))
    fid_tf = torch_fidelity_fid(ref, *(f[:, cols] for f in theirs))
    for fid_theirs in (fid_pf, fid_tf):
        assert abs(fid_ours - fid_theirs) <= 1e-4 * abs(fid_theirs), (fid_ours, fid_pf, fid_tf)


def test_stand_in_leaves_no_torchvision_behind(ref):
    assert "torchvision" not in sys.modules or not ref.stand_in
    if ref.stand_in:
        with pytest.raises(ImportError):
            importlib.import_module("torchvision")
