"""Rendering the synthetic world: a block of scenes ray-cast at once into RGB and depth.

Open3D's ``RaycastingScene`` does the ray casting: the block's scenes are laid out on a grid far
enough apart that no camera ray can reach a neighbour (checked on every hit), so one BVH build and
one ``cast_rays`` serve the whole block. Shading is Lambertian, in numpy, over contiguous x / y / z
rows. The scene parameters come from :mod:`.synthetic_scene`.
"""
from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Dict

import numpy as np
import open3d as o3d

from admn_ros.datasets.synthetic_scene import FLOOR

if TYPE_CHECKING:   # the config's module imports this one
    from admn_ros.datasets.synthetic import SyntheticConfig

BLOCK = 64  # samples per random stream and per ray-casting call
_GRID_SPACING, _GRID_COLUMNS = 60.0, 8  # spacing >> scene extent: rays never reach a neighbour


@lru_cache(maxsize=1)
def _templates():
    """Unit meshes (bounding radius 1, centred) by template id: (vertices, triangles, vertex normals)."""
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


def render(p: Dict[str, np.ndarray], pixel_noise: np.ndarray, cfg: SyntheticConfig,
            rgb: np.ndarray, depth: np.ndarray) -> None:
    """Ray-cast a block of scenes at once into ``rgb`` uint8 [B,S,S,3] and ``depth`` float32 [B,S,S].

    Shading runs over every pixel, vectors as contiguous x / y / z rows, with no gather / scatter
    of the hits: a miss points at an extra all-zero object and gets sky at the end.
    ``pixel_noise`` is used as scratch.
    """
    size = cfg.image_size
    n, slots = p['template'].shape
    pixels = size * size
    verts, tris, vnormals, tri_owner = _build_mesh(p)
    verts = verts.astype(np.float32)
    offsets = _grid_offsets(n)
    front = _front_facing(verts, tris, np.take(offsets.T, tri_owner // slots, axis=1))
    front |= p['template'].reshape(-1)[tri_owner] >= FLOOR                    # planes are one-sided
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
    curved = np.flatnonzero(np.append(p['template'].reshape(-1) < FLOOR, False)[obj])  # planes stay flat
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
