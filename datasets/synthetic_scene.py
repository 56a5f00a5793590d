"""Scene parameters of the synthetic world: what each sample shows, drawn a block at a time.

Two key objects carry the RGB and depth cues of the class factors (:mod:`admn_ros.datasets.synthetic`
has the table), up to ``max_distractors`` small objects, a checkered floor, sometimes a back wall,
light, exposure, sensor noise and camera jitter are the nuisances. Everything is drawn as arrays
over the block's samples ``[B]`` and object slots ``[B, J]`` from one random stream, in a fixed
order, so the first k samples of a block never depend on k. :mod:`.synthetic_render` turns the
parameters into images.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

if TYPE_CHECKING:   # the config's module imports this one
    from admn_ros.datasets.synthetic import SyntheticConfig

_HUE_CENTRES_DEG, _HUE_SPREAD_DEG = np.array([0.0, 120.0, 240.0]), 25.0
# Stripe cycles across an object's bounding diameter, per texture (plain has none): a nuisance.
_STRIPE_CYCLES = np.array([[0.0, 0.0], [1.8, 2.6], [4.5, 6.0]])
SHAPES = ('sphere', 'box', 'cylinder', 'cone', 'torus', 'octahedron')   # template ids 0..5
FLOOR, _WALL = len(SHAPES), len(SHAPES) + 1   # template ids of the two planes
# Scene bounds (metres, camera frame: x right, y down, z forward).
_HALF_WIDTH, _TOP, _FAR = 8.0, -6.0, 12.0

# Secondary cues (the table in admn_ros.datasets.synthetic): each points the right way, but some
# samples show it only faintly (a small size ratio, a slight rise) against the nuisances, so a
# sensor alone is right less often than the three together.
_DEPTH_BANDS_M = np.array([[1.0, 1.45], [1.45, 1.9], [1.9, 2.35]])  # nearer key object, per family
_SIZE_RATIO = (1.15, 1.8)             # apparent radius of the nearer key object / the farther one
_RISE = (0.05, 0.22)                  # right key object above the left one (x image size), rising


def _rotations(rng, shape) -> np.ndarray:
    """Uniform random rotation matrices ``shape + (3, 3)`` from normalised Gaussian quaternions."""
    q = rng.standard_normal(shape + (4,))
    w, x, y, z = np.moveaxis(q / np.linalg.norm(q, axis=-1, keepdims=True), -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def _camera_jitter(rng, n: int, max_deg: float) -> np.ndarray:
    """Small yaw-pitch-roll rotations [n, 3, 3] (camera -> scene; y is down, so yaw is about y)."""
    angles = rng.uniform(-max_deg, max_deg, (3, n)).T
    return Rotation.from_euler('YXZ', angles, degrees=True).as_matrix()


def _hsv_colours(rng, shape, sat, val, hue=None) -> np.ndarray:
    """Random RGB colours ``shape + (3,)`` in [0, 1]: the given S / V ranges, hue uniform unless given."""
    hue = rng.uniform(0, 360, shape) if hue is None else np.asarray(hue) % 360
    hsv = np.stack([hue, rng.uniform(*sat, shape), rng.uniform(*val, shape)], -1)
    return cv2.cvtColor(hsv.reshape(-1, 1, 3).astype(np.float32), cv2.COLOR_HSV2RGB).reshape(hsv.shape).astype(float)


def _textures(rng, hue: np.ndarray):
    """Colours, stripe colours, cycles, axes and phases for objects of hue families ``hue`` (-1: any)."""
    shape = hue.shape
    jitter = rng.uniform(-_HUE_SPREAD_DEG, _HUE_SPREAD_DEG, shape)
    angle = np.where(hue >= 0, _HUE_CENTRES_DEG[np.maximum(hue, 0)] + jitter, rng.uniform(0, 360, shape))
    colour = _hsv_colours(rng, shape, (0.55, 0.95), (0.55, 0.95), hue=angle)
    texture = rng.integers(0, len(_STRIPE_CYCLES), shape)
    # Stripes differ in luminance from the base colour: towards white for dark colours, towards
    # black for light ones, so they stay visible under dim light.
    to_white = colour @ np.array([0.299, 0.587, 0.114]) < 0.5
    contrast = rng.uniform(0.6, 0.9, shape)
    stripe = colour + contrast[..., None] * (to_white[..., None].astype(float) - colour)
    lo, hi = _STRIPE_CYCLES[texture, 0], _STRIPE_CYCLES[texture, 1]
    cycles = lo + rng.random(shape) * (hi - lo)
    stripe = np.where((texture == 0)[..., None], colour, stripe)
    # Stripe normal in the image plane (random angle), so the bands always run across the
    # silhouette instead of facing the camera as invisible rings.
    angle = rng.uniform(0, np.pi, shape)
    axis = np.stack([np.cos(angle), np.sin(angle), np.zeros(shape)], -1)
    return colour, stripe, cycles, axis, rng.uniform(0, 2 * np.pi, shape)


def sample_scenes(rng, factors: np.ndarray, cfg: SyntheticConfig) -> Dict[str, np.ndarray]:
    """Scene parameters for one block (``factors`` [B, 3]: family, nearer, contour), as arrays over
    [B] samples and [B, J] object slots.

    Slots: 0 = left key object, 1 = right key object, 2.. = distractors, then floor and wall.
    """
    hue, nearer, contour = factors.T
    n, size, f = len(hue), cfg.image_size, cfg.focal_px
    centre_px = size / 2
    n_dis = cfg.max_distractors
    slots = 2 + n_dis + 2

    # Key objects: one per image half. The pair rises (right one higher) or falls with the contour,
    # and the nearer one looks larger: both secondary cues, faint for some samples by design.
    left_near = (nearer == 0)[:, None]
    u = np.stack([rng.uniform(0.2, 0.4, n), rng.uniform(0.6, 0.8, n)], 1) * size
    rise = np.where(contour == 0, 1.0, -1.0) * rng.uniform(*_RISE, n)
    v = (rng.uniform(0.36, 0.56, n)[:, None] + np.stack([rise, -rise], 1) / 2) * size
    r_far = rng.uniform(0.11, 0.16, n)
    r_near = r_far * rng.uniform(*_SIZE_RATIO, n)
    r_px = np.where(left_near, np.stack([r_near, r_far], 1), np.stack([r_far, r_near], 1)) * size
    gap = np.hypot(u[:, 1] - u[:, 0], v[:, 1] - v[:, 0]) - 0.04 * size
    r_px *= np.minimum(1.0, gap / r_px.sum(1))[:, None]   # silhouettes never touch: no occlusion cue
    # The key pair's distance band hints at the family. The nearer key object is the nearest
    # thing in view: distractors lie beyond it and the floor's nearest visible row beyond 2.3 m
    # (floor_y >= 1.6 m seen at <= 34 deg below the axis).
    band = _DEPTH_BANDS_M[hue]
    z_near = band[:, 0] + rng.random(n) * (band[:, 1] - band[:, 0])
    z_far = z_near + rng.uniform(1.2, 2.0, n)
    z = np.where(left_near, np.stack([z_near, z_far], 1), np.stack([z_far, z_near], 1))
    key_hue = np.stack([hue, hue], 1)

    # Distractors: small, any texture, first of 12 candidate spots clear of every silhouette so far.
    count = rng.integers(0, n_dis + 1, n)
    rd = rng.uniform(0.045, 0.08, (n, n_dis)) * size
    cand = rng.uniform(0.08, 0.92, (n, n_dis, 12, 2)) * size
    zd = z_near[:, None] + rng.uniform(0.4, 2.0, (n, n_dis))
    dis_hue = np.full((n, n_dis), -1)
    placed = np.zeros((n, n_dis), bool)
    spot = np.zeros((n, n_dis, 2))
    discs = [(u[:, k], v[:, k], r_px[:, k]) for k in range(2)]
    for d in range(n_dis):
        clear = np.ones((n, 12), bool)
        for a, b, r in discs:
            dist = np.hypot(cand[:, d, :, 0] - a[:, None], cand[:, d, :, 1] - b[:, None])
            clear &= dist > (r[:, None] + rd[:, d, None] + 0.02 * size)
        placed[:, d] = (d < count) & clear.any(1)
        spot[:, d] = cand[np.arange(n), d, clear.argmax(1)]
        # An unplaced distractor gets radius 0 so it blocks nothing.
        discs.append((spot[:, d, 0], spot[:, d, 1], np.where(placed[:, d], rd[:, d], 0.0)))

    obj_u = np.concatenate([u, spot[..., 0]], 1)
    obj_v = np.concatenate([v, spot[..., 1]], 1)
    obj_z = np.concatenate([z, zd], 1)
    obj_r = np.concatenate([r_px, rd], 1) * obj_z / f        # bounding radius in metres
    centre = np.stack([(obj_u - centre_px) / f * obj_z, (obj_v - centre_px) / f * obj_z, obj_z], -1)
    stretch = rng.uniform(0.65, 1.0, (n, 2 + n_dis, 3))
    scale = obj_r[..., None] * stretch / stretch.max(-1, keepdims=True)
    template = rng.integers(0, len(SHAPES), (n, 2 + n_dis))
    template[:, 2:][~placed] = -1
    colour, stripe, cycles, axis, phase = _textures(rng, np.concatenate([key_hue, dis_hue], 1))
    rotation = _rotations(rng, (n, 2 + n_dis))

    # Floor below every object (no contact, so image height is no depth cue); optional wall behind.
    present = template >= 0
    lowest = np.where(present, centre[..., 1] + obj_r, -np.inf).max(1)
    deepest = np.where(present, centre[..., 2] + obj_r, -np.inf).max(1)
    floor_y = np.maximum(rng.uniform(1.6, 2.2, n), lowest + 0.1)
    floor_a = np.clip(rng.uniform(0.25, 0.7, (n, 1)) + rng.uniform(-0.08, 0.08, (n, 3)), 0, 1)
    floor_b = floor_a * rng.uniform(0.55, 0.85, (n, 1))
    tile = rng.uniform(0.3, 0.8, n)
    has_wall = rng.random(n) < cfg.wall_probability
    wall_lo = np.maximum(4.0, deepest + 0.3)
    wall_z = wall_lo + rng.random(n) * np.maximum(6.0 - wall_lo, 0.0)
    wall_colour = np.clip(rng.uniform(0.3, 0.8, (n, 1)) + rng.uniform(-0.1, 0.1, (n, 3)), 0, 1)

    # Append the planes as two more slots (unit squares scaled by their half extents).
    zeros, eye = np.zeros(n), np.broadcast_to(np.eye(3), (n, 3, 3))
    floor_centre = np.stack([zeros, floor_y, np.full(n, _FAR / 2)], -1)
    wall_centre = np.stack([zeros, (_TOP + floor_y) / 2, wall_z], -1)
    floor_scale = np.tile([_HALF_WIDTH, 0.0, _FAR / 2], (n, 1))
    wall_scale = np.stack([np.full(n, _HALF_WIDTH), (floor_y - _TOP) / 2, zeros], -1)
    template = np.concatenate([template, np.full((n, 1), FLOOR), np.where(has_wall, _WALL, -1)[:, None]], 1)
    light = np.stack([rng.uniform(-1, 1, n), rng.uniform(-1, -0.2, n), rng.uniform(-1, -0.3, n)], 1)
    params = {
        'template': template,
        'centre': np.concatenate([centre, floor_centre[:, None], wall_centre[:, None]], 1),
        'scale': np.concatenate([scale, floor_scale[:, None], wall_scale[:, None]], 1),
        'rotation': np.concatenate([rotation, eye[:, None], eye[:, None]], 1),
        'colour_a': np.concatenate([colour, floor_a[:, None], wall_colour[:, None]], 1),
        'colour_b': np.concatenate([stripe, floor_b[:, None], wall_colour[:, None]], 1),
        'cycles': np.concatenate([cycles, np.zeros((n, 2))], 1),
        'axis': np.concatenate([axis, np.zeros((n, 2, 3))], 1),
        'phase': np.concatenate([phase, np.zeros((n, 2))], 1),
        'checker_tile': np.concatenate([np.zeros((n, slots - 2)), tile[:, None], np.zeros((n, 1))], 1),
        'camera_rotation': _camera_jitter(rng, n, 4.0),
        'light_dir': light / np.linalg.norm(light, axis=1, keepdims=True),
        'ambient': rng.uniform(0.15, 0.4, n),
        'diffuse': rng.uniform(0.6, 1.0, n),
        'gain': rng.uniform(0.85, 1.15, (n, 3)),
        'sky_top': _hsv_colours(rng, (n,), (0.0, 0.25), (0.6, 1.0)),
        'sky_bottom': _hsv_colours(rng, (n,), (0.0, 0.3), (0.7, 1.0)),
        'noise_sigma': rng.uniform(0.0, 3.0, n) / 255,
    }
    return params
