"""The embedded synthetic RGB-D-audio world: the default dataset, generated on the CPU, no download.

Every scene shows two large *key* objects (one in each image half), up to two small distractors,
a checkered floor and sometimes a back wall, and comes with a one-second sound. The class is the
combination of three factors (3 x 2 x 2 = 12 classes). Each factor has a *primary* cue that one
modality sees cleanly and fainter *secondary* cues in the other two, so the sensors
overlap as a robot's do: every modality alone can tell most classes apart, and when one is
destroyed the other two still can, if they are read in depth.

==========  ==========================  ===============================  ===============================
factor      RGB                         depth                            audio
==========  ==========================  ===============================  ===============================
family (3)  **hue of the key objects**  distance band of the key pair    pitch register of the melody
            (red / green / blue)        (adjacent bands)                 (adjacent registers)
nearer (2)  nearer object looks         **which key object is nearer**   loudness trend: crescendo
            larger (size ratio)         (the nearest thing in view)      (left) / decrescendo (right)
contour(2)  key pair rises or falls     key pair rises or falls          **melody direction**
            left to right               left to right                    (every step and glide)
==========  ==========================  ===============================  ===============================

A secondary cue always points the right way but is faint for some samples and buried in
nuisances, so a single modality at full depth reaches well above chance but not the fused
accuracy, and only fusion or a deep read of the remaining sensors recovers a destroyed one's
factor. Nuisances: object shapes, poses,
textures and exact sizes, lighting, exposure, sensor noise, floor and wall appearance, wall
presence, camera jitter; exact pitch, timbre, rhythm, vibrato, per-note loudness, a noise band and
a hum.

Samples are drawn in fixed blocks of 64 (one random stream per block, parameters drawn as arrays),
so sample ``i`` depends only on (seed, config, i). Rendering uses Open3D's ``RaycastingScene``:
the block's scenes are laid out on a grid far enough apart that no camera ray can reach a
neighbour (checked on every hit), so one BVH build and one ``cast_rays`` serve the whole block.
Shading is Lambertian, in numpy; sound is vectorised wavetable synthesis.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

import numpy as np

from admn_ros.datasets.sample import SAMPLE_RATE, RawBatch

# Bump when the generated content changes, so on-disk caches built by older code are not reused.
GENERATOR_VERSION = 5

HUES = ('red', 'green', 'blue')
NEARER = ('leftnear', 'rightnear')
CONTOURS = ('rising', 'falling')

# Class c <-> factors (hue, nearer, contour), contour varying fastest: a prefix whose length is
# a multiple of 4 is still a full depth x audio factorial.
CLASS_FACTORS: Tuple[Tuple[int, int, int], ...] = tuple(
    (h, n, c) for h in range(len(HUES)) for n in range(len(NEARER)) for c in range(len(CONTOURS)))
CLASS_NAMES: Tuple[str, ...] = tuple(
    f'{HUES[h]}-{NEARER[n]}-{CONTOURS[c]}' for h, n, c in CLASS_FACTORS)

BLOCK = 64  # samples per random stream and per ray-casting call
_LABEL_STREAM, _SAMPLE_STREAM = 0, 1
_HUE_CENTRES_DEG, _HUE_SPREAD_DEG = np.array([0.0, 120.0, 240.0]), 25.0
# Stripe cycles across an object's bounding diameter, per texture (plain has none): a nuisance.
_STRIPE_CYCLES = np.array([[0.0, 0.0], [1.8, 2.6], [4.5, 6.0]])
_SHAPES = ('sphere', 'box', 'cylinder', 'cone', 'torus', 'octahedron')
_FLOOR, _WALL = len(_SHAPES), len(_SHAPES) + 1   # template ids of the two planes
# Scene bounds (metres, camera frame: x right, y down, z forward) and the block's layout grid.
_HALF_WIDTH, _TOP, _FAR = 8.0, -6.0, 12.0
_GRID_SPACING, _GRID_COLUMNS = 60.0, 8  # spacing >> scene extent: rays never reach a neighbour

# Secondary cues (module docstring): each points the right way, but some samples show it only
# faintly (a small size ratio, a slight rise, a pitch near a register's edge, a flat loudness trend)
# against the nuisances, so a sensor alone is right less often than the three together.
_DEPTH_BANDS_M = np.array([[1.0, 1.45], [1.45, 1.9], [1.9, 2.35]])  # nearer key object, per family
_SIZE_RATIO = (1.15, 1.8)             # apparent radius of the nearer key object / the farther one
_RISE = (0.05, 0.22)                  # right key object above the left one (x image size), rising
_REGISTER_HZ = np.array([[130.0, 210.0], [230.0, 370.0], [400.0, 650.0]])  # base pitch, per family
_LOUDNESS_STEP = (0.08, 0.3)          # note level change per note: crescendo when the left is nearer


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that changes the generated content (the cache key hashes it)."""

    image_size: int = 64
    num_classes: int = len(CLASS_NAMES)
    seed: int = 0
    fov_deg: float = 60.0
    clip_seconds: float = 1.0
    max_distractors: int = 2
    wall_probability: float = 0.6

    def __post_init__(self):
        if not 8 <= self.image_size <= 1024:
            raise ValueError(f'image_size must be in [8, 1024], got {self.image_size}')
        if not 2 <= self.num_classes <= len(CLASS_NAMES):
            raise ValueError(f'num_classes must be in [2, {len(CLASS_NAMES)}], got {self.num_classes}')
        if not 20.0 <= self.fov_deg <= 90.0:
            raise ValueError(f'fov_deg must be in [20, 90], got {self.fov_deg}')
        if not 0.5 <= self.clip_seconds <= 10.0:
            raise ValueError(f'clip_seconds must be in [0.5, 10], got {self.clip_seconds}')
        if not 0 <= self.max_distractors <= 4:
            raise ValueError(f'max_distractors must be in [0, 4], got {self.max_distractors}')
        if not 0.0 <= self.wall_probability <= 1.0:
            raise ValueError(f'wall_probability must be in [0, 1], got {self.wall_probability}')

    @property
    def class_names(self) -> List[str]:
        return list(CLASS_NAMES[:self.num_classes])

    @property
    def focal_px(self) -> float:
        return 0.5 * self.image_size / np.tan(np.radians(self.fov_deg) / 2)

    @property
    def audio_length(self) -> int:
        return int(round(self.clip_seconds * SAMPLE_RATE))


