"""Named sizes of SegTex's two networks: `paper` (256 px, Tables 1-2, SPADE's ngf 64) and `tiny`.

`paper` follows the paper where it gives a number and SPADE's defaults where it does not (the
paper calls its generator "a refined offshoot of the original SPADE model"). `tiny` is the
32 px CPU scale of REFERENCE "Sizes and costs": small encoders, SPADE ngf 16, three upsampling
blocks, about 1.1 M parameters for the texture network.

Parameter counts (exact, this code; tests/test_segtex_nets.py asserts them) and FLOPs a forward
(2 x multiply-adds of convolutions, batch 1):

    paper  segmap generator 5.82 M (63.8 GFLOP), its discriminator 2.78 M (7.8 GFLOP)
           texture network 96.87 M (320.7 GFLOP) = SPADE generator 92.39 M (282.4 GFLOP)
           + six encoders, fusion, mouth transform and fusion, blending 4.47 M
           multiscale discriminator 5.57 M (10.0 GFLOP)
    tiny   segmap generator 0.097 M (0.022 GFLOP), its discriminator 0.18 M
           texture network 1.07 M (0.285 GFLOP; SPADE 0.99 M), multiscale discriminator 0.36 M

REFERENCE gives 92.1 M for SPADE at ngf 64; ours is 0.3 % above it because our SPADE layers read
the 19-class one-hot map (18 SPADE layers x 16 more input channels x 128 x 9 = 0.33 M); with
label_nc=3 (the paper's "three classes per channel", a colour-coded map) it is 92.06 M and
272.7 GFLOP (REFERENCE: about 273). The discriminator, SPADE's layer for layer, holds 5.57 M
(5.53 M with label_nc=3) against REFERENCE's "5.5 M".
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SIZES", "SegmapSize", "SegTexSize", "TextureSize"]

CELEBAMASK_CLASSES = 19  # CelebAMask-HQ: background + 18 face parts


@dataclass(frozen=True)
class SegmapSize:
    """The segmentation-map generator (Sec. III.A, Table 1) and its PatchGAN discriminator."""

    image_size: int
    base: int  # hair and mouth encoders' output channels; the skin encoder gives 2 * base (Table 1: 256)
    classes: int = CELEBAMASK_CLASSES
    in_channels: int = 3  # each segment image is RGB (Table 1)
    ndf: int = 64  # discriminator width
    d_layers: int = 4  # pix2pix's 70 x 70 PatchGAN: 64 -> 128 -> 256 stride 2, 512 stride 1, then 1 channel

    def __post_init__(self) -> None:
        if self.image_size % 4:
            raise ValueError(f"segmap image_size {self.image_size} is not divisible by 4 (two stride-2 encoders)")
        if self.base % 2:
            raise ValueError(f"segmap base {self.base} must be even (the encoders' hidden layer is base // 2)")


@dataclass(frozen=True)
class TextureSize:
    """The texture infusion network (Sec. III.B, Table 2), its SPADE generator and discriminator."""

    image_size: int
    enc_width: int  # every encoder's output channels (Table 2: 256); its hidden layer has half
    ngf: int  # SPADE's base width (64 in SPADE and at paper size)
    spade_mults: tuple[int, ...]  # block widths in ngf: head block first, then one block per upsampling
    spade_middle: int  # SPADE's G_middle blocks at the head's width after the first upsampling (2; 0 = none)
    spade_hidden: int  # SPADE's shared conv width (128 at ngf 64: we keep 2 * ngf)
    label_nc: int = CELEBAMASK_CLASSES  # channels of the map: the one-hot (19) or a colour-coded map (3)
    fuse_channels: int = 3  # fusion, mouth fusion and blending outputs (Table 2: 3)
    spade_norm: str = "batch"  # SPADE's parameter-free norm: "batch" (SPADE's default) or "instance"
    spectral: bool = True  # spectral norm on the residual convs and the discriminators' (SPADE's default)
    ndf: int = 64
    d_layers: int = 4  # SPADE's n_layers_D: 64 -> 128 -> 256 stride 2, 512 stride 1, then 1 channel
    num_d: int = 2

    @property
    def n_up(self) -> int:
        """Nearest x2 upsamplings in the generator: one per block after the head, one before G_middle."""
        return len(self.spade_mults) - 1 + (1 if self.spade_middle else 0)

    @property
    def start(self) -> int:
        """The generator's first resolution (SPADE: 256 / 2^5 = 8)."""
        return self.image_size // 2**self.n_up

    def __post_init__(self) -> None:
        if self.image_size % 4:
            raise ValueError(f"texture image_size {self.image_size} is not divisible by 4 (two stride-2 encoders)")
        if self.image_size % 2**self.n_up:
            raise ValueError(f"texture image_size {self.image_size} is not divisible by 2^{self.n_up} "
                             f"(spade_mults {self.spade_mults}, spade_middle {self.spade_middle})")
        if self.spade_norm not in ("batch", "instance"):
            raise ValueError(f"spade_norm {self.spade_norm!r}: choose 'batch' or 'instance'")


@dataclass(frozen=True)
class SegTexSize:
    segmap: SegmapSize
    texture: TextureSize


SIZES: dict[str, SegTexSize] = {
    # Table 1 / Table 2 at 256 px; SPADE's "normal" generator: 8 x 8 head, 2 middle blocks, 16-8-4-2-1 x ngf
    "paper": SegTexSize(
        segmap=SegmapSize(image_size=256, base=256, ndf=64),
        texture=TextureSize(image_size=256, enc_width=256, ngf=64, spade_mults=(16, 8, 4, 2, 1), spade_middle=2,
                            spade_hidden=128, ndf=64),
    ),
    # 32 px on CPU: 4 x 4 head at 8 ngf, three upsampling blocks (8 -> 4 -> 2 -> 1 x ngf), no middle blocks
    "tiny": SegTexSize(
        segmap=SegmapSize(image_size=32, base=32, ndf=16),
        texture=TextureSize(image_size=32, enc_width=32, ngf=16, spade_mults=(8, 4, 2, 1), spade_middle=0,
                            spade_hidden=32, ndf=16),
    ),
}
