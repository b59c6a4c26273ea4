"""Pseudo-fakes on aligned face crops: SBI (DeepfakeBench variant, methods.md §5.6) and DiffFake
local-artefact masks (§5.7), plus a cross-identity blend.

Everything works on one aligned RGB uint8 crop (S, S, 3) and its 68 landmarks (crop pixel
coordinates, dlib order; see :mod:`trainer.landmarks`). Every random range lives in
:class:`PseudoFakeConfig`; all randomness comes from the ``numpy.random.Generator`` passed in, so a
fixed seed gives a fixed output.

Recipe (one call of :func:`make_pseudo_fake`):

1. mask from landmarks: SBI hull types ``dfl_full`` / ``components`` / ``extended`` / ``facehull``
   (``facehull`` with an approximate forehead row with p = ``p_forehead``); DiffFake draws from
   full (one of the four hulls, 68 points) / ``eyes`` / ``mouth`` / ``lower_head`` with weights
   ``difffake_mask_weights``.
2. source = copy of the crop; with p = ``p_transform_source`` the source gets the source transform,
   otherwise the target (which is also the returned real): RGB shift (p ``p_rgb_shift``), HSV shift,
   brightness/contrast, then one of down-scale (x2 / x4) or sharpen.
3. affine jitter of source + mask (translate x ±3 %, y ±1.5 %, scale 0.95-1/0.95), elastic
   deformation of the mask (alpha 50, sigma 7).
4. dynamic blend mask: random resize (192-256 px), Gaussian blur k1 + keep the interior (erosion),
   Gaussian blur k2 with sigma 5-45, normalise, resize back, times a blend ratio from
   {.25, .5, .75, 1, 1, 1}; fake = mask * source + (1 - mask) * target.
5. optional post-blend augmentation with identical parameters for real and fake (RGB shift, HSV,
   brightness/contrast, JPEG quality 40-100).

Outside the final mask (mask == 0) the fake equals the real exactly before step 5.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import cv2
import numpy as np

from trainer.landmarks import BROWS, JAW

HULL_TYPES = ("dfl_full", "components", "extended", "facehull")
DIFFFAKE_LOCAL = ("eyes", "mouth", "lower_head")
MASK_TYPES = HULL_TYPES + DIFFFAKE_LOCAL
Kind = Literal["sbi", "difffake"]


@dataclass
class PseudoFakeConfig:
    """All random ranges of the pseudo-fake recipe (defaults = the published SBI / DiffFake values)."""

    # --- masks (§5.2, §5.7)
    hull_types: tuple[str, ...] = HULL_TYPES
    p_forehead: float = 0.75  # SBI uses 81 points (with forehead) with p 0.75; we add an approximate forehead
    forehead_shift: float = 0.6  # forehead row = brows moved up by this x brow-to-nose-tip distance (§5.8)
    difffake_mask_weights: dict[str, float] = field(
        default_factory=lambda: {"full": 3.0, "eyes": 1.0, "mouth": 1.0, "lower_head": 1.0})
    # --- source/target transform (§5.3)
    p_transform_source: float = 0.5  # else the target (= returned real) is transformed
    p_rgb_shift: float = 0.3
    rgb_shift: float = 20.0  # per channel, uniform ±, uint8 units
    hsv_shift: tuple[float, float, float] = (0.3, 0.3, 0.3)  # ± (hue in OpenCV 0-180 units, sat, val in 0-255 units)
    brightness: float = 0.1  # ± fraction of 255 added
    contrast: float = 0.1  # ± gain - 1
    downscale_factors: tuple[int, ...] = (2, 4)
    p_downscale: float = 0.5  # else sharpen
    sharpen_alpha: tuple[float, float] = (0.2, 0.5)
    sharpen_lightness: tuple[float, float] = (0.5, 1.0)
    # --- geometry (§5.3)
    translate_x: float = 0.03  # ± fraction of width
    translate_y: float = 0.015  # ± fraction of height
    scale: tuple[float, float] = (0.95, 1 / 0.95)
    elastic_alpha: float = 50.0
    elastic_sigma: float = 7.0
    # --- dynamic blend (§5.4)
    blend_resize: tuple[int, int] = (192, 256)  # inclusive range of the intermediate mask side
    blur_kernel_1: tuple[int, int] = (5, 25)  # odd kernel range, first (eroding) blur
    blur_kernel_2: tuple[int, int] = (5, 25)  # odd kernel range, second blur
    blur_sigma_2: tuple[int, int] = (5, 45)  # integer sigma range, second blur
    blend_ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)
    # --- post-blend augmentation (§5.5), identical parameters for real and fake
    post_augment: bool = True
    post_p_rgb_shift: float = 0.3
    post_rgb_shift: float = 20.0
    post_p_hsv: float = 0.3
    post_hsv_shift: tuple[float, float, float] = (0.3, 0.3, 0.3)
    post_p_brightness_contrast: float = 0.3
    post_brightness: float = 0.3
    post_contrast: float = 0.3
    post_p_jpeg: float = 0.5
    post_jpeg_quality: tuple[int, int] = (40, 100)
    # --- cross-identity blend
    color_transfer: bool = True  # match source colour statistics to the target inside the mask (LAB mean/std)

    @classmethod
    def difffake(cls, **overrides) -> PseudoFakeConfig:
        """DiffFake preset: same ranges, no post-blend augmentation (§5.7 step 6)."""
        return replace(cls(post_augment=False), **overrides)

    def to_dict(self) -> dict:
        return asdict(self)

    def __post_init__(self) -> None:
        for h in self.hull_types:
            if h not in HULL_TYPES:
                raise ValueError(f"unknown hull type {h!r} (expected one of {HULL_TYPES})")
        for k in self.difffake_mask_weights:
            if k not in ("full", *DIFFFAKE_LOCAL):
                raise ValueError(f"unknown DiffFake mask type {k!r} (expected full, eyes, mouth, lower_head)")
        for name in ("blur_kernel_1", "blur_kernel_2"):
            lo, hi = getattr(self, name)
            if lo < 1 or lo % 2 == 0 or hi < lo:
                raise ValueError(f"{name} must be an odd range (lo <= hi), got {(lo, hi)}")


# ------------------------------------------------------------------------------------------------ #
# masks


def forehead_points(lm: np.ndarray, shift: float = 0.6) -> np.ndarray:
    """Approximate 81-point forehead row: brow points moved up by ``shift`` x the brow-to-nose-tip distance."""
    brows = lm[BROWS]
    d = float(np.linalg.norm(brows.mean(0) - lm[30]))
    up = lm[27] - lm[30]  # nose-tip -> nose-bridge direction (follows in-plane rotation)
    up = up / max(np.linalg.norm(up), 1e-6)
    return brows + up * shift * d


def _hull(mask: np.ndarray, pts: np.ndarray, aa: bool = False) -> None:
    hull = cv2.convexHull(np.round(pts).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 255, lineType=cv2.LINE_AA if aa else cv2.LINE_8)


def _extended_brows(lm: np.ndarray) -> np.ndarray:
    lm = lm.copy()
    q_r = lm[36] + 0.25 * (lm[0] - lm[36])
    q_l = lm[45] + 0.25 * (lm[16] - lm[45])
    ref_r = np.stack([q_r, lm[36], lm[37], lm[38], lm[39]])  # pairs with brow 17..21 (outer -> inner)
    ref_l = np.stack([lm[42], lm[43], lm[44], lm[45], q_l])  # pairs with brow 22..26 (inner -> outer)
    lm[17:22] = lm[17:22] + 0.5 * (lm[17:22] - ref_r)
    lm[22:27] = lm[22:27] + 0.5 * (lm[22:27] - ref_l)
    return lm


def landmark_mask(shape: tuple[int, int], lm68: np.ndarray, mask_type: str, forehead: bool = False,
                  forehead_shift: float = 0.6) -> np.ndarray:
    """Binary-ish float32 mask (H, W) in [0, 1] of ``mask_type`` (one of :data:`MASK_TYPES`)."""
    lm = np.asarray(lm68, np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {lm.shape}")
    m = np.zeros(shape, np.uint8)
    idx = lambda *groups: np.concatenate([lm[list(g)] for g in groups])  # noqa: E731
    if mask_type == "dfl_full":
        _hull(m, idx(JAW, range(48, 68), [0, 8, 16]))
        _hull(m, idx(range(27, 31), [33]))
        _hull(m, idx(BROWS, [0, 27, 16, 33]))
    elif mask_type in ("components", "extended"):
        src = _extended_brows(lm) if mask_type == "extended" else lm
        L = lambda *groups: np.concatenate([src[list(g)] for g in groups])  # noqa: E731
        parts = [L(range(0, 9), [17]), L(range(8, 17), [26])]
        if mask_type == "components":
            parts += [L(range(17, 20), [8]), L(range(24, 27), [8])]
        parts += [L(range(19, 25), [8]), L(range(17, 22), [27], range(31, 36), [8]),
                  L(range(22, 27), [27], range(31, 36), [8]), L(range(27, 31), range(31, 36))]
        for p in parts:
            _hull(m, p)
    elif mask_type == "facehull":
        pts = np.concatenate([lm, forehead_points(lm, forehead_shift)]) if forehead else lm
        _hull(m, pts, aa=True)
    elif mask_type == "eyes":
        _hull(m, idx(BROWS, range(36, 48), [0, 1, 14, 15]))
    elif mask_type == "mouth":
        _hull(m, idx(range(48, 68), range(4, 13), range(31, 36)))
    elif mask_type == "lower_head":
        _hull(m, idx(range(1, 16), [29, 30]))
    else:
        raise ValueError(f"unknown mask type {mask_type!r} (expected one of {MASK_TYPES})")
    return m.astype(np.float32) / 255.0


def choose_mask_type(kind: Kind, rng: np.random.Generator, cfg: PseudoFakeConfig) -> str:
    """Draw a mask type: SBI = uniform over ``cfg.hull_types``; DiffFake = weighted full/eyes/mouth/lower_head."""
    if kind == "sbi":
        return str(rng.choice(list(cfg.hull_types)))
    if kind == "difffake":
        names = list(cfg.difffake_mask_weights)
        w = np.asarray([cfg.difffake_mask_weights[n] for n in names], np.float64)
        pick = str(rng.choice(names, p=w / w.sum()))
        return str(rng.choice(list(cfg.hull_types))) if pick == "full" else pick
    raise ValueError(f"unknown pseudo-fake kind {kind!r} (expected 'sbi' or 'difffake')")


# ------------------------------------------------------------------------------------------------ #
# colour / sharpness transforms (uint8 RGB in, uint8 RGB out)


def rgb_shift(img: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    return np.clip(img.astype(np.float32) + np.asarray(shifts, np.float32), 0, 255).astype(np.uint8)


def hsv_shift(img: np.ndarray, dh: float, ds: float, dv: float) -> np.ndarray:
    """Shift hue (OpenCV 0-180 units, cyclic), saturation and value (0-255 units) via look-up tables."""
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    x = np.arange(256, dtype=np.float32)
    lut_h = np.mod(x + dh, 180).astype(np.uint8)
    lut_s = np.clip(x + ds, 0, 255).astype(np.uint8)
    lut_v = np.clip(x + dv, 0, 255).astype(np.uint8)
    h, s, v = cv2.split(hsv)
    hsv = cv2.merge([cv2.LUT(h, lut_h), cv2.LUT(s, lut_s), cv2.LUT(v, lut_v)])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def brightness_contrast(img: np.ndarray, brightness: float, contrast: float) -> np.ndarray:
    """``img * (1 + contrast) + brightness * 255``, clipped."""
    return np.clip(img.astype(np.float32) * (1.0 + contrast) + brightness * 255.0, 0, 255).astype(np.uint8)


def downscale(img: np.ndarray, factor: int) -> np.ndarray:
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_NEAREST)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def sharpen(img: np.ndarray, alpha: float, lightness: float) -> np.ndarray:
    ident = np.zeros((3, 3), np.float32)
    ident[1, 1] = 1
    effect = -np.ones((3, 3), np.float32)
    effect[1, 1] = 8 + lightness
    k = (1 - alpha) * ident + alpha * effect
    return np.clip(cv2.filter2D(img.astype(np.float32), -1, k), 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def source_transform(img: np.ndarray, rng: np.random.Generator, cfg: PseudoFakeConfig) -> np.ndarray:
    """§5.3 colour block (RGB shift w.p., HSV, brightness/contrast) then down-scale or sharpen."""
    if rng.random() < cfg.p_rgb_shift:
        img = rgb_shift(img, rng.uniform(-cfg.rgb_shift, cfg.rgb_shift, 3))
    dh, ds, dv = (rng.uniform(-lim, lim) for lim in cfg.hsv_shift)
    img = hsv_shift(img, dh, ds, dv)
    img = brightness_contrast(img, rng.uniform(-cfg.brightness, cfg.brightness), rng.uniform(-cfg.contrast, cfg.contrast))
    if rng.random() < cfg.p_downscale:
        img = downscale(img, int(rng.choice(list(cfg.downscale_factors))))
    else:
        img = sharpen(img, rng.uniform(*cfg.sharpen_alpha), rng.uniform(*cfg.sharpen_lightness))
    return img


def post_augment(real: np.ndarray, fake: np.ndarray, rng: np.random.Generator,
                 cfg: PseudoFakeConfig) -> tuple[np.ndarray, np.ndarray]:
    """§5.5: the same randomly drawn augmentation applied to real and fake."""
    ops = []
    if rng.random() < cfg.post_p_rgb_shift:
        s = rng.uniform(-cfg.post_rgb_shift, cfg.post_rgb_shift, 3)
        ops.append(lambda x, s=s: rgb_shift(x, s))
    if rng.random() < cfg.post_p_hsv:
        d = [rng.uniform(-lim, lim) for lim in cfg.post_hsv_shift]
        ops.append(lambda x, d=d: hsv_shift(x, *d))
    if rng.random() < cfg.post_p_brightness_contrast:
        b, c = rng.uniform(-cfg.post_brightness, cfg.post_brightness), rng.uniform(-cfg.post_contrast, cfg.post_contrast)
        ops.append(lambda x, b=b, c=c: brightness_contrast(x, b, c))
    if rng.random() < cfg.post_p_jpeg:
        q = int(rng.integers(cfg.post_jpeg_quality[0], cfg.post_jpeg_quality[1] + 1))
        ops.append(lambda x, q=q: jpeg(x, q))
    for op in ops:
        real, fake = op(real), op(fake)
    return real, fake


# ------------------------------------------------------------------------------------------------ #
# geometry and blending


def random_affine(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                  cfg: PseudoFakeConfig) -> tuple[np.ndarray, np.ndarray]:
    """Same random translate/scale (about the centre) for the source image and its mask."""
    h, w = mask.shape[:2]
    s = rng.uniform(*cfg.scale)
    tx = rng.uniform(-cfg.translate_x, cfg.translate_x) * w
    ty = rng.uniform(-cfg.translate_y, cfg.translate_y) * h
    cx, cy = w / 2.0, h / 2.0
    m = np.array([[s, 0, (1 - s) * cx + tx], [0, s, (1 - s) * cy + ty]], np.float64)
    img = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    mask = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return img, mask


def elastic(mask: np.ndarray, rng: np.random.Generator, alpha: float, sigma: float) -> np.ndarray:
    """Elastic deformation: smoothed uniform displacement fields (Simard et al.), no affine part."""
    h, w = mask.shape[:2]
    dx = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sigma) * alpha
    dy = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sigma) * alpha
    x, y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(mask, x + dx, y + dy, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _odd(rng: np.random.Generator, lo: int, hi: int) -> int:
    return int(rng.choice(np.arange(lo, hi + 1, 2)))


def blend_mask(mask: np.ndarray, rng: np.random.Generator, cfg: PseudoFakeConfig) -> np.ndarray:
    """§5.4 steps 1-4: resize, eroding blur, soft blur, normalise, resize back, times a blend ratio."""
    h, w = mask.shape[:2]
    sw, sh = (int(rng.integers(cfg.blend_resize[0], cfg.blend_resize[1] + 1)) for _ in range(2))
    m = cv2.resize(mask.astype(np.float32), (sw, sh), interpolation=cv2.INTER_LINEAR)
    k1 = _odd(rng, *cfg.blur_kernel_1)
    b = cv2.GaussianBlur(m, (k1, k1), 0)
    if b.max() <= 0:
        return np.zeros((h, w), np.float32)
    b = b / b.max()
    b[b < 1] = 0  # keep the interior only (erosion)
    if b.max() <= 0:  # tiny mask: nothing survives the erosion, fall back to the un-eroded mask
        b = m / max(float(m.max()), 1e-6)
    k2 = _odd(rng, *cfg.blur_kernel_2)
    b = cv2.GaussianBlur(b, (k2, k2), float(rng.integers(cfg.blur_sigma_2[0], cfg.blur_sigma_2[1] + 1)))
    b = b / max(float(b.max()), 1e-6)
    b = cv2.resize(b, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(b, 0, 1) * float(rng.choice(list(cfg.blend_ratios)))


def blend(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``mask * source + (1 - mask) * target`` (mask (H, W) float in [0, 1]); exact ``target`` where mask == 0."""
    m = mask[..., None].astype(np.float32)
    out = m * source.astype(np.float32) + (1.0 - m) * target.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _check(crop: np.ndarray, lm: np.ndarray) -> np.ndarray:
    if crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 crop (H, W, 3), got {crop.dtype} {crop.shape}")
    lm = np.asarray(lm, np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {lm.shape}")
    return lm


@dataclass
class PseudoFake:
    """Everything one pseudo-fake is made of (uint8 RGB images of the crop's size).

    real / fake: the pair as returned by :func:`make_pseudo_fake` / :func:`blend_faces` (post-blend
    augmented when ``cfg.post_augment``). mask: float32 (H, W) final blend mask in [0, 1].
    source / target: the two images blended into the fake, *before* post-blend augmentation
    (``fake_clean = mask * source + (1 - mask) * target``): SBI = the transformed, affine-jittered copy and
    the (possibly colour-transformed) frame; cross-identity blend = the donor face as warped onto the
    target (colour-matched, jittered) and the target crop. fake_clean: the un-augmented fake. The real's
    un-augmented version is ``target``. These are DiffusionFake's reconstruction images (methods.md §3.2).
    """

    real: np.ndarray
    fake: np.ndarray
    mask: np.ndarray
    source: np.ndarray
    target: np.ndarray
    fake_clean: np.ndarray

    def triple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.real, self.fake, self.mask


def make_pseudo_fake(crop: np.ndarray, landmarks68: np.ndarray, rng: np.random.Generator,
                     cfg: PseudoFakeConfig | None = None, kind: Kind = "sbi",
                     mask_type: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Self-blended pseudo-fake of one aligned crop.

    Returns ``(real, fake, mask)``: uint8 (H, W, 3) real (the target, possibly colour-transformed),
    uint8 fake, float32 (H, W) final blend mask in [0, 1]. ``mask_type`` forces a mask (one of
    :data:`MASK_TYPES`) instead of drawing it for ``kind``. :func:`make_pseudo_fake_parts` (same draws,
    same output) also gives the source and target images.
    """
    return make_pseudo_fake_parts(crop, landmarks68, rng, cfg, kind, mask_type).triple()


def make_pseudo_fake_parts(crop: np.ndarray, landmarks68: np.ndarray, rng: np.random.Generator,
                           cfg: PseudoFakeConfig | None = None, kind: Kind = "sbi",
                           mask_type: str | None = None) -> PseudoFake:
    """:func:`make_pseudo_fake` returning a :class:`PseudoFake` (with source / target / fake_clean)."""
    cfg = cfg or PseudoFakeConfig()
    lm = _check(crop, landmarks68)
    mt = mask_type or choose_mask_type(kind, rng, cfg)
    forehead = mt == "facehull" and kind == "sbi" and rng.random() < cfg.p_forehead
    hull = landmark_mask(crop.shape[:2], lm, mt, forehead=forehead, forehead_shift=cfg.forehead_shift)
    target = crop.copy()
    source = crop.copy()
    if rng.random() < cfg.p_transform_source:
        source = source_transform(source, rng, cfg)
    else:
        target = source_transform(target, rng, cfg)
    source, hull = random_affine(source, hull, rng, cfg)
    hull = elastic(hull, rng, cfg.elastic_alpha, cfg.elastic_sigma)
    mask = blend_mask(hull, rng, cfg)
    fake_clean = blend(source, target, mask)
    real, fake = target, fake_clean
    if cfg.post_augment:
        real, fake = post_augment(real, fake, rng, cfg)
    return PseudoFake(real, fake, mask.astype(np.float32), source, target, fake_clean)


def color_transfer(source: np.ndarray, target: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Reinhard colour transfer in LAB: give ``source`` the target's mean/std inside ``region`` (> 0.5)."""
    sel = region > 0.5
    if sel.sum() < 16:
        return source
    s = cv2.cvtColor(source, cv2.COLOR_RGB2LAB).astype(np.float32)
    t = cv2.cvtColor(target, cv2.COLOR_RGB2LAB).astype(np.float32)
    sm, ss = s[sel].mean(0), s[sel].std(0) + 1e-3
    tm, ts = t[sel].mean(0), t[sel].std(0) + 1e-3
    out = (s - sm) / ss * ts + tm
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def blend_faces(target_crop: np.ndarray, source_crop: np.ndarray, landmarks68: np.ndarray,
                rng: np.random.Generator, cfg: PseudoFakeConfig | None = None,
                source_landmarks68: np.ndarray | None = None,
                mask_type: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Face-swap-like fake: the face of ``source_crop`` (another identity) blended into ``target_crop``.

    Both crops come from the same alignment, so the faces roughly coincide; with
    ``source_landmarks68`` the source is first warped onto the target's landmarks (similarity fit).
    The mask comes from the target's ``landmarks68`` (hull type drawn as for SBI), with the same
    jitter, elastic deformation and dynamic blend as :func:`make_pseudo_fake`; the source is
    colour-matched to the target inside the mask when ``cfg.color_transfer``.
    Returns ``(real, fake, mask)`` with real = target_crop (post-augmented like the fake if enabled);
    :func:`blend_faces_parts` (same draws, same output) also gives the source and target images.
    """
    return blend_faces_parts(target_crop, source_crop, landmarks68, rng, cfg, source_landmarks68, mask_type).triple()


def blend_faces_parts(target_crop: np.ndarray, source_crop: np.ndarray, landmarks68: np.ndarray,
                      rng: np.random.Generator, cfg: PseudoFakeConfig | None = None,
                      source_landmarks68: np.ndarray | None = None, mask_type: str | None = None) -> PseudoFake:
    """:func:`blend_faces` returning a :class:`PseudoFake` (source = the donor face as blended in)."""
    cfg = cfg or PseudoFakeConfig()
    lm = _check(target_crop, landmarks68)
    if source_crop.shape != target_crop.shape or source_crop.dtype != np.uint8:
        raise ValueError(f"source crop {source_crop.dtype} {source_crop.shape} must match target {target_crop.shape} uint8")
    source = source_crop
    if source_landmarks68 is not None:
        from detectors.faces.align import similarity_transform

        m = similarity_transform(np.asarray(source_landmarks68, np.float64), lm)
        h, w = target_crop.shape[:2]
        source = cv2.warpAffine(source, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    mt = mask_type or choose_mask_type("sbi", rng, cfg)
    hull = landmark_mask(target_crop.shape[:2], lm, mt, forehead=False)
    if cfg.color_transfer:
        source = color_transfer(source, target_crop, hull)
    source, hull = random_affine(source, hull, rng, cfg)
    hull = elastic(hull, rng, cfg.elastic_alpha, cfg.elastic_sigma)
    mask = blend_mask(hull, rng, cfg)
    fake_clean = blend(source, target_crop, mask)
    real, fake = target_crop.copy(), fake_clean
    if cfg.post_augment:
        real, fake = post_augment(real, fake, rng, cfg)
    return PseudoFake(real, fake, mask.astype(np.float32), source, target_crop.copy(), fake_clean)
