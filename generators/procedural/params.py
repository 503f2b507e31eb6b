"""Identity and nuisance parameters of the procedural face world.

Everything is drawn from a counter-based key, never from shared random state:

- identity ``(seed, identity index)`` -> `Identity` (face geometry, colours, hair...);
- image ``(seed, identity index, image index, protocol)`` -> `Nuisance` (pose, expression,
  lighting, occlusion, degradations).

So any single image can be regenerated, in any order and in any process. The nuisance
strengths live in one dataclass, `Strengths`, so the difficulty of the world can be tuned
in one place (the face-recognition issue calibrates it against its verification accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

# Held-out (benchmark) identities start here; training identities must stay below it.
HELD_OUT_BASE = 10_000_000

# Hair styles (Identity.hair_style)
BALD, BUZZ, SHORT, MEDIUM, LONG, TIED, CURLY = range(7)
HAIR_STYLES = ("bald", "buzz", "short", "medium", "long", "tied", "curly")
BEARDS = ("none", "stubble", "moustache", "goatee", "full")
BACKGROUNDS = ("flat", "gradient", "blobs")

# Protocol codes mixed into the image key: the same (id, image) under another protocol is
# another draw, so benchmark images never coincide with training images.
PROTOCOLS = {"train": 0, "lfw_like": 1, "cfp_fp_like": 2, "agedb_like": 3}


@dataclass(frozen=True)
class Strengths:
    """How strong each nuisance is. Angles in degrees, probabilities in [0, 1].

    Training images draw yaw from N(0, yaw_sd) clipped to +-yaw_max, and with probability
    `profile_p` a near-profile yaw in [profile_min, yaw_max] instead.
    """

    yaw_sd: float = 22.0
    yaw_max: float = 65.0
    profile_p: float = 0.15
    profile_min: float = 45.0
    pitch_sd: float = 8.0
    pitch_max: float = 20.0
    roll_sd: float = 6.0
    roll_max: float = 15.0
    smile_p: float = 0.5
    open_mouth_p: float = 0.25
    blink_p: float = 0.1
    light_ambient: tuple[float, float] = (0.35, 0.75)  # ambient share of the light
    light_elevation_max: float = 50.0
    light_azimuth_max: float = 80.0
    light_colour: float = 0.12  # warm/cool tint amplitude
    exposure: tuple[float, float] = (0.75, 1.2)
    glasses_p: float = 0.18
    sunglasses_p: float = 0.25  # share of glasses that are dark
    hat_p: float = 0.12
    blur_p: float = 0.3
    blur_max: float = 1.4  # Gaussian sigma in pixels at 112 px (scaled with size)
    noise_max: float = 0.05  # sensor noise sd, fraction of full range
    jpeg_quality: tuple[int, int] = (35, 95)
    shift_max: float = 0.05  # crop jitter, fraction of the half-width
    scale_range: tuple[float, float] = (0.92, 1.08)
    age_sd: float = 6.0  # years around the identity's base age
    hair_shift_sd: float = 0.03  # how much a hairline/fringe varies between images


DEFAULT_STRENGTHS = Strengths()


@dataclass(frozen=True)
class Identity:
    """One synthetic person: everything that stays fixed across their images."""

    index: int
    # geometry (head units: the head ellipsoid is about 0.74 wide, 1 tall)
    head_w: float
    head_h: float
    jaw_w: float
    jaw_h: float
    chin_y: float
    eye_y: float
    eye_dx: float
    eye_w: float
    eye_h: float
    eye_tilt: float
    brow_gap: float
    brow_thick: float
    brow_arch: float
    brow_len: float
    brow_tilt: float
    nose_len: float
    nose_w: float
    nose_depth: float
    mouth_y: float
    mouth_w: float
    lip_up: float
    lip_lo: float
    ear_y: float
    ear_size: float
    # colours (linear-ish RGB in [0, 1])
    skin_r: float
    skin_g: float
    skin_b: float
    blush: float
    skin_noise: float
    noise_u: float  # offset into the noise bank: the skin's fixed pattern
    noise_v: float
    lip_r: float
    lip_g: float
    lip_b: float
    iris_r: float
    iris_g: float
    iris_b: float
    hair_r: float
    hair_g: float
    hair_b: float
    brow_dark: float
    # hair
    hair_style: int
    hair_volume: float
    hairline: float
    hair_recede: float
    widow_peak: float
    fringe: float
    part: float
    # extras
    beard: int
    beard_density: float
    mole_n: int
    mole_x: tuple[float, ...]
    mole_y: tuple[float, ...]
    mole_r: tuple[float, ...]
    earrings: bool
    base_age: float

    def vector(self) -> np.ndarray:
        """All parameters as one float vector (categoricals one-hot): the identity code."""
        out: list[float] = []
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "index":
                continue
            if f.name == "hair_style":
                out.extend(float(v == k) for k in range(len(HAIR_STYLES)))
            elif f.name == "beard":
                out.extend(float(v == k) for k in range(len(BEARDS)))
            elif isinstance(v, tuple):
                out.extend(list(v) + [0.0] * (3 - len(v)))
            else:
                out.append(float(v))
        return np.asarray(out, dtype=np.float64)


@dataclass(frozen=True)
class Nuisance:
    """One image's variation; every field goes into the manifest."""

    yaw: float
    pitch: float
    roll: float
    smile: float
    mouth_open: float
    blink: float
    gaze: float
    brow_raise: float
    light_azimuth: float
    light_elevation: float
    light_ambient: float
    light_tint: float
    exposure: float
    background: int
    bg_r: float
    bg_g: float
    bg_b: float
    bg2_r: float
    bg2_g: float
    bg2_b: float
    cloth_r: float
    cloth_g: float
    cloth_b: float
    glasses: int  # 0 none, 1 clear, 2 sunglasses
    glasses_round: float
    glasses_dark: float
    hat: int
    hat_r: float
    hat_g: float
    hat_b: float
    hat_line: float
    blur: float
    noise: float
    jpeg_quality: int
    shift_x: float
    shift_y: float
    scale: float
    age_delta: float  # years added to the identity's base age
    hair_shift: float
    noise_u: float
    noise_v: float

    def manifest(self) -> dict[str, float | int | str]:
        row = {name: getattr(self, name) for name in _NUISANCE_FIELDS}  # asdict's deep copy: 10x slower
        row["background"] = BACKGROUNDS[self.background]
        return row


