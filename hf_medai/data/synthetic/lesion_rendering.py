"""How a synthetic dermoscopy image looks and how it is drawn: the appearance of each lesion and each view of it
(planned in `hf_medai.data.synthetic.lesions`), and the numpy renderer that paints a batch of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]  # = hf_medai.data.lesion_formats.HAM10000_CLASSES
# Skin under a dermoscope, types I..VI (RGB), and how lesions look on it: pigment darkens with the skin
# (DARKEN) and the lesion blends toward the skin (BLEND), i.e. less contrast as the type rises.
SKIN_RGB = np.array(
    [[245, 214, 198], [232, 190, 165], [210, 160, 125], [172, 122, 88], [122, 84, 60], [80, 54, 40]], np.float32
)
DARKEN = np.array([1.0, 0.95, 0.85, 0.70, 0.52, 0.38], np.float32)
HAZE_LEVELS = (3.0, 9.0)  # amplitude range of the additive glare, grey levels
BLEND = np.array([0.0, 0.08, 0.20, 0.38, 0.60, 0.75], np.float32)

PALETTE = {
    "dark_brown": (88, 52, 32),
    "mid_brown": (125, 80, 50),
    "light_brown": (165, 115, 75),
    "black": (35, 28, 28),
    "blue_grey": (100, 110, 130),
    "red": (170, 75, 70),
    "waxy": (172, 132, 92),
    "pink": (215, 145, 145),
    "scaly_red": (195, 105, 90),
    "df_ring": (140, 95, 65),
    "white": (238, 226, 216),
    "vessel": (150, 22, 34),
    "vasc_red": (175, 35, 55),
    "vasc_purple": (115, 40, 90),
    "hair": (32, 24, 20),
}
N_HARMONICS = 12  # border = radius(angle) as a short Fourier series: low orders asymmetry, high orders ragged
N_COLOURS = 4
N_WAVES = 6  # skin texture = a sum of random plane waves
COLOUR_GRID, TEXTURE_GRID = 7, 20  # lesion fields = value noise on a grid in lesion coordinates (moves with it)
FIELD_EXTENT = 1.4  # the grids span +-1.4 lesion radii
N_SEGMENTS = 6  # vessels of bcc, hairs
N_LOBULES = 6


@dataclass
class LesionLooks:
    """One entry per lesion: who it is and how it looks (shape, colours, texture)."""

    cls: np.ndarray  # index into CLASSES
    n_images: np.ndarray
    number: np.ndarray  # HAM_<number>
    fitzpatrick: np.ndarray  # 1..6
    age: np.ndarray  # float, NaN = missing
    sex: list[str]
    site: list[str]
    dx_type: list[str]
    skin: np.ndarray  # (L, 3) RGB
    radius: np.ndarray  # in units of half the image's shorter side
    harm_amp: np.ndarray  # (L, K)
    harm_phase: np.ndarray  # (L, K)
    softness: np.ndarray  # edge width, fraction of the radius
    opacity: np.ndarray
    colours: np.ndarray  # (L, C, 3), already darkened for the skin type
    n_colours: np.ndarray
    centre_shade: np.ndarray  # darker (>0) centre
    texture: np.ndarray  # amplitude of the pigment-network-like texture
    colour_field: np.ndarray  # (L, C, G, G) value noise deciding which colour is where
    texture_field: np.ndarray  # (L, G, G) value noise, pigment-network-like mottling
    segments: np.ndarray  # (L, S, 4) bcc vessels, lesion coordinates relative to the radius
    n_segments: np.ndarray
    lobules: np.ndarray  # (L, B, 3) vasc: x, y, radius relative to the lesion radius
    lobule_purple: np.ndarray  # (L, B) bool
    n_lobules: np.ndarray
    rotation: np.ndarray


@dataclass
class ImageViews:
    """One entry per image: which lesion, and this view's pose, lighting and hairs."""

    lesion: np.ndarray
    rotation: np.ndarray
    shift: np.ndarray  # (N, 2)
    light: np.ndarray  # (N, 3) per-channel gain
    gradient: np.ndarray  # (N, 2) illumination slope
    vignette: np.ndarray  # (N, 2) radius, strength
    hairs: np.ndarray  # (N, S, 4) segments in image coordinates
    n_hairs: np.ndarray
    hair_width: np.ndarray
    bg_k: np.ndarray  # (N, W, 2) skin texture waves
    bg_phase: np.ndarray  # (N, W)
    haze_k: np.ndarray  # (N, W, 2) additive glare / uneven light waves
    haze_phase: np.ndarray  # (N, W)
    haze: np.ndarray  # (N,) its amplitude in grey levels


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _waves(k: np.ndarray, phase: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Smooth noise: plane waves. k (B, W, 2), phase (B, W), u/v broadcastable to (B, H, W) -> ~[-1, 1]."""
    total = np.zeros(np.broadcast_shapes((k.shape[0], 1, 1), u.shape), np.float32)
    for w in range(k.shape[1]):
        total += np.cos(k[:, w, 0, None, None] * u + k[:, w, 1, None, None] * v + phase[:, w, None, None])
    return total * np.float32(np.sqrt(2.0 / k.shape[1]))


def _value_noise(grid: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Smooth-stepped bilinear value noise; grid (B, G, G) spans +-FIELD_EXTENT; u/v (B, H, W) -> (B, H, W)."""
    G = grid.shape[-1]
    scale = (G - 1) / (2 * FIELD_EXTENT)
    gx = np.clip((u + FIELD_EXTENT) * scale, 0, G - 1.001)
    gy = np.clip((v + FIELD_EXTENT) * scale, 0, G - 1.001)
    ix, iy = gx.astype(np.intp), gy.astype(np.intp)
    fx, fy = gx - ix, gy - iy
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    b = np.arange(len(grid))[:, None, None]
    top = grid[b, iy, ix] * (1 - fx) + grid[b, iy, ix + 1] * fx
    bottom = grid[b, iy + 1, ix] * (1 - fx) + grid[b, iy + 1, ix + 1] * fx
    return top * (1 - fy) + bottom * fy


def _segment_distance(seg: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Distance from each pixel to a segment; seg (B, 4) as x0, y0, x1, y1; u/v (B, H, W)."""
    x0, y0, x1, y1 = (seg[:, i, None, None] for i in range(4))
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((u - x0) * dx + (v - y0) * dy) / np.maximum(dx * dx + dy * dy, 1e-6), 0, 1)
    return np.hypot(u - x0 - t * dx, v - y0 - t * dy)


def _per(a: np.ndarray) -> np.ndarray:
    """(B,) -> (B, 1, 1): one value per image, broadcast over its pixels."""
    return np.asarray(a, np.float32)[:, None, None]


def render(les: LesionLooks, img: ImageViews, ids: np.ndarray, H: int, W: int, rng: np.random.Generator) -> np.ndarray:
    """Render images `ids` -> uint8 (B, H, W, 3). Coordinates are in units of half the shorter side.

    Class-specific layers (colour regions, vessels, lobules, hairs, ...) are computed only for the images
    that have them, so the cost follows the class mix.
    """
    unit = min(H, W) / 2.0
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    x = ((xs - (W - 1) / 2) / unit)[None]
    y = ((ys - (H - 1) / 2) / unit)[None]
    li = img.lesion[ids]
    B = len(ids)
    name = np.array(CLASSES)[les.cls[li]]
    skin = les.skin[li]
    radius = les.radius[li]

    # Skin: base colour, smooth texture, pixel noise.
    bg = skin[:, None, None, :] * (1 + 0.04 * _waves(img.bg_k[ids], img.bg_phase[ids], x, y))[..., None]
    bg += 3.0 * rng.standard_normal((B, H, W, 3), dtype=np.float32)

    # Lesion-local coordinates: rotate and shift the view; un/vn in lesion radii, so patterns move with it.
    rot = img.rotation[ids]
    dx, dy = x - _per(img.shift[ids, 0]), y - _per(img.shift[ids, 1])
    c, s = _per(np.cos(rot)), _per(np.sin(rot))
    u, v = c * dx + s * dy, -s * dx + c * dy
    rho = np.hypot(u, v)
    un, vn = u / _per(radius), v / _per(radius)

    # Border (A and B of ABCD): radius(angle) = R (1 + sum_k a_k cos(k angle + phase_k)), by the angle-addition
    # recurrence rather than one cos per harmonic.
    cos1, sin1 = u / np.maximum(rho, 1e-6), v / np.maximum(rho, 1e-6)
    ck, sk = cos1, sin1
    edge = np.ones_like(rho)
    amp, phase = les.harm_amp[li], les.harm_phase[li]
    for k in range(N_HARMONICS):
        edge += _per(amp[:, k] * np.cos(phase[:, k])) * ck - _per(amp[:, k] * np.sin(phase[:, k])) * sk
        ck, sk = ck * cos1 - sk * sin1, sk * cos1 + ck * sin1
    edge *= _per(radius)
    mask = _sigmoid((edge - rho) / _per(les.softness[li] * radius))

    # Colour (C of ABCD): slot 0 everywhere, or soft regions of 2-4 colours from smooth random fields.
    colours = les.colours[li]
    colour = np.broadcast_to(colours[:, None, None, 0], (B, H, W, 3)).copy()
    multi = np.nonzero(les.n_colours[li] > 1)[0]
    if len(multi):
        fields = les.colour_field[li[multi]]
        logits = np.stack([_value_noise(fields[:, j], un[multi], vn[multi]) for j in range(N_COLOURS)], -1)
        logits += np.array([0.8, 0.0, -0.1, -0.2], np.float32)  # slot 0 dominates
        used = np.arange(N_COLOURS) < les.n_colours[li[multi], None]
        logits = np.where(used[:, None, None, :], logits, np.float32(-1e4))
        weight = np.exp((logits - logits.max(-1, keepdims=True)) * 3.0)
        weight /= weight.sum(-1, keepdims=True)
        colour[multi] = np.einsum("bhwc,bcr->bhwr", weight, colours[multi])
    texture = _value_noise(les.texture_field[li], un, vn)
    inside = np.clip(rho / np.maximum(edge, 1e-3), 0, 1)
    colour *= (1 + _per(les.texture[li]) * texture - _per(les.centre_shade[li]) * (1 - inside))[..., None]

    white = np.array(PALETTE["white"], np.float32)
    # akiec: rough, with pale scales; bkl: pale "milia-like" dots
    for cls_name, rough, threshold in (("akiec", 0.12, 1.7), ("bkl", 0.0, 2.4)):
        sel = np.nonzero(name == cls_name)[0]
        if len(sel):
            grain = rng.standard_normal((len(sel), H, W), dtype=np.float32)
            patch = colour[sel] * (1 + rough * grain)[..., None]
            colour[sel] = np.where((grain > threshold)[..., None], 0.5 * patch + 0.5 * white, patch)
    # df: a pale central patch inside a brown ring
    sel = np.nonzero(name == "df")[0]
    if len(sel):
        patch = 0.85 * _sigmoid((0.45 * edge[sel] - rho[sel]) / _per(0.1 * radius[sel]))[..., None]
        colour[sel] = colour[sel] * (1 - patch) + patch * colours[sel, None, None, 1]
    # vasc: the lesion is a cluster of red / purple lobules
    sel = np.nonzero(name == "vasc")[0]
    if len(sel):
        lob, n_lob, purple_of = les.lobules[li[sel]], les.n_lobules[li[sel]], les.lobule_purple[li[sel]]
        lob_mask = np.zeros_like(rho[sel])
        purple = np.zeros_like(lob_mask)
        for j in range(N_LOBULES):
            d = np.hypot(un[sel] - _per(lob[:, j, 0]), vn[sel] - _per(lob[:, j, 1]))
            m = _per(j < n_lob) * _sigmoid((_per(lob[:, j, 2]) - d) / np.float32(0.06))
            purple = np.where(m > lob_mask, _per(purple_of[:, j]), purple)
            lob_mask = np.maximum(lob_mask, m)
        mask[sel] = lob_mask
        colour[sel] = (
            colours[sel, None, None, 0] * (1 - purple[..., None]) + colours[sel, None, None, 1] * purple[..., None]
        )

    # Darker skin: the lesion blends toward the skin (less contrast).
    blend = BLEND[les.fitzpatrick[li] - 1][:, None]
    colour = (1 - blend[:, None, None]) * colour + blend[:, None, None] * skin[:, None, None, :]
    alpha = (mask * _per(les.opacity[li]))[..., None]
    out = bg * (1 - alpha) + colour * alpha

    # bcc: thin red vessels inside the lesion
    sel = np.nonzero(les.n_segments[li] > 0)[0]
    if len(sel):
        vessel = np.zeros_like(rho[sel])
        for j in range(N_SEGMENTS):
            d = _segment_distance(les.segments[li[sel], j], un[sel], vn[sel]) * _per(radius[sel]) * unit  # pixels
            vessel = np.maximum(vessel, _per(j < les.n_segments[li[sel]]) * np.exp(-((d / 0.8) ** 2)))
        rgb = np.array(PALETTE["vessel"], np.float32) * DARKEN[les.fitzpatrick[li[sel]] - 1][:, None]
        rgb = (1 - blend[sel]) * rgb + blend[sel] * skin[sel]
        a = (0.8 * vessel * mask[sel])[..., None]
        out[sel] = out[sel] * (1 - a) + a * rgb[:, None, None, :]

    # Hairs, in image coordinates.
    sel = np.nonzero(img.n_hairs[ids] > 0)[0]
    if len(sel):
        hair = np.zeros((len(sel), H, W), np.float32)
        for j in range(N_SEGMENTS):
            d = _segment_distance(img.hairs[ids[sel], j], x, y) * unit
            on = _per(j < img.n_hairs[ids[sel]])
            hair = np.maximum(hair, on * np.exp(-((d / _per(img.hair_width[ids[sel]])) ** 2)))
        a = (0.9 * hair)[..., None]
        out[sel] = out[sel] * (1 - a) + a * np.array(PALETTE["hair"], np.float32)

    # Lighting, glare (additive, so it hides more of a dark lesion on dark skin), the dermoscope's dark circular
    # vignette, sensor noise.
    gx, gy = _per(img.gradient[ids, 0]), _per(img.gradient[ids, 1])
    out *= img.light[ids][:, None, None, :] * (1 + gx * x + gy * y)[..., None]
    out += (_per(img.haze[ids]) * _waves(img.haze_k[ids], img.haze_phase[ids], x, y))[..., None]
    ring = _sigmoid((np.hypot(x, y) - _per(img.vignette[ids, 0])) / np.float32(0.06))
    out *= (1 - _per(img.vignette[ids, 1]) * ring)[..., None]
    out += 2.0 * rng.standard_normal(out.shape, dtype=np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