def class_factors(labels) -> np.ndarray:
    """Factor indices ``[..., 3]`` (hue, nearer, contour) of class labels."""
    return np.asarray(CLASS_FACTORS, dtype=np.int64)[np.asarray(labels, dtype=np.int64)]


def balanced_labels(n: int, seed: int, num_classes: int) -> np.ndarray:
    """Labels in shuffled runs of ``num_classes``: every class once per run, so counts differ by <= 1."""
    runs = -(-n // num_classes)
    labels = [np.random.default_rng([seed, _LABEL_STREAM, r]).permutation(num_classes) for r in range(runs)]
    return np.concatenate(labels or [np.zeros(0, np.int64)])[:n].astype(np.int64)


def generate(n: int, seed: Optional[int] = None, cfg: Optional[SyntheticConfig] = None,
             *, workers: Optional[int] = None) -> RawBatch:
    """``n`` samples as a raw batch (rgb, depth, audio, label); deterministic in (seed, cfg).

    ``seed`` defaults to ``cfg.seed``. A shorter run is a prefix of a longer one. Blocks are
    generated by ``workers`` threads (default: up to 2; numpy and Open3D release the GIL); the
    result does not depend on it.
    """
    cfg = cfg or SyntheticConfig()
    seed = cfg.seed if seed is None else seed
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f'n must be a non-negative integer, got {n!r}')
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f'seed must be a non-negative integer, got {seed!r}')
    n, seed = int(n), int(seed)
    blocks = -(-n // BLOCK)
    labels = balanced_labels(blocks * BLOCK, seed, cfg.num_classes)
    size = cfg.image_size
    out = {
        'rgb': np.empty((n, size, size, 3), np.uint8),
        'depth': np.empty((n, size, size), np.float32),
        'audio': np.empty((n, cfg.audio_length), np.float32),
        'label': labels[:n].copy(),
    }

    def make_block(block: int) -> None:
        start, stop = block * BLOCK, min(n, (block + 1) * BLOCK)
        rng = np.random.default_rng([seed, _SAMPLE_STREAM, block])
        factors = class_factors(labels[block * BLOCK:(block + 1) * BLOCK])
        # Fixed draw order and shapes: the first k samples of a block never depend on k.
        scenes = _sample_scenes(rng, factors, cfg)
        sounds = _sample_sounds(rng, factors, cfg)
        pixel_noise = rng.random((BLOCK, size, size, 3), dtype=np.float32)
        noise_spectrum = rng.random((BLOCK, cfg.audio_length // 2 + 1, 2), dtype=np.float32)
        k = stop - start
        # Written straight into the output slices; the noise draws double as scratch buffers.
        _render(_take(scenes, k), pixel_noise[:k], cfg, out['rgb'][start:stop], out['depth'][start:stop])
        _synthesise(_take(sounds, k), noise_spectrum[:k], cfg, out['audio'][start:stop])

    workers = min(2, os.cpu_count() or 1) if workers is None else int(workers)
    if workers <= 1 or blocks <= 1:
        for block in range(blocks):
            make_block(block)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(make_block, range(blocks)))   # list(): re-raise any worker error here
    return out


def _take(params: Dict[str, np.ndarray], k: int) -> Dict[str, np.ndarray]:
    return {name: value[:k] for name, value in params.items()}


# --------------------------------------------------------------------------------------- scenes

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
    from scipy.spatial.transform import Rotation
    angles = rng.uniform(-max_deg, max_deg, (3, n)).T
    return Rotation.from_euler('YXZ', angles, degrees=True).as_matrix()


def _hsv_colours(rng, shape, sat, val, hue=None) -> np.ndarray:
    """Random RGB colours ``shape + (3,)`` in [0, 1]: the given S / V ranges, hue uniform unless given."""
    import cv2
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


def _sample_scenes(rng, factors: np.ndarray, cfg: SyntheticConfig) -> Dict[str, np.ndarray]:
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
    template = rng.integers(0, len(_SHAPES), (n, 2 + n_dis))
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
    template = np.concatenate([template, np.full((n, 1), _FLOOR), np.where(has_wall, _WALL, -1)[:, None]], 1)
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


@lru_cache(maxsize=1)
def _templates():
    """Unit meshes (bounding radius 1, centred) by template id: (vertices, triangles, vertex normals)."""
    import open3d as o3d
    make = o3d.geometry.TriangleMesh
    meshes = [make.create_sphere(1.0, 8), make.create_box(), make.create_cylinder(1.0, 2.0, 16, 1),
              make.create_cone(1.0, 2.0, 16, 1), make.create_torus(1.0, 0.4, 16, 8), make.create_octahedron()]
    out = []
    for mesh in meshes:
        mesh.compute_vertex_normals()
        vertices = np.asarray(mesh.vertices, np.float64)
        vertices = vertices - (vertices.min(0) + vertices.max(0)) / 2
        vertices /= np.linalg.norm(vertices, axis=1).max()
        out.append((vertices, np.asarray(mesh.triangles, np.int64), np.asarray(mesh.vertex_normals, np.float64)))
    square = np.array([[0, 1, 2], [0, 2, 3]])
    out.append((np.array([[-1, 0, -1], [1, 0, -1], [1, 0, 1], [-1, 0, 1]], float), square,
                np.tile([0.0, -1.0, 0.0], (4, 1))))              # floor: local x/z
    out.append((np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], float), square,
                np.tile([0.0, 0.0, -1.0], (4, 1))))              # wall: local x/y
    return out