_NUISANCE_FIELDS = tuple(f.name for f in fields(Nuisance))


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) for k in key])))


def _mix(palette: np.ndarray, t: float) -> np.ndarray:
    """Piecewise-linear colour along a palette, t in [0, 1]."""
    pos = t * (len(palette) - 1)
    i = min(int(pos), len(palette) - 2)
    f = pos - i
    return palette[i] * (1 - f) + palette[i + 1] * f


_SKIN = np.array([[0.97, 0.84, 0.74], [0.90, 0.71, 0.58], [0.78, 0.56, 0.42],
                  [0.60, 0.40, 0.28], [0.42, 0.27, 0.18], [0.28, 0.18, 0.12]])
_HAIR = np.array([[0.05, 0.045, 0.04], [0.16, 0.10, 0.06], [0.32, 0.20, 0.11], [0.50, 0.30, 0.15],
                  [0.62, 0.28, 0.12], [0.72, 0.55, 0.32], [0.88, 0.76, 0.52]])
_IRIS = np.array([[0.20, 0.12, 0.06], [0.38, 0.24, 0.10], [0.42, 0.40, 0.18],
                  [0.25, 0.42, 0.30], [0.30, 0.45, 0.62], [0.50, 0.58, 0.66]])


def draw_identity(seed: int, index: int) -> Identity:
    """The identity with this index in this world; a pure function of (seed, index)."""
    r = _rng(seed, index, 7919)
    u = r.uniform
    skin = _mix(_SKIN, u() ** 1.2) + r.normal(0, 0.025, 3)
    hair_t = u()
    hair = _mix(_HAIR, hair_t ** 1.6) * u(0.85, 1.15)
    if u() < 0.08:  # grey-haired
        hair = np.full(3, u(0.45, 0.8))
    iris = _mix(_IRIS, u()) * u(0.8, 1.15)
    lip = skin * np.array([0.92, 0.62, 0.62]) + np.array([0.08, 0.0, 0.02]) * u(0, 1.5)
    style = int(r.choice(7, p=[0.06, 0.10, 0.30, 0.16, 0.20, 0.08, 0.10]))
    beard = int(r.choice(5, p=[0.62, 0.12, 0.08, 0.08, 0.10])) if style != TIED else 0
    n_moles = int(r.choice(4, p=[0.45, 0.3, 0.15, 0.1]))
    head_w = u(0.68, 0.80)
    return Identity(
        index=index,
        head_w=head_w,
        head_h=u(0.94, 1.04),
        jaw_w=head_w * u(0.62, 0.86),
        jaw_h=u(0.42, 0.56),
        chin_y=u(0.94, 1.04),
        eye_y=u(-0.08, 0.02),
        eye_dx=u(0.27, 0.36),
        eye_w=u(0.11, 0.15),
        eye_h=u(0.045, 0.075),
        eye_tilt=u(-0.12, 0.16),
        brow_gap=u(0.09, 0.16),
        brow_thick=u(0.022, 0.05),
        brow_arch=u(0.0, 0.06),
        brow_len=u(0.14, 0.20),
        brow_tilt=u(-0.1, 0.12),
        nose_len=u(0.22, 0.34),
        nose_w=u(0.075, 0.125),
        nose_depth=u(0.12, 0.22),
        mouth_y=u(0.50, 0.62),
        mouth_w=u(0.15, 0.23),
        lip_up=u(0.025, 0.055),
        lip_lo=u(0.03, 0.07),
        ear_y=u(0.02, 0.16),
        ear_size=u(0.17, 0.24),
        skin_r=float(skin[0]), skin_g=float(skin[1]), skin_b=float(skin[2]),
        blush=u(0.0, 0.12),
        skin_noise=u(0.02, 0.08),
        noise_u=u(), noise_v=u(),
        lip_r=float(lip[0]), lip_g=float(lip[1]), lip_b=float(lip[2]),
        iris_r=float(iris[0]), iris_g=float(iris[1]), iris_b=float(iris[2]),
        hair_r=float(hair[0]), hair_g=float(hair[1]), hair_b=float(hair[2]),
        brow_dark=u(0.5, 0.95),
        hair_style=style,
        hair_volume=u(0.04, 0.10) if style != CURLY else u(0.14, 0.24),
        hairline=u(-0.70, -0.52),
        hair_recede=u(0.0, 0.35),
        widow_peak=u(0.0, 0.08),
        fringe=u(0.0, 0.3) if u() < 0.35 else 0.0,
        part=u(-0.5, 0.5),
        beard=beard,
        beard_density=u(0.4, 1.0),
        mole_n=n_moles,
        mole_x=tuple(float(v) for v in u(-0.5, 0.5, n_moles)),
        mole_y=tuple(float(v) for v in u(-0.3, 0.7, n_moles)),
        mole_r=tuple(float(v) for v in u(0.012, 0.025, n_moles)),
        earrings=bool(u() < 0.2),
        base_age=u(18, 65),
    )


