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

import bisect
import hashlib
import itertools
import math
from dataclasses import dataclass, fields, replace

import numpy as np

from fsbench.options import opt

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
    `profile_p` a near-profile yaw in [profile_min, yaw_max] instead. The ranges are what
    the renderer means by each value (a face turned past 90 degrees shows no face; a
    probability above 1 is not one); `-o yaw_sd=...` is checked against them by
    `fsbench.options`. Pairs are (low, high) and drawn uniformly between.
    """

    yaw_sd: float = opt(22.0, "sd of yaw, degrees", min=0)
    yaw_max: float = opt(65.0, "largest |yaw|, degrees", min=0, max=90)
    profile_p: float = opt(0.15, "probability of a near-profile yaw", min=0, max=1)
    profile_min: float = opt(45.0, "smallest |yaw| of a near-profile image, degrees", min=0, max=90)
    pitch_sd: float = opt(8.0, "sd of pitch, degrees", min=0)
    pitch_max: float = opt(20.0, "largest |pitch|, degrees", min=0, max=90)
    roll_sd: float = opt(6.0, "sd of roll, degrees", min=0)
    roll_max: float = opt(15.0, "largest |roll|, degrees", min=0, max=180)
    smile_p: float = opt(0.5, "probability of a smile", min=0, max=1)
    open_mouth_p: float = opt(0.25, "probability of an open mouth", min=0, max=1)
    blink_p: float = opt(0.1, "probability of (half-)closed eyes", min=0, max=1)
    light_ambient: tuple[float, float] = opt((0.35, 0.75), "ambient share of the light, low,high", min=0, max=1)
    light_elevation_max: float = opt(50.0, "largest light elevation, degrees", min=0, max=90)
    light_azimuth_max: float = opt(80.0, "largest |light azimuth|, degrees", min=0, max=180)
    light_colour: float = opt(0.12, "warm/cool tint amplitude", min=0, max=1)
    exposure: tuple[float, float] = opt((0.75, 1.2), "exposure factor, low,high", min=0, min_exclusive=True)
    glasses_p: float = opt(0.18, "probability of glasses", min=0, max=1)
    sunglasses_p: float = opt(0.25, "share of glasses that are dark", min=0, max=1)
    hat_p: float = opt(0.12, "probability of a hat", min=0, max=1)
    blur_p: float = opt(0.3, "probability of blur", min=0, max=1)
    blur_max: float = opt(1.4, "largest Gaussian blur sigma, pixels at 112 px (scaled with size)", min=0)
    noise_max: float = opt(0.05, "largest sensor noise sd, fraction of full range", min=0, max=1)
    jpeg_quality: tuple[int, int] = opt((35, 95), "JPEG quality, low,high", min=1, max=100)
    shift_max: float = opt(0.05, "crop jitter, fraction of the half-width", min=0, max=1)
    scale_range: tuple[float, float] = opt((0.92, 1.08), "crop scale, low,high", min=0, min_exclusive=True)
    age_sd: float = opt(6.0, "sd of age around the identity's base age, years", min=0)
    hair_shift_sd: float = opt(0.03, "how much a hairline/fringe varies between images", min=0)

    def __post_init__(self) -> None:
        """(low, high) pairs in order; `fsbench.options.parse` reports the ValueError as one line."""
        for name in ("light_ambient", "exposure", "jpeg_quality", "scale_range"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name}={low},{high}: low must not exceed high")


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


class _Draws:
    """Uniform draws in [0, 1) from an integer key, handed out in order.

    The stream is SHAKE-128 of the key, read as 53-bit fractions: counter-based like a numpy
    Generator seeded with the key (the same key gives the same draws in any process), but a
    few microseconds to start where seeding a Generator takes ~20 us, and the ~60 draws of a
    nuisance come from one block instead of one generator call each. Call sites draw a fixed
    number of values whichever branch they take (`maybe`, `choice`), so the draws of one
    field never depend on the value of another. Asking for more than `n` draws raises
    StopIteration.
    """

    __slots__ = ("_next",)

    def __init__(self, key: tuple[int, ...], n: int) -> None:
        words = np.frombuffer(hashlib.shake_128(",".join(map(str, key)).encode()).digest(8 * n), "<u8")
        self._next = iter(((words >> _SHIFT).astype(np.float64) * _EPS53).tolist()).__next__

    def u(self, lo: float = 0.0, hi: float = 1.0) -> float:
        """Uniform in [lo, hi)."""
        return lo + (hi - lo) * self._next()

    def normal(self, sd: float = 1.0) -> float:
        """N(0, sd) by Box-Muller (two uniforms)."""
        a, b = self._next(), self._next()
        return sd * math.sqrt(-2.0 * math.log(1.0 - a)) * math.cos(_TAU * b)

    def tnormal(self, sd: float, lim: float) -> float:
        """N(0, sd) clipped to [-lim, lim]."""
        return min(max(self.normal(sd), -lim), lim)

    def clipped(self, mean: float, sd: float) -> float:
        """N(mean, sd) clipped to [0, 1]."""
        return min(max(mean + self.normal(sd), 0.0), 1.0)

    def maybe(self, p: float, lo: float, hi: float) -> float:
        """With probability p uniform in [lo, hi), else 0.0 (two draws either way)."""
        on = self._next() < p
        value = self.u(lo, hi)
        return value if on else 0.0

    def sign(self) -> int:
        return 1 if self._next() < 0.5 else -1

    def integer(self, lo: int, hi: int) -> int:
        """Uniform integer in [lo, hi)."""
        return lo + int(self._next() * (hi - lo))

    def choice(self, cum_p: tuple[float, ...]) -> int:
        """Index k with probability p[k], given the cumulative probabilities."""
        return min(bisect.bisect_right(cum_p, self._next()), len(cum_p) - 1)


_EPS53 = 2.0 ** -53
_SHIFT = np.uint64(11)  # 64 random bits -> the 53 a double holds
_TAU = 2.0 * math.pi


def _cumulative(p: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(itertools.accumulate(p))


def _mix(palette: tuple[tuple[float, float, float], ...], t: float) -> list[float]:
    """Piecewise-linear colour along a palette, t in [0, 1]."""
    pos = t * (len(palette) - 1)
    i = min(int(pos), len(palette) - 2)
    f = pos - i
    return [a * (1 - f) + b * f for a, b in zip(palette[i], palette[i + 1])]


_SKIN = ((0.97, 0.84, 0.74), (0.90, 0.71, 0.58), (0.78, 0.56, 0.42),
         (0.60, 0.40, 0.28), (0.42, 0.27, 0.18), (0.28, 0.18, 0.12))
_HAIR = ((0.05, 0.045, 0.04), (0.16, 0.10, 0.06), (0.32, 0.20, 0.11), (0.50, 0.30, 0.15),
         (0.62, 0.28, 0.12), (0.72, 0.55, 0.32), (0.88, 0.76, 0.52))
_IRIS = ((0.20, 0.12, 0.06), (0.38, 0.24, 0.10), (0.42, 0.40, 0.18),
         (0.25, 0.42, 0.30), (0.30, 0.45, 0.62), (0.50, 0.58, 0.66))
_STYLE_P = _cumulative((0.06, 0.10, 0.30, 0.16, 0.20, 0.08, 0.10))  # BALD .. CURLY
_BEARD_P = _cumulative((0.62, 0.12, 0.08, 0.08, 0.10))  # BEARDS
_MOLES_P = _cumulative((0.45, 0.3, 0.15, 0.1))  # 0 .. 3 moles
_MAX_MOLES = len(_MOLES_P) - 1


def draw_identity(seed: int, index: int) -> Identity:
    """The identity with this index in this world; a pure function of (seed, index)."""
    d = _Draws((seed, index, 7919), 80)
    u = d.u
    skin_t = u()
    skin = [c + d.normal(0.025) for c in _mix(_SKIN, skin_t ** 1.2)]
    hair_t, hair_gain = u(), u(0.85, 1.15)
    grey, grey_level = u() < 0.08, u(0.45, 0.8)  # 8% grey-haired
    hair = [grey_level] * 3 if grey else [c * hair_gain for c in _mix(_HAIR, hair_t ** 1.6)]
    iris_t, iris_gain = u(), u(0.8, 1.15)
    iris = [c * iris_gain for c in _mix(_IRIS, iris_t)]
    lip_red = u(0, 1.5)
    lip = [skin[0] * 0.92 + 0.08 * lip_red, skin[1] * 0.62, skin[2] * 0.62 + 0.02 * lip_red]
    style = d.choice(_STYLE_P)
    beard = d.choice(_BEARD_P)
    if style == TIED:
        beard = 0
    n_moles = d.choice(_MOLES_P)
    moles = [(u(-0.5, 0.5), u(-0.3, 0.7), u(0.012, 0.025)) for _ in range(_MAX_MOLES)][:n_moles]
    head_w = u(0.68, 0.80)
    volume_t = u()
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
        skin_r=skin[0], skin_g=skin[1], skin_b=skin[2],
        blush=u(0.0, 0.12),
        skin_noise=u(0.02, 0.08),
        noise_u=u(), noise_v=u(),
        lip_r=lip[0], lip_g=lip[1], lip_b=lip[2],
        iris_r=iris[0], iris_g=iris[1], iris_b=iris[2],
        hair_r=hair[0], hair_g=hair[1], hair_b=hair[2],
        brow_dark=u(0.5, 0.95),
        hair_style=style,
        hair_volume=0.04 + 0.06 * volume_t if style != CURLY else 0.14 + 0.10 * volume_t,
        hairline=u(-0.70, -0.52),
        hair_recede=u(0.0, 0.35),
        widow_peak=u(0.0, 0.08),
        fringe=d.maybe(0.35, 0.0, 0.3),
        part=u(-0.5, 0.5),
        beard=beard,
        beard_density=u(0.4, 1.0),
        mole_n=n_moles,
        mole_x=tuple(m[0] for m in moles),
        mole_y=tuple(m[1] for m in moles),
        mole_r=tuple(m[2] for m in moles),
        earrings=u() < 0.2,
        base_age=u(18, 65),
    )


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
    d = _Draws((seed, identity, image, PROTOCOLS[protocol], 104729), 64)
    u, maybe = d.u, d.maybe
    k = 0.5 if frontal else 1.0
    # yaw: near-profile (when forced, or with probability profile_p), else a clipped normal
    pick, profile_yaw, normal_yaw = u(), u(s.profile_min, s.yaw_max) * d.sign(), d.tnormal(s.yaw_sd * k, s.yaw_max * k)
    yaw = profile_yaw if profile or (not frontal and pick < s.profile_p) else normal_yaw
    wears_glasses, dark_glasses = u() < s.glasses_p * k, u() < s.sunglasses_p
    bg_r, bg_g, bg_b = u(0.05, 0.95), u(0.05, 0.95), u(0.05, 0.95)
    lo, hi = s.jpeg_quality
    return Nuisance(
        yaw=yaw,
        pitch=d.tnormal(s.pitch_sd * k, s.pitch_max),
        roll=d.tnormal(s.roll_sd * k, s.roll_max),
        smile=maybe(s.smile_p, 0.3, 1.0),
        mouth_open=maybe(s.open_mouth_p, 0.2, 1.0),
        blink=maybe(s.blink_p * k, 0.6, 1.0),
        gaze=u(-0.3, 0.3),
        brow_raise=maybe(0.3, -0.3, 1.0),
        light_azimuth=u(-1, 1) * s.light_azimuth_max * k,
        light_elevation=u(-0.3, 1) * s.light_elevation_max,
        light_ambient=u(*s.light_ambient) if not frontal else u(0.5, s.light_ambient[1]),
        light_tint=u(-1, 1) * s.light_colour,
        exposure=u(*s.exposure),
        background=d.integer(0, 3),
        bg_r=bg_r, bg_g=bg_g, bg_b=bg_b,
        bg2_r=d.clipped(bg_r, 0.25), bg2_g=d.clipped(bg_g, 0.25), bg2_b=d.clipped(bg_b, 0.25),
        cloth_r=u(0.05, 0.9), cloth_g=u(0.05, 0.9), cloth_b=u(0.05, 0.9),
        glasses=(2 if dark_glasses else 1) if wears_glasses else 0,
        glasses_round=u(),
        glasses_dark=u(0.3, 0.9),
        hat=int(u() < s.hat_p * k),
        hat_r=u(0.05, 0.9), hat_g=u(0.05, 0.9), hat_b=u(0.05, 0.9),
        hat_line=u(-0.62, -0.38),
        blur=maybe(s.blur_p * k, 0.3, s.blur_max),
        noise=u(0, s.noise_max * k),
        jpeg_quality=d.integer(lo, hi + 1) if not frontal else d.integer((lo + hi) // 2, hi + 1),
        shift_x=u(-1, 1) * s.shift_max * k,
        shift_y=u(-1, 1) * s.shift_max * k,
        scale=u(*s.scale_range),
        age_delta=d.normal(s.age_sd * k) + age_offset,
        hair_shift=d.normal(s.hair_shift_sd),
        noise_u=u(),
        noise_v=u(),
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
