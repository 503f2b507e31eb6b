"""`iresnet`: a torch IResNet face embedder (insightface arcface_torch layout).

Spec syntax (after ``--embedder iresnet:``)::

    iresnet:/path/backbone.pth              architecture read from the weights
    iresnet:r50:/path/backbone.pth          architecture checked against the weights
    iresnet:/path/backbone.pth:flip         + flip test-time augmentation
    iresnet:runs/fr                         a `fsbench fr train` run folder (backbone.pth + config.json)
    iresnet:r18:random:0                    RANDOMLY INITIALISED r18, seed 0 (plumbing tests only)

Weights: an arcface_torch ``backbone.pth`` (a plain state_dict, loaded with strict=True), an
fsbench checkpoint (a dict whose "backbone" or "model" entry is the state_dict, e.g.
``checkpoint.pt`` of an FR run), or an FR run folder. Everything is read with
``torch.load(weights_only=True)``.

Preprocessing (recorded in the cache key): images that are not S x S (S = the model's input
size, 112 for published weights) are resized with area interpolation ("area"), except for
fsbench FR runs (a config.json beside the weights), which get the antialiased bilinear resize
their training used ("bilinear-aa"); pixels go to [-1, 1] as (x / 255 - 0.5) / 0.5. With
flip, the embedding is that of the image plus that of its mirror, then L2-normalised
(insightface's verification does the same).

A random model is never a face model: its cache key and `description` say "random", and it
exists so that the evaluate -> metric plumbing can be tested before an FR model is trained.

`serfiq` gives SER-FIQ quality scores (the `div` metric): the backbone runs once per image
and only dropout + fc + features are repeated m times.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

import fsbench
from fsbench.api import Embedder
from fsbench.errors import CheckpointError, UsageError
from fsbench.hashing import weights_id

_HOWTO = (
    "give an insightface arcface_torch backbone.pth (e.g. ms1mv3_arcface_r50_fp16/backbone.pth from "
    "insightface's model zoo, copied to this machine) or an fsbench FR checkpoint"
)


def parse_spec(option: str | None) -> dict[str, Any]:
    """`[ARCH:]PATH[:flip]` or `ARCH:random[:SEED][:flip]` -> {arch, path, random, seed, flip}."""
    from fsbench.nn.iresnet import ARCHS

    if not option:
        raise UsageError(
            "iresnet needs weights: --embedder iresnet:[ARCH:]/path/backbone.pth[:flip] "
            "(or iresnet:r18:random:SEED for a randomly initialised plumbing-test model)"
        )
    parts = option.split(":")
    flip = parts[-1] == "flip"
    if flip:
        parts = parts[:-1]
    arch = parts[0] if parts and parts[0] in ARCHS else None
    rest = parts[1:] if arch else parts
    if rest and rest[0] == "random":
        if arch is None:
            raise UsageError(f"iresnet:{option}: a random model needs an architecture, e.g. iresnet:r18:random:0")
        if len(rest) > 2:
            raise UsageError(f"iresnet:{option}: expected ARCH:random[:SEED][:flip]")
        try:
            seed = int(rest[1]) if len(rest) == 2 else 0
        except ValueError:
            raise UsageError(f"iresnet:{option}: the seed after 'random' must be an integer") from None
        return {"arch": arch, "path": None, "random": True, "seed": seed, "flip": flip}
    path = ":".join(rest)
    if not path:
        raise UsageError(f"iresnet:{option}: no weights path given")
    return {"arch": arch, "path": Path(path).expanduser(), "random": False, "seed": None, "flip": flip}


def _state_dict(obj: Any, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The backbone state_dict inside a loaded file, and any config stored beside it."""
    import torch

    config: dict[str, Any] = {}
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        config = obj.get("config") if isinstance(obj.get("config"), dict) else {}
        for key in ("backbone", "model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        else:
            raise CheckpointError(
                path, f"holds no backbone weights (a dict with keys {sorted(obj)[:8]}); {_HOWTO}"
            )
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(path, f"is not a state_dict of an IResNet; {_HOWTO}")
    # DistributedDataParallel and torch.compile prefixes
    state = {re.sub(r"^(module\.|_orig_mod\.)+", "", k): v for k, v in obj.items()}
    return state, config


def _infer_arch(state: dict[str, Any], path: Path) -> tuple[str, int, int, int]:
    """(arch, width, input_size, num_features) from parameter names and shapes."""
    from fsbench.nn.iresnet import ARCHS, map_size

    need = ("conv1.weight", "fc.weight", "features.weight")
    missing = [k for k in need if k not in state]
    if missing:
        raise CheckpointError(path, f"is not an IResNet backbone (no {', '.join(missing)}); {_HOWTO}")
    blocks = []
    for layer in range(1, 5):
        ids = {int(m.group(1)) for k in state if (m := re.match(rf"layer{layer}\.(\d+)\.", k))}
        blocks.append(len(ids))
    names = [n for n, b in ARCHS.items() if tuple(blocks) == b]
    if not names:
        raise CheckpointError(path, f"has blocks per stage {tuple(blocks)}, which is no known IResNet ({', '.join(ARCHS)})")
    width = int(state["conv1.weight"].shape[0])
    num_features, fc_in = (int(s) for s in state["fc.weight"].shape)
    side2 = fc_in // (8 * width)
    side = int(round(side2**0.5))
    if side * side * 8 * width != fc_in:
        raise CheckpointError(path, f"fc.weight has {fc_in} inputs, not 8 * {width} * side^2")
    input_size = 112 if map_size(112) == side else side * 16
    return names[0], width, input_size, num_features


def _load(path: Path):
    import torch

    if not path.is_file():
        raise CheckpointError(path, f"no such weights file; {_HOWTO}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise CheckpointError(path, f"unreadable or truncated weights file ({first[:160]})") from None
    return obj


def _run_config(weights: Path) -> dict[str, Any]:
    """config.json of the `fsbench fr train` run that holds `weights`, or {} if it is not one."""
    import json

    path = weights.parent / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return cfg if isinstance(cfg, dict) and "network" in cfg and "input_size" in cfg else {}


class IResNetEmbedder(Embedder):
    name = "iresnet"
    description = "torch IResNet (arcface_torch backbone.pth or fsbench FR checkpoint; ARCH:random = untrained)"
    dim = 512
    input_size = (112, 112)
    aligned_input = True
    batch_size = 64

    def __init__(self, option: str | None = None) -> None:
        import torch

        from fsbench.nn.iresnet import get_model, is_standard

        super().__init__(option)
        spec = parse_spec(option)
        self.flip: bool = spec["flip"]
        self.random: bool = spec["random"]
        self.path: Path | None = spec["path"]
        self.resize = "area"
        if self.random:
            self.arch = spec["arch"]
            with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's RNG
                torch.manual_seed(spec["seed"])
                self.model = get_model(self.arch)
            self._weights = f"RANDOM-seed{spec['seed']}"
            self.description = f"RANDOMLY INITIALISED {self.arch} (seed {spec['seed']}): not a face model"
        else:
            assert self.path is not None
            if self.path.is_dir():
                self.path = self.path / "backbone.pth"
            state, config = _state_dict(_load(self.path), self.path)
            run_config = _run_config(self.path)
            if run_config:
                config = {**run_config, **config}
                self.resize = "bilinear-aa"
            arch, width, input_size, num_features = _infer_arch(state, self.path)
            if isinstance(config.get("input_size"), int):
                input_size = int(config["input_size"])
            if spec["arch"] and spec["arch"] != arch:
                raise CheckpointError(self.path, f"holds an IResNet {arch}, not the {spec['arch']} the spec names")
            self.arch = arch
            self.model = get_model(arch, num_features=num_features, input_size=input_size, width=width)
            try:
                self.model.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
                raise CheckpointError(self.path, f"does not fit IResNet {arch}: {' '.join(lines[1:3])[:240]}") from None
            self._weights = None
            if not is_standard(arch, width, input_size):
                self.description = f"IResNet {arch} (non-standard: width {width}, input {input_size})"
        self.model.eval()
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        side = self.model.input_size
        self.input_size = (side, side)
        self.dim = self.model.num_features

    # ------------------------------------------------------------------ identity of the space

    def weights_id(self) -> str:
        if self._weights is None:
            assert self.path is not None
            self._weights = weights_id(self.path)
        return self._weights

    def cache_key(self) -> str:
        # The path is left out on purpose: the same file copied elsewhere is the same space.
        tta = "flip" if self.flip else "noflip"
        return f"iresnet-{self.arch}-{self.weights_id()}-{tta}-{self.resize}{self.input_size[0]}"

    # ------------------------------------------------------------------ embedding

    def _tensor(self, images: np.ndarray):
        """uint8 (N, H, W, 3) -> float (N, 3, S, S) in [-1, 1] on the model's device."""
        import cv2
        import torch

        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise UsageError(f"iresnet expects (N, H, W, 3) RGB images, got shape {images.shape}")
        s = self.input_size[0]
        if images.shape[1:3] != (s, s):
            if self.resize == "bilinear-aa":
                from fsbench.train.data import resize_uint8

                images = resize_uint8(np.ascontiguousarray(images), s)  # what FR training did
            else:
                images = np.stack([cv2.resize(im, (s, s), interpolation=cv2.INTER_AREA) for im in images])
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        x = x.permute(0, 3, 1, 2).float().div_(255).sub_(0.5).div_(0.5)  # (N, 3, S, S)
        return x

    def embed(self, images: np.ndarray) -> np.ndarray:
        import torch

        outs = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                x = self._tensor(images[start : start + self.batch_size])
                e = self.model(x)
                if self.flip:
                    e = e + self.model(torch.flip(x, dims=[3]))
                outs.append(torch.nn.functional.normalize(e.float(), dim=1).cpu().numpy())
        if not outs:
            return np.empty((0, self.dim), np.float32)
        return np.concatenate(outs).astype(np.float32)

    def serfiq(
        self, images: np.ndarray, *, m: int = 100, p: float = 0.5, seed: int = 0, ids: np.ndarray | None = None
    ) -> np.ndarray:
        """SER-FIQ score per image (Terhörst et al. 2020), float64 (N,).

        The dropout masks of image i are drawn from a generator seeded by (seed, ids[i]), so
        a score does not depend on batching or order. q = 2 / (1 + exp(mean_{a<b} ||x_a - x_b||))
        over the m L2-normalised stochastic embeddings; raw q, without the later sigmoid.
        """
        import torch

        ids = np.arange(len(images)) if ids is None else np.asarray(ids)
        scores = np.empty(len(images), dtype=np.float64)
        iu = torch.triu_indices(m, m, 1)
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                flat = self.model.forward_features(self._tensor(images[start : start + self.batch_size]))
                for k in range(len(flat)):
                    state = np.random.SeedSequence([int(seed), int(ids[start + k])]).generate_state(1)[0]
                    gen = torch.Generator(device="cpu").manual_seed(int(state))
                    keep = torch.rand((m, flat.shape[1]), generator=gen) >= p  # (m, F)
                    x = flat[k].unsqueeze(0) * keep.to(flat.device, flat.dtype) / (1.0 - p)
                    e = torch.nn.functional.normalize(self.model.features(self.model.fc(x)).double(), dim=1)
                    d = torch.cdist(e, e)[iu[0], iu[1]]  # (m (m - 1) / 2,)
                    scores[start + k] = float(2.0 / (1.0 + torch.exp(d.mean())))
        return scores


@fsbench.hookimpl
def fsbench_register_embedders():
    return [IResNetEmbedder]