def _tnormal(r: np.random.Generator, sd: float, lim: float) -> float:
    return float(np.clip(r.normal(0.0, sd), -lim, lim))


def draw_nuisance(
    seed: int,
    identity: int,
    image: int,
    protocol: str = "train",
    strengths: Strengths = DEFAULT_STRENGTHS,
    *,
    frontal: bool = False,
    profile: bool = False,
    age_offset: float = 0.0,
) -> Nuisance:
    """The variation of one image; a pure function of its arguments.

    `frontal` narrows pose, lighting and occlusion (LFW-like images, the frontal half of
    CFP-FP-like pairs); `profile` forces |yaw| in [profile_min, yaw_max]; `age_offset`
    moves the age (AgeDB-like pairs).
    """
    s = strengths
    r = _rng(seed, identity, image, PROTOCOLS[protocol], 104729)
    u = r.uniform
    k = 0.5 if frontal else 1.0
    if profile:
        yaw = float(u(s.profile_min, s.yaw_max)) * (1 if u() < 0.5 else -1)
    elif not frontal and u() < s.profile_p:
        yaw = float(u(s.profile_min, s.yaw_max)) * (1 if u() < 0.5 else -1)
    else:
        yaw = _tnormal(r, s.yaw_sd * k, s.yaw_max * k)
    pitch = _tnormal(r, s.pitch_sd * k, s.pitch_max)
    roll = _tnormal(r, s.roll_sd * k, s.roll_max)
    smile = float(u(0.3, 1.0)) if u() < s.smile_p else 0.0
    mouth_open = float(u(0.2, 1.0)) if u() < s.open_mouth_p else 0.0
    blink = float(u(0.6, 1.0)) if u() < s.blink_p * k else 0.0
    bg_kind = int(r.integers(0, 3))
    bg = u(0.05, 0.95, 3)
    bg2 = np.clip(bg + r.normal(0, 0.25, 3), 0, 1)
    cloth = u(0.05, 0.9, 3)
    glasses = 0
    if u() < s.glasses_p * k:
        glasses = 2 if u() < s.sunglasses_p else 1
    hat = int(u() < s.hat_p * k)
    hat_col = u(0.05, 0.9, 3)
    blur = float(u(0.3, s.blur_max)) if u() < s.blur_p * k else 0.0
    lo, hi = s.jpeg_quality
    return Nuisance(
        yaw=yaw, pitch=pitch, roll=roll,
        smile=smile, mouth_open=mouth_open, blink=blink,
        gaze=float(u(-0.3, 0.3)), brow_raise=float(u(-0.3, 1.0)) * float(u() < 0.3),
        light_azimuth=float(u(-1, 1) * s.light_azimuth_max * k),
        light_elevation=float(u(-0.3, 1) * s.light_elevation_max),
        light_ambient=float(u(*s.light_ambient)) if not frontal else float(u(0.5, s.light_ambient[1])),
        light_tint=float(u(-1, 1) * s.light_colour),
        exposure=float(u(*s.exposure)),
        background=bg_kind,
        bg_r=float(bg[0]), bg_g=float(bg[1]), bg_b=float(bg[2]),
        bg2_r=float(bg2[0]), bg2_g=float(bg2[1]), bg2_b=float(bg2[2]),
        cloth_r=float(cloth[0]), cloth_g=float(cloth[1]), cloth_b=float(cloth[2]),
        glasses=glasses, glasses_round=float(u()), glasses_dark=float(u(0.3, 0.9)),
        hat=hat, hat_r=float(hat_col[0]), hat_g=float(hat_col[1]), hat_b=float(hat_col[2]),
        hat_line=float(u(-0.62, -0.38)),
        blur=blur,
        noise=float(u(0, s.noise_max * k)),
        jpeg_quality=int(r.integers(lo, hi + 1)) if not frontal else int(r.integers((lo + hi) // 2, hi + 1)),
        shift_x=float(u(-1, 1) * s.shift_max * k),
        shift_y=float(u(-1, 1) * s.shift_max * k),
        scale=float(u(*s.scale_range)),
        age_delta=float(r.normal(0, s.age_sd * k) + age_offset),
        hair_shift=float(r.normal(0, s.hair_shift_sd)),
        noise_u=float(u()), noise_v=float(u()),
    )


def scaled(strengths: Strengths, factor: float) -> Strengths:
    """All pose/degradation strengths times `factor` (a quick difficulty knob)."""
    return replace(
        strengths,
        yaw_sd=strengths.yaw_sd * factor,
        pitch_sd=strengths.pitch_sd * factor,
        roll_sd=strengths.roll_sd * factor,
        blur_max=strengths.blur_max * factor,
        noise_max=strengths.noise_max * factor,
    )