def _grid_offsets(n: int) -> np.ndarray:
    """Where each scene of a block sits; a centred grid keeps float32 coordinates small."""
    i = np.arange(n)
    return np.stack([(i % _GRID_COLUMNS - (_GRID_COLUMNS - 1) / 2) * _GRID_SPACING,
                     (i // _GRID_COLUMNS - (BLOCK // _GRID_COLUMNS - 1) / 2) * _GRID_SPACING,
                     np.zeros(n)], 1)


def _build_mesh(p: Dict[str, np.ndarray]):
    """Merge every object of the block into one mesh; returns vertices, triangles, vertex normals,
    triangle -> flat object index."""
    templates = _templates()
    n, slots = p['template'].shape
    offsets = _grid_offsets(n)
    verts, tris, normals, owner = [], [], [], []
    base = 0
    for tid, (tv, tt, tn) in enumerate(templates):
        flat = np.flatnonzero(p['template'].ravel() == tid)
        if flat.size == 0:
            continue
        b = flat // slots
        rot = p['rotation'].reshape(-1, 3, 3)[flat]
        scale = p['scale'].reshape(-1, 3)[flat]
        centre = p['centre'].reshape(-1, 3)[flat] + offsets[b]
        verts.append(_rotate(rot, tv[None] * scale[:, None, :]) + centre[:, None])
        # Normals map with the inverse transpose of rotation x scale (planes have a zero extent).
        nn = _rotate(rot, tn[None] / np.where(scale > 0, scale, 1.0)[:, None, :])
        normals.append((nn / np.linalg.norm(nn, axis=-1, keepdims=True)).astype(np.float32))
        tris.append(tt[None] + base + len(tv) * np.arange(flat.size)[:, None, None])
        owner.append(np.repeat(flat, len(tt)))
        base += flat.size * len(tv)
    return (np.concatenate([v.reshape(-1, 3) for v in verts]), np.concatenate([t.reshape(-1, 3) for t in tris]),
            np.concatenate([m.reshape(-1, 3) for m in normals]), np.concatenate(owner))


def _front_facing(verts: np.ndarray, tris: np.ndarray, camera: np.ndarray) -> np.ndarray:
    """Which triangles face their scene's camera (``camera`` [3, T], one position per triangle).

    The templates are closed and wound outwards and every camera is outside every object, so a
    ray enters a solid through a front face before it can reach a back face: dropping back faces
    leaves every first hit as it was, at half the BVH build and a little less traversal. Nearly
    edge-on triangles are kept, so rounding can only keep a triangle, never drop a needed one.
    """
    xyz = verts.T.astype(np.float64)                     # [3, V]: the float32 vertices, exactly
    a, b, c = (np.take(xyz, corner, axis=1) for corner in np.ascontiguousarray(tris.T))
    b -= a
    c -= a
    normal = np.stack([b[1] * c[2] - b[2] * c[1], b[2] * c[0] - b[0] * c[2], b[0] * c[1] - b[1] * c[0]])
    a -= camera
    away = np.einsum('it,it->t', normal, a)
    return away <= 1e-6 * np.sqrt(np.einsum('it,it->t', normal, normal) * np.einsum('it,it->t', a, a))


def _rotate(rotation: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``rotation`` [O, 3, 3] applied to ``vectors`` [O, V, 3]: einsum('oij,ovj->ovi') without its
    per-element overhead. Terms are summed in einsum's order (x + z, then y), so the float64
    result is bit-identical and the float32 vertices, hence the rendered pixels, do not move."""
    out = np.empty(vectors.shape)
    for i in range(3):
        r = rotation[:, i, :, None]                                   # [O, 3, 1]
        np.add(r[:, 0] * vectors[..., 0] + r[:, 2] * vectors[..., 2], r[:, 1] * vectors[..., 1], out=out[..., i])
    return out


def _camera_rays(rotation: np.ndarray, offsets: np.ndarray, cfg: SyntheticConfig):
    """Pinhole rays through pixel centres, one camera per scene: float32 [B, S, S, 6] (origin,
    direction) for Open3D, and the directions again as contiguous [3, B, S, S] for shading.

    Same arithmetic, in the same order, as Open3D's ``create_rays_pinhole`` (which builds one camera
    per call): pixel -> direction matrix R K^-1 in float64 rounded to float32, then a float32
    mat-vec; the origin is -R t with t = -R^T offset. So the rays are bit-identical to its output.
    Every direction has camera-frame z component 1, hence t_hit is the camera z-depth.
    """
    size, f, c = cfg.image_size, cfg.focal_px, cfg.image_size / 2
    intrinsic = np.array([[f, 0, c], [0, f, c], [0, 0, 1]])
    to_dir = (rotation @ np.linalg.inv(intrinsic)).astype(np.float32)             # [B, 3, 3]
    translation = -np.einsum('bji,bj->bi', rotation, offsets)                      # world -> camera
    px = np.arange(size, dtype=np.float32) + np.float32(0.5)
    rays = np.empty((len(rotation), size, size, 6), np.float32)
    direction = np.empty((3, len(rotation), size, size), np.float32)
    for i in range(3):
        origin = -((rotation[:, i, 2] * translation[:, 2] + rotation[:, i, 1] * translation[:, 1])
                   + rotation[:, i, 0] * translation[:, 0])
        rays[..., i] = origin.astype(np.float32)[:, None, None]
        row_part = to_dir[:, i, 1, None, None] * px[None, :, None] + to_dir[:, i, 2, None, None]
        np.add(row_part, to_dir[:, i, 0, None, None] * px[None, None, :], out=direction[i])
        rays[..., 3 + i] = direction[i]
    return rays, direction.reshape(3, -1)


def _render(p: Dict[str, np.ndarray], pixel_noise: np.ndarray, cfg: SyntheticConfig,
            rgb: np.ndarray, depth: np.ndarray) -> None:
    """Ray-cast a block of scenes at once into ``rgb`` uint8 [B,S,S,3] and ``depth`` float32 [B,S,S].

    Shading runs over every pixel, vectors as contiguous x / y / z rows, with no gather / scatter
    of the hits: a miss points at an extra all-zero object and gets sky at the end.
    ``pixel_noise`` is used as scratch.
    """
    import open3d as o3d
    size = cfg.image_size
    n, slots = p['template'].shape
    pixels = size * size
    verts, tris, vnormals, tri_owner = _build_mesh(p)
    verts = verts.astype(np.float32)
    offsets = _grid_offsets(n)
    front = _front_facing(verts, tris, np.take(offsets.T, tri_owner // slots, axis=1))
    front |= p['template'].reshape(-1)[tri_owner] >= _FLOOR                    # planes are one-sided
    tris, tri_owner = tris[front], tri_owner[front]
    raycaster = o3d.t.geometry.RaycastingScene()
    raycaster.add_triangles(o3d.core.Tensor(verts), o3d.core.Tensor(tris.astype(np.uint32)))
    rays, direction = _camera_rays(p['camera_rotation'], offsets, cfg)
    hits = {k: v.numpy() for k, v in raycaster.cast_rays(o3d.core.Tensor(rays)).items()}
    del rays

    t = hits['t_hit'].reshape(-1)
    missed = np.isinf(t)
    np.copyto(depth, t.reshape(depth.shape))
    np.putmask(depth, missed.reshape(depth.shape), np.nan)
    t[missed] = 0.0                                          # keeps the miss rows finite below
    # Misses carry INVALID_ID (2^32 - 1): clamp them to the extra "no object" row.
    prim = np.minimum(hits['primitive_ids'].reshape(-1), len(tris)).astype(np.intp)
    obj = np.append(tri_owner, n * slots).astype(np.intp)[prim]      # flat object b * slots + j
    obj_scene = np.append(np.arange(n * slots, dtype=np.int16) // slots, -1)[obj]
    wrong = obj_scene != np.repeat(np.arange(n, dtype=np.int16), pixels)
    if (wrong & ~missed).any():
        raise RuntimeError('a camera ray hit a neighbouring scene: the block grid is too tight')

    # The camera is at its scene's origin, so t * direction is the hit point in scene coordinates.
    point = direction * t
    normal = np.ascontiguousarray(hits['primitive_normals'].reshape(-1, 3).T)       # [3, pixels]
    facing = _dot(normal, direction)
    facing += 1e-12
    normal *= -np.sign(facing)                                                       # face the camera
    curved = np.flatnonzero(np.append(p['template'].reshape(-1) < _FLOOR, False)[obj])  # planes stay flat
    corner_table = vnormals[tris].reshape(-1, 9).T                                   # [9, triangles]
    corners = np.take(corner_table, prim[curved], axis=1).reshape(3, 3, -1)          # [corner, xyz, k]
    uv = hits['primitive_uvs'].reshape(-1, 2)[curved].T
    normal[:, curved] = _smooth_normals(normal[:, curved], uv, corners)

    table = _object_table(p)                                 # [constants, B * J + 1]

    def column(k):                                           # one per-object constant, per pixel
        return np.take(table[k], obj)

    phase = point[0] * column(0)
    phase += point[1] * column(1)
    phase += point[2] * column(2)
    phase += column(3)
    weight = np.sin(phase, out=phase)
    weight *= 0.5
    weight += 0.5
    tile = column(10)
    floor = np.flatnonzero(tile > 0)   # checkerboard in metres over the floor's x/z
    tile = tile[floor]
    weight[floor] = (np.floor(point[0, floor] / tile) + np.floor(point[2, floor] / tile)) % 2

    # Per-scene light: broadcast over each scene's pixels instead of gathered per pixel.
    light = p['light_dir'].astype(np.float32).T[:, :, None]                          # [3, B, 1]
    normal = normal.reshape(3, n, pixels)
    lambert = normal[0] * light[0]
    lambert += normal[1] * light[1]
    lambert += normal[2] * light[2]
    np.maximum(lambert, 0, out=lambert)
    lambert *= p['diffuse'].astype(np.float32)[:, None]
    lambert += p['ambient'].astype(np.float32)[:, None]

    # Sky: a vertical gradient, one value per scene and image row, copied in where rays miss.
    top, bottom = p['sky_top'].astype(np.float32), p['sky_bottom'].astype(np.float32)
    rows = np.linspace(0, 1, size, dtype=np.float32)[None, :, None]
    sky = (top[:, None, :] + rows * (bottom - top)[:, None, :])[:, :, None, :]       # [B, S, 1, 3]
    missed = missed.reshape(n, size, size)
    # Exposure / white balance, then uniform sensor noise scaled to the drawn standard deviation.
    gain = p['gain'].astype(np.float32)
    pixel_noise -= 0.5
    pixel_noise *= (np.sqrt(12) * p['noise_sigma'][:, None, None, None]).astype(np.float32)
    pixel_noise = pixel_noise.reshape(n, pixels, 3)
    for ch in range(3):
        shade = column(7 + ch)
        shade *= weight
        shade += column(4 + ch)
        shade = shade.reshape(n, pixels)
        shade *= lambert
        np.copyto(shade.reshape(n, size, size), sky[..., ch], where=missed)
        shade *= gain[:, ch, None]
        shade += pixel_noise[..., ch]
        shade *= 255
        np.rint(shade, out=shade)
        np.clip(shade, 0, 255, out=shade)
        np.copyto(rgb[..., ch], shade.reshape(rgb.shape[:-1]), casting='unsafe')


def _smooth_normals(flat, uv, corner_normals) -> np.ndarray:
    """Vertex-interpolated normals (hemisphere of the camera-facing ``flat`` ones), except across
    creases: box edges and cylinder rims average normals of faces at right angles, keep those flat.

    Vectors are [3, N] rows; ``uv`` is [2, N] barycentrics, ``corner_normals`` [3 corners, 3, N].
    """
    u, v = uv
    smooth = (1 - (u + v)) * corner_normals[0]
    smooth += u * corner_normals[1]
    smooth += v * corner_normals[2]
    smooth /= np.sqrt(_dot(smooth, smooth)) + 1e-12
    cos = _dot(smooth, flat)
    smooth *= np.sign(cos)
    return np.where(np.abs(cos) > 0.8, smooth, flat)


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot products of [3, N] rows of vectors, summed x, y, z in that order (as einsum does)."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _object_table(p: Dict[str, np.ndarray]) -> np.ndarray:
    """Per-object shading constants, float32 [11, B * J + 1], one row per constant so each is one
    contiguous gather; the last column is all zero, for rays that hit nothing.

    Rows: stripe vector g (3) and offset h (1) such that the stripe phase at scene point x is
    x . g + h; albedo (3); stripe minus albedo (3); checker tile (1). Stripes are planes normal to
    ``axis`` through the object, ``cycles`` of them across its bounding diameter, so their count on
    the silhouette does not depend on size or distance.
    """
    radius = p['scale'].reshape(-1, 3).max(1)
    g = (np.pi * p['cycles'].reshape(-1) / np.where(radius > 0, radius, 1.0))[:, None] * p['axis'].reshape(-1, 3)
    h = p['phase'].reshape(-1) - np.einsum('oi,oi->o', g, p['centre'].reshape(-1, 3))
    table = np.zeros((11, g.shape[0] + 1), np.float32)
    table[:, :-1] = np.concatenate([
        g, h[:, None], p['colour_a'].reshape(-1, 3), (p['colour_b'] - p['colour_a']).reshape(-1, 3),
        p['checker_tile'].reshape(-1, 1)], 1).T
    return table


# ---------------------------------------------------------------------------------------- sound

_MAX_NOTES = 5
_HARMONICS = 8
_TABLE_SIZE = 2048
_CONTROL_RATIO = 16   # audio samples per control step (1 kHz control rate)


def _sample_sounds(rng, factors: np.ndarray, cfg: SyntheticConfig) -> Dict[str, np.ndarray]:
    """Sound parameters for one block (``factors`` [B, 3]: family, nearer, contour), as arrays over
    [B] and [B, notes]."""
    family, nearer, contour = factors.T
    n, k = len(contour), _MAX_NOTES
    direction = np.where(contour == 0, 1.0, -1.0)[:, None]
    n_notes = rng.integers(3, k + 1, n)
    # Every step between notes goes the class direction (so does every glide within a note).
    steps = direction * rng.uniform(2.0, 5.0, (n, k - 1))
    active_step = np.arange(1, k)[None, :] < n_notes[:, None]
    steps *= active_step
    semitones = np.concatenate([np.zeros((n, 1)), np.cumsum(steps, 1)], 1)
    register = np.log(_REGISTER_HZ[family])           # the family's pitch register
    f0 = np.exp(register[:, 0] + rng.random(n) * (register[:, 1] - register[:, 0]))
    freqs = f0[:, None] * 2.0 ** (semitones / 12)

    durations = rng.uniform(0.11, 0.2, (n, k))
    gaps = rng.uniform(0.01, 0.06, (n, k))
    start = rng.uniform(0.02, 0.12, n)
    active = np.arange(k)[None, :] < n_notes[:, None]
    span = (durations * active).sum(1) + (gaps[:, :-1] * active_step).sum(1)
    squeeze = np.minimum(1.0, (0.97 * cfg.clip_seconds - start) / span)[:, None]
    durations, gaps = durations * squeeze, gaps * squeeze
    onsets = start[:, None] + np.concatenate([np.zeros((n, 1)), np.cumsum(durations[:, :-1] + gaps[:, :-1], 1)], 1)
    onsets = np.where(active, onsets, np.inf)        # padded notes never start

    # Loudness trend over the notes: crescendo when the left key object is nearer (secondary cue).
    trend = np.where(nearer == 0, 1.0, -1.0) * rng.uniform(*_LOUDNESS_STEP, n)
    centred = np.arange(k)[None, :] - (n_notes[:, None] - 1) / 2
    levels = np.clip(0.65 + trend[:, None] * centred + rng.uniform(-0.08, 0.08, (n, k)), 0.15, 1.0)

    harmonic = np.arange(1, _HARMONICS + 1)
    amps = harmonic[None, :] ** -rng.uniform(0.6, 2.0, (n, 1)) * rng.uniform(0.5, 1.5, (n, _HARMONICS))
    hollow = rng.random(n) < 0.3                      # odd-harmonic (clarinet-like) timbre
    amps[hollow, 1::2] *= 0.05
    top = (freqs * active).max(1) * 2 ** (2.5 / 12)   # highest pitch incl. glide and vibrato
    amps[harmonic[None, :] * top[:, None] > 0.47 * SAMPLE_RATE] = 0.0   # no partial above Nyquist
    return {
        'onsets': onsets, 'durations': durations, 'freqs': freqs,
        'glides': direction * rng.uniform(0.5, 2.0, (n, k)),   # semitones within a note
        'levels': levels,
        'harmonics': amps, 'harmonic_phases': rng.uniform(0, 2 * np.pi, (n, _HARMONICS)),
        'attack': rng.uniform(0.005, 0.03, n), 'decay': rng.uniform(1.0, 8.0, n),
        'vibrato_rate': rng.uniform(4.0, 7.0, n), 'vibrato_depth': rng.uniform(0.0, 0.3, n),
        'noise_centre': np.exp(rng.uniform(np.log(200.0), np.log(6000.0), n)),
        'noise_octaves': rng.uniform(0.3, 1.5, n), 'noise_snr_db': rng.uniform(3.0, 25.0, n),
        'hum_freq': np.where(rng.random(n) < 0.5, np.exp(rng.uniform(np.log(50.0), np.log(400.0), n)), 0.0),
        'hum_snr_db': rng.uniform(8.0, 25.0, n),
        'gain': np.exp(rng.uniform(np.log(0.05), np.log(0.8), n)),
    }


def _synthesise(s: Dict[str, np.ndarray], noise_spectrum: np.ndarray, cfg: SyntheticConfig,
                out: np.ndarray) -> None:
    """Vectorised wavetable synthesis of a block of sounds into ``out`` float32 [B, T], in [-1, 1].

    Pitch and envelope are smooth, so they are computed at a 1 kHz control rate and interpolated;
    only the wavetable lookup and the mix run at the audio rate.
    """
    import scipy.fft
    n, length, k = len(s['gain']), cfg.audio_length, _MAX_NOTES
    ratio = _CONTROL_RATIO
    steps = -(-length // ratio)
    tc = np.arange(steps + 1) * (ratio / SAMPLE_RATE)                    # control instants, seconds
    onsets = s['onsets']
    # Index of the note sounding (or last started) at each control instant, -1 before the first.
    note = np.sum(tc[None, None, :] >= onsets[:, :, None], axis=1) - 1   # [B, C]
    idx = np.maximum(note, 0)

    def per_note(name):
        return np.take_along_axis(s[name], idx, axis=1)

    since = tc[None, :] - per_note('onsets').clip(max=tc[-1] + 1)
    duration = per_note('durations')
    vibrato = s['vibrato_depth'][:, None] * np.sin(2 * np.pi * s['vibrato_rate'][:, None] * tc[None, :])
    semis = per_note('glides') * np.clip(since / duration, 0, 1) + vibrato
    freq = per_note('freqs') * 2.0 ** (semis / 12)
    release = np.clip((duration - since) / 0.01, 0, 1)      # 10 ms fade at the note end: no clicks
    envelope = ((note >= 0) * np.clip(since / s['attack'][:, None], 0, 1) * np.exp(-s['decay'][:, None] * since)
                * release * per_note('levels'))

    # Audio rate: phase grows linearly within each control step (constant frequency), envelope is
    # interpolated linearly; cycles are reduced mod 1 at control rate to keep float32 exact.
    # The [B, steps, ratio] arrays are built in place (each full-size temporary is a memory pass).
    increment = freq[:, :-1] * (ratio / SAMPLE_RATE)                    # cycles per control step
    start = np.concatenate([np.zeros((n, 1)), np.cumsum(increment, axis=1)[:, :-1]], 1) % 1.0
    frac = (np.arange(ratio) / ratio).astype(np.float32)[None, None, :]
    phase = frac * increment.astype(np.float32)[..., None]
    phase += start.astype(np.float32)[..., None]
    env = frac * (envelope[:, 1:] - envelope[:, :-1]).astype(np.float32)[..., None]
    env += envelope[:, :-1].astype(np.float32)[..., None]

    # One-period wavetable per sound: its harmonic series, by inverse FFT; all tables end to end,
    # so one flat gather serves the block (row b's table starts at b * _TABLE_SIZE).
    partials = np.zeros((n, _TABLE_SIZE // 2 + 1), complex)
    partials[:, 1:_HARMONICS + 1] = s['harmonics'] * np.exp(1j * s['harmonic_phases'])
    tables = np.fft.irfft(partials, n=_TABLE_SIZE, axis=1)
    tables /= np.abs(tables).max(axis=1, keepdims=True) + 1e-12
    whole = np.floor(phase)
    phase -= whole
    phase += np.arange(n, dtype=np.float32)[:, None, None]
    phase *= _TABLE_SIZE
    index = np.empty(phase.shape, np.intp)
    np.copyto(index, phase, casting='unsafe')                          # truncation, as astype
    # (x + row) can round up to row + 1: mode='clip' keeps the last row's index in its table.
    tone = np.take(tables.astype(np.float32).ravel(), index.reshape(n, -1)[:, :length], mode='clip')
    tone *= env.reshape(n, -1)[:, :length]
    tone_rms = np.sqrt(np.einsum('ij,ij->i', tone, tone, dtype=np.float64) / length) + 1e-9

    # Band noise and hum built in the frequency domain and added with one inverse FFT. Levels come
    # from Parseval: a one-sided spectrum X has time-domain mean square 2 sum|X|^2 / T^2.
    # ``noise_spectrum`` [B, F, 2] is (real, imaginary) pairs, i.e. complex64 memory: it is
    # shaped in place and viewed as the spectrum.
    bins = np.fft.rfftfreq(length, 1 / SAMPLE_RATE).astype(np.float32)
    # Octaves off the centre, as a difference of logs: one log per bin and per sound, not per pair.
    band = np.log2(np.maximum(bins, 1.0))[None, :] - np.log2(s['noise_centre'].astype(np.float32))[:, None]
    band /= s['noise_octaves'][:, None].astype(np.float32) / 2
    np.square(band, out=band)
    band *= -0.5
    np.exp(band, out=band)
    noise = noise_spectrum
    noise -= 0.5
    spectrum = noise.view(np.complex64)[..., 0]
    spectrum *= band                                     # a real factor: exactly scales both parts
    noise[:, 0] = 0.0
    noise_rms = np.sqrt(2 * np.einsum('ij,ij->i', noise.reshape(n, -1), noise.reshape(n, -1),
                                      dtype=np.float64)) / length
    noise *= (tone_rms * 10 ** (-s['noise_snr_db'] / 20) / (noise_rms + 1e-12))[:, None, None]
    hum_bin = np.clip(np.round(s['hum_freq'] * length / SAMPLE_RATE).astype(np.int64), 1, len(bins) - 2)
    # A bin of value A gives a cosine of amplitude 2A/T, i.e. RMS sqrt(2)A/T.
    hum_level = tone_rms * 10 ** (-s['hum_snr_db'] / 20) * (s['hum_freq'] > 0) * length / np.sqrt(2)
    noise[np.arange(n), hum_bin, 0] += hum_level
    mix = tone
    mix += scipy.fft.irfft(spectrum, n=length, axis=1)
    peak = np.maximum(mix.max(axis=1), -mix.min(axis=1))
    np.multiply(mix, (s['gain'] / (peak + 1e-12)).astype(np.float32)[:, None], out=out)
