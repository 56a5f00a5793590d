"""The embedded synthetic RGB-D-audio world: the default dataset, generated on the CPU, no download.

Every scene shows two large *key* objects (one in each image half), up to two small distractors,
a checkered floor and sometimes a back wall, and comes with a one-second sound. The class is the
combination of three factors, each visible to exactly one modality:

=========  =============================================  ========================================
modality   factor                                         why the other modalities cannot see it
=========  =============================================  ========================================
RGB        hue family of the two key objects (red /       colour is albedo only; shading, stripes
           green / blue, +-25 deg); distractors and       and the lighting gain are nuisances
           stripe textures are random, so the key
           objects must be found first
depth      which key object is nearer (left / right);     apparent sizes are drawn independently of
           the nearer one is the nearest thing in the     distance, objects float (no floor
           scene (distractors and floor lie beyond it)    contact), light is directional, no
                                                          shadows, silhouettes never overlap
audio      direction of the melody (rising / falling):    nothing in the scene depends on it
           every step between notes and every glide
           within a note goes that way
=========  =============================================  ========================================

So 3 x 2 x 2 = 12 classes; one modality alone can at best tell a class from the others sharing its
factor (accuracy ceilings: RGB 1/4, depth 1/6, audio 1/6; chance 1/12), all three together fully.
Nuisances: object shapes, poses, colours, sizes and positions, lighting, exposure, sensor noise,
floor and wall appearance, wall presence, camera jitter; base pitch, timbre, rhythm, vibrato,
loudness, a noise band and a hum.

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

from datasets.sample import SAMPLE_RATE, RawBatch

# Bump when the generated content changes, so on-disk caches built by older code are not reused.
GENERATOR_VERSION = 3

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
        scenes = _sample_scenes(rng, factors[:, 0], factors[:, 1], cfg)
        sounds = _sample_sounds(rng, factors[:, 2], cfg)
        pixel_noise = rng.random((BLOCK, size, size, 3), dtype=np.float32)
        noise_spectrum = rng.random((BLOCK, cfg.audio_length // 2 + 1, 2), dtype=np.float32)
        k = stop - start
        out['rgb'][start:stop], out['depth'][start:stop] = _render(_take(scenes, k), pixel_noise[:k], cfg)
        out['audio'][start:stop] = _synthesise(_take(sounds, k), noise_spectrum[:k], cfg)

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


def _sample_scenes(rng, hue: np.ndarray, nearer: np.ndarray, cfg: SyntheticConfig) -> Dict[str, np.ndarray]:
    """Scene parameters for one block, as arrays over [B] samples and [B, J] object slots.

    Slots: 0 = left key object, 1 = right key object, 2.. = distractors, then floor and wall.
    """
    n, size, f = len(hue), cfg.image_size, cfg.focal_px
    centre_px = size / 2
    n_dis = cfg.max_distractors
    slots = 2 + n_dis + 2

    # Key objects: one per image half; apparent size independent of distance.
    u = np.stack([rng.uniform(0.2, 0.4, n), rng.uniform(0.6, 0.8, n)], 1) * size
    v = rng.uniform(0.3, 0.62, (n, 2)) * size
    r_px = rng.uniform(0.12, 0.19, (n, 2)) * size
    gap = np.hypot(u[:, 1] - u[:, 0], v[:, 1] - v[:, 0]) - 0.04 * size
    r_px *= np.minimum(1.0, gap / r_px.sum(1))[:, None]   # silhouettes never touch: no occlusion cue
    # The nearer key object is the nearest thing in view: distractors start at 2 m and the floor's
    # nearest visible row lies beyond 2 m (floor_y >= 1.4 m seen at <= 34 deg below the axis).
    z_near = rng.uniform(1.0, 1.8, n)
    z_far = z_near + rng.uniform(1.2, 2.0, n)
    z = np.where((nearer == 0)[:, None], np.stack([z_near, z_far], 1), np.stack([z_far, z_near], 1))
    key_hue = np.stack([hue, hue], 1)

    # Distractors: small, any texture, first of 12 candidate spots clear of every silhouette so far.
    count = rng.integers(0, n_dis + 1, n)
    rd = rng.uniform(0.045, 0.08, (n, n_dis)) * size
    cand = rng.uniform(0.08, 0.92, (n, n_dis, 12, 2)) * size
    zd = rng.uniform(2.0, 3.6, (n, n_dis))
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
    floor_y = np.maximum(rng.uniform(1.4, 2.0, n), lowest + 0.1)
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
        verts.append(np.einsum('oij,ovj->ovi', rot, tv[None] * scale[:, None, :]) + centre[:, None])
        # Normals map with the inverse transpose of rotation x scale (planes have a zero extent).
        nn = np.einsum('oij,ovj->ovi', rot, tn[None] / np.where(scale > 0, scale, 1.0)[:, None, :])
        normals.append((nn / np.linalg.norm(nn, axis=-1, keepdims=True)).astype(np.float32))
        tris.append(tt[None] + base + len(tv) * np.arange(flat.size)[:, None, None])
        owner.append(np.repeat(flat, len(tt)))
        base += flat.size * len(tv)
    return (np.concatenate([v.reshape(-1, 3) for v in verts]), np.concatenate([t.reshape(-1, 3) for t in tris]),
            np.concatenate([m.reshape(-1, 3) for m in normals]), np.concatenate(owner))


def _render(p: Dict[str, np.ndarray], pixel_noise: np.ndarray, cfg: SyntheticConfig):
    """Ray-cast a block of scenes at once; returns rgb uint8 [B,S,S,3] and depth float32 [B,S,S]."""
    import open3d as o3d
    size = cfg.image_size
    n, slots = p['template'].shape
    verts, tris, vnormals, tri_owner = _build_mesh(p)
    raycaster = o3d.t.geometry.RaycastingScene()
    raycaster.add_triangles(o3d.core.Tensor(verts.astype(np.float32)), o3d.core.Tensor(tris.astype(np.uint32)))

    f, c = cfg.focal_px, size / 2
    intrinsic = o3d.core.Tensor(np.array([[f, 0, c], [0, f, c], [0, 0, 1]]))
    offsets = _grid_offsets(n)
    rays = np.empty((n, size, size, 6), np.float32)
    for b in range(n):
        extrinsic = np.eye(4)  # world -> camera; the camera sits at its scene's grid offset
        extrinsic[:3, :3] = p['camera_rotation'][b].T
        extrinsic[:3, 3] = -p['camera_rotation'][b].T @ offsets[b]
        rays[b] = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
            intrinsic, o3d.core.Tensor(extrinsic), size, size).numpy()
    hits = {k: v.numpy() for k, v in raycaster.cast_rays(o3d.core.Tensor(rays)).items()}

    # t_hit is the camera z-depth: every ray direction has camera-frame z component 1.
    t = hits['t_hit'].reshape(-1)
    hit = np.flatnonzero(np.isfinite(t))
    depth = np.full(n * size * size, np.nan, np.float32)
    depth[hit] = t[hit]
    prim = hits['primitive_ids'].reshape(-1)[hit].astype(np.int64)
    obj = tri_owner[prim]                                    # flat object index b * slots + j
    if not np.array_equal(obj // slots, hit // (size * size)):
        raise RuntimeError('a camera ray hit a neighbouring scene: the block grid is too tight')

    # The camera is at its scene's origin, so t * direction is the hit point in scene coordinates.
    direction = rays.reshape(-1, 6)[hit, 3:]
    point = t[hit, None] * direction
    normal = hits['primitive_normals'].reshape(-1, 3)[hit]
    normal *= -np.sign(np.einsum('ni,ni->n', normal, direction) + 1e-12)[:, None]   # face the camera
    curved = np.flatnonzero(p['template'].reshape(-1)[obj] < _FLOOR)                # planes stay flat
    normal[curved] = _smooth_normals(normal[curved], hits['primitive_uvs'].reshape(-1, 2)[hit[curved]],
                                     vnormals[tris[prim[curved]]])
    table = _object_table(p)[obj]
    g, h, colour, tint, tile = table[:, 0:3], table[:, 3], table[:, 4:7], table[:, 7:10], table[:, 10]
    light, ambient, diffuse = table[:, 11:14], table[:, 14:15], table[:, 15:16]
    weight = 0.5 + 0.5 * np.sin(np.einsum('ni,ni->n', point, g) + h)
    floor = np.flatnonzero(tile > 0)   # checkerboard in metres over the floor's x/z
    weight[floor] = np.floor(point[floor][:, [0, 2]] / tile[floor, None]).sum(1) % 2
    lambert = np.maximum(np.einsum('ni,ni->n', normal, light), 0)[:, None]
    shaded = (colour + weight[:, None] * tint) * (ambient + diffuse * lambert)

    rows = np.linspace(0, 1, size, dtype=np.float32)[None, :, None, None]
    top = p['sky_top'][:, None, None, :].astype(np.float32)
    bottom = p['sky_bottom'][:, None, None, :].astype(np.float32)
    image = np.empty((n, size, size, 3), np.float32)
    image[...] = top + rows * (bottom - top)
    image.reshape(-1, 3)[hit] = shaded
    # Exposure / white balance, then uniform sensor noise scaled to the drawn standard deviation.
    image *= p['gain'][:, None, None, :].astype(np.float32)
    image += (pixel_noise - 0.5) * (np.sqrt(12) * p['noise_sigma'][:, None, None, None]).astype(np.float32)
    rgb = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    return rgb, depth.reshape(n, size, size)


def _smooth_normals(flat, uv, corner_normals) -> np.ndarray:
    """Vertex-interpolated normals (hemisphere of the camera-facing ``flat`` ones), except across
    creases: box edges and cylinder rims average normals of faces at right angles, keep those flat."""
    weights = np.concatenate([1 - uv.sum(1, keepdims=True), uv], 1)
    smooth = np.einsum('nk,nkj->nj', weights, corner_normals)
    smooth /= np.sqrt(np.einsum('ni,ni->n', smooth, smooth))[:, None] + 1e-12
    cos = np.einsum('ni,ni->n', smooth, flat)
    return np.where((np.abs(cos) > 0.8)[:, None], smooth * np.sign(cos)[:, None], flat)


def _object_table(p: Dict[str, np.ndarray]) -> np.ndarray:
    """Per-object shading constants, float32 [B * J, 16], gathered once per hit.

    Columns: stripe vector g (3) and offset h (1) such that the stripe phase at scene point x is
    x . g + h; albedo (3); stripe minus albedo (3); checker tile (1); light direction (3); ambient;
    diffuse. Stripes are planes normal to ``axis`` through the object, ``cycles`` of them across
    its bounding diameter, so their count on the silhouette does not depend on size or distance.
    """
    n, slots = p['template'].shape
    radius = p['scale'].reshape(-1, 3).max(1)
    g = (np.pi * p['cycles'].reshape(-1) / np.where(radius > 0, radius, 1.0))[:, None] * p['axis'].reshape(-1, 3)
    h = p['phase'].reshape(-1) - np.einsum('oi,oi->o', g, p['centre'].reshape(-1, 3))
    per_scene = np.concatenate([p['light_dir'], p['ambient'][:, None], p['diffuse'][:, None]], 1)
    return np.concatenate([
        g, h[:, None], p['colour_a'].reshape(-1, 3), (p['colour_b'] - p['colour_a']).reshape(-1, 3),
        p['checker_tile'].reshape(-1, 1), np.repeat(per_scene, slots, axis=0)], 1).astype(np.float32)


# ---------------------------------------------------------------------------------------- sound

_MAX_NOTES = 5
_HARMONICS = 8
_TABLE_SIZE = 2048
_CONTROL_RATIO = 16   # audio samples per control step (1 kHz control rate)


def _sample_sounds(rng, contour: np.ndarray, cfg: SyntheticConfig) -> Dict[str, np.ndarray]:
    """Sound parameters for one block, as arrays over [B] and [B, notes]."""
    n, k = len(contour), _MAX_NOTES
    direction = np.where(contour == 0, 1.0, -1.0)[:, None]
    n_notes = rng.integers(3, k + 1, n)
    # Every step between notes goes the class direction (so does every glide within a note).
    steps = direction * rng.uniform(2.0, 5.0, (n, k - 1))
    active_step = np.arange(1, k)[None, :] < n_notes[:, None]
    steps *= active_step
    semitones = np.concatenate([np.zeros((n, 1)), np.cumsum(steps, 1)], 1)
    f0 = np.exp(rng.uniform(np.log(200.0), np.log(500.0), n))
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

    harmonic = np.arange(1, _HARMONICS + 1)
    amps = harmonic[None, :] ** -rng.uniform(0.6, 2.0, (n, 1)) * rng.uniform(0.5, 1.5, (n, _HARMONICS))
    hollow = rng.random(n) < 0.3                      # odd-harmonic (clarinet-like) timbre
    amps[hollow, 1::2] *= 0.05
    top = (freqs * active).max(1) * 2 ** (2.5 / 12)   # highest pitch incl. glide and vibrato
    amps[harmonic[None, :] * top[:, None] > 0.47 * SAMPLE_RATE] = 0.0   # no partial above Nyquist
    return {
        'onsets': onsets, 'durations': durations, 'freqs': freqs,
        'glides': direction * rng.uniform(0.5, 2.0, (n, k)),   # semitones within a note
        'levels': rng.uniform(0.6, 1.0, (n, k)),
        'harmonics': amps, 'harmonic_phases': rng.uniform(0, 2 * np.pi, (n, _HARMONICS)),
        'attack': rng.uniform(0.005, 0.03, n), 'decay': rng.uniform(1.0, 8.0, n),
        'vibrato_rate': rng.uniform(4.0, 7.0, n), 'vibrato_depth': rng.uniform(0.0, 0.3, n),
        'noise_centre': np.exp(rng.uniform(np.log(200.0), np.log(6000.0), n)),
        'noise_octaves': rng.uniform(0.3, 1.5, n), 'noise_snr_db': rng.uniform(3.0, 25.0, n),
        'hum_freq': np.where(rng.random(n) < 0.5, np.exp(rng.uniform(np.log(50.0), np.log(400.0), n)), 0.0),
        'hum_snr_db': rng.uniform(8.0, 25.0, n),
        'gain': np.exp(rng.uniform(np.log(0.05), np.log(0.8), n)),
    }


def _synthesise(s: Dict[str, np.ndarray], noise_spectrum: np.ndarray, cfg: SyntheticConfig) -> np.ndarray:
    """Vectorised wavetable synthesis of a block of sounds -> float32 [B, T] in [-1, 1].

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
    increment = freq[:, :-1] * (ratio / SAMPLE_RATE)                    # cycles per control step
    start = np.concatenate([np.zeros((n, 1)), np.cumsum(increment, axis=1)[:, :-1]], 1) % 1.0
    frac = (np.arange(ratio) / ratio).astype(np.float32)[None, None, :]
    phase = (start.astype(np.float32)[..., None] + frac * increment.astype(np.float32)[..., None])
    phase = phase.reshape(n, -1)[:, :length]
    env_step = (envelope[:, 1:] - envelope[:, :-1]).astype(np.float32)[..., None]
    env = (envelope[:, :-1].astype(np.float32)[..., None] + frac * env_step).reshape(n, -1)[:, :length]

    # One-period wavetable per sound: its harmonic series, by inverse FFT.
    partials = np.zeros((n, _TABLE_SIZE // 2 + 1), complex)
    partials[:, 1:_HARMONICS + 1] = s['harmonics'] * np.exp(1j * s['harmonic_phases'])
    tables = np.fft.irfft(partials, n=_TABLE_SIZE, axis=1)
    tables /= np.abs(tables).max(axis=1, keepdims=True) + 1e-12
    row = np.arange(n, dtype=np.float32)[:, None]
    index = ((phase - np.floor(phase) + row) * _TABLE_SIZE).astype(np.int64)
    tone = np.take(tables.astype(np.float32).ravel(), np.minimum(index, n * _TABLE_SIZE - 1)) * env
    tone_rms = np.sqrt(np.mean(np.square(tone, dtype=np.float64), axis=1)) + 1e-9

    # Band noise and hum built in the frequency domain and added with one inverse FFT. Levels come
    # from Parseval: a one-sided spectrum X has time-domain mean square 2 sum|X|^2 / T^2.
    bins = np.fft.rfftfreq(length, 1 / SAMPLE_RATE).astype(np.float32)
    octaves_off = np.log2(np.maximum(bins[None, :], 1.0) / s['noise_centre'][:, None].astype(np.float32))
    band = np.exp(-0.5 * np.square(octaves_off / (s['noise_octaves'][:, None].astype(np.float32) / 2)))
    spectrum = (noise_spectrum[..., 0] - 0.5 + 1j * (noise_spectrum[..., 1] - 0.5)).astype(np.complex64) * band
    spectrum[:, 0] = 0.0
    noise_rms = np.sqrt(2 * np.sum(np.abs(spectrum) ** 2, axis=1)) / length
    spectrum *= (tone_rms * 10 ** (-s['noise_snr_db'] / 20) / (noise_rms + 1e-12))[:, None]
    hum_bin = np.clip(np.round(s['hum_freq'] * length / SAMPLE_RATE).astype(np.int64), 1, len(bins) - 2)
    # A bin of value A gives a cosine of amplitude 2A/T, i.e. RMS sqrt(2)A/T.
    hum_level = tone_rms * 10 ** (-s['hum_snr_db'] / 20) * (s['hum_freq'] > 0) * length / np.sqrt(2)
    spectrum[np.arange(n), hum_bin] += hum_level
    mix = tone + scipy.fft.irfft(spectrum, n=length, axis=1)
    mix *= (s['gain'] / (np.abs(mix).max(axis=1) + 1e-12)).astype(np.float32)[:, None]
    return mix.astype(np.float32, copy=False)
