"""A procedural body in SMPL format, for tests and demos without SMPL data (which op3d may not ship).

It is the body of the conditional reference fixture (``shhq_cond_k8/body.npz``, see its README): a closed, genus-0,
outward-oriented tube of 6890 vertices and 13776 faces with SMPL's 24-joint tree, y up, facing +z, pelvis at the
origin, Gaussian skinning weights. To make a complete SMPL model file it adds a joint regressor that reproduces the
rest joints exactly, smooth procedural shape directions (optional: the fixture body has none) and zero pose blend
shapes. :func:`save_smpl_npz` and :func:`save_smpl_chumpy_pkl` write it in the two formats
:func:`op3d.smpl.body_model.load_smpl_model` reads.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
import sys
import types

import numpy as np
import scipy.sparse
from scipy.interpolate import PchipInterpolator
from scipy.spatial.transform import Rotation

from op3d.smpl.body_model import SMPLModel

__all__ = ["JOINT_NAMES", "PARENTS", "REST_JOINTS", "joint_regressor", "procedural_pose", "procedural_smpl_arrays",
           "procedural_smpl_model", "save_smpl_chumpy_pkl", "save_smpl_npz", "shape_directions", "skinning_weights",
           "template_faces", "template_vertices"]

JOINT_NAMES = ("pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
               "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
               "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
               "left_hand", "right_hand")
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
"""SMPL's kinematic tree (parent of each joint, -1 for the root)."""

REST_JOINTS = np.array([
    [0.0, 0.0, 0.0], [0.06, -0.05, 0.0], [-0.06, -0.05, 0.0], [0.0, 0.07, -0.01], [0.065, -0.26, 0.01],
    [-0.065, -0.26, 0.01], [0.0, 0.14, -0.01], [0.07, -0.44, -0.01], [-0.07, -0.44, -0.01], [0.0, 0.19, 0.0],
    [0.07, -0.48, 0.04], [-0.07, -0.48, 0.04], [0.0, 0.27, 0.0], [0.04, 0.24, 0.0], [-0.04, 0.24, 0.0],
    [0.0, 0.33, 0.01], [0.12, 0.24, 0.0], [-0.12, 0.24, 0.0], [0.18, 0.2, 0.0], [-0.18, 0.2, 0.0],
    [0.2, 0.14, 0.01], [-0.2, 0.14, 0.01], [0.205, 0.11, 0.015], [-0.205, 0.11, 0.015]])
"""Rest joint positions [24, 3] (metres)."""

# Body profile control points: heights and, at each, the half width (x), half depth (z) and centre z of the section.
PROFILE_Y = (-0.5, -0.47, -0.4, -0.26, -0.1, -0.02, 0.05, 0.12, 0.2, 0.25, 0.28, 0.3, 0.33, 0.36, 0.4)
PROFILE_HALF_WIDTH_X = (0.12, 0.12, 0.1, 0.12, 0.15, 0.16, 0.15, 0.14, 0.17, 0.22, 0.2, 0.06, 0.07, 0.075, 0.07)
PROFILE_HALF_DEPTH_Z = (0.07, 0.09, 0.06, 0.07, 0.09, 0.1, 0.095, 0.09, 0.1, 0.08, 0.07, 0.05, 0.075, 0.08, 0.075)
PROFILE_CENTER_Z = (0.03, 0.03, 0.0, 0.01, 0.0, -0.01, 0.0, 0.01, 0.015, 0.0, 0.0, 0.0, 0.01, 0.012, 0.01)

RINGS, SEGMENTS = 82, 84
TOP_Y, BOTTOM_Y = 0.40, -0.50
SKINNING_SIGMA = 0.05
NUM_BETAS = 10
POSE_BLEND_SIZE = 207  # 23 joints x 9 entries of (R - I), SMPL's pose blend shape width


def _ring(i, j):
    """Vertex index of ring i, segment j (j wraps around)."""
    return 1 + SEGMENTS * i + j % SEGMENTS


def template_vertices() -> np.ndarray:
    """Rest vertices [6890, 3] float64: top pole, 82 rings of 84 vertices from top to bottom, bottom pole."""
    half_width, half_depth, center_z = (PchipInterpolator(PROFILE_Y, values)
                                        for values in (PROFILE_HALF_WIDTH_X, PROFILE_HALF_DEPTH_Z, PROFILE_CENTER_Z))
    y = np.repeat(TOP_Y - (TOP_Y - BOTTOM_Y) * np.arange(1, RINGS + 1) / (RINGS + 1), SEGMENTS)
    phi = np.tile(2 * np.pi * np.arange(SEGMENTS) / SEGMENTS, RINGS)
    dome = np.ones_like(y)  # rounds the head top and the sole
    head, sole = y > 0.35, y < -0.47
    dome[head] = np.sqrt(1 - ((y[head] - 0.35) / 0.05) ** 2)
    dome[sole] = np.sqrt(1 - ((y[sole] + 0.47) / 0.03) ** 2)
    wobble = 1 + 0.04 * np.sin(2 * phi + 7 * y) + 0.02 * np.cos(5 * phi - 3 * y)
    x = half_width(y) * dome * wobble * np.cos(phi)
    z = half_depth(y) * dome * wobble * np.sin(phi) + center_z(y)
    poles = [[0.0, TOP_Y, center_z(TOP_Y)], [0.0, BOTTOM_Y, center_z(BOTTOM_Y)]]
    return np.concatenate([poles[:1], np.stack([x, y, z], 1), poles[1:]])


def template_faces() -> np.ndarray:
    """Triangles [13776, 3] int64, outward oriented (positive signed volume)."""
    j = np.arange(SEGMENTS)
    top = np.stack([np.zeros_like(j), _ring(0, j + 1), _ring(0, j)], 1)
    i, j = (a.ravel() for a in np.meshgrid(np.arange(RINGS - 1), j, indexing="ij"))
    band = np.stack([np.stack([_ring(i, j), _ring(i, j + 1), _ring(i + 1, j + 1)], 1),
                     np.stack([_ring(i, j), _ring(i + 1, j + 1), _ring(i + 1, j)], 1)], 1).reshape(-1, 3)
    j = np.arange(SEGMENTS)
    bottom = np.stack([np.full_like(j, _ring(RINGS, 0)), _ring(RINGS - 1, j), _ring(RINGS - 1, j + 1)], 1)
    return np.concatenate([top, band, bottom]).astype(np.int64)


def skinning_weights(vertices: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Gaussian weights [V, 24]: exp(-|v - J_j|^2 / (2 sigma^2)) normalised over joints, sigma = 0.05."""
    d2 = ((vertices[:, None, :] - joints[None, :, :]) ** 2).sum(-1)
    w = np.exp(-d2 / (2 * SKINNING_SIGMA ** 2))
    return w / w.sum(1, keepdims=True)


def joint_regressor(vertices: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Dense [24, V] regressor with regressor @ vertices == joints (to rounding) and rows summing to 1.

    Each joint uses the 3 x 84 vertices of the three rings nearest to its height, with the weights closest to uniform
    that satisfy the constraints (a minimum-norm correction), so it follows the body under shape changes.
    """
    ring_y = vertices[1:-1:SEGMENTS, 1]
    regressor = np.zeros((len(joints), len(vertices)))
    for k, joint in enumerate(joints):
        centre = int(np.clip(np.abs(ring_y - joint[1]).argmin(), 1, RINGS - 2))
        idx = _ring(np.repeat(np.arange(centre - 1, centre + 2), SEGMENTS), np.tile(np.arange(SEGMENTS), 3))
        system = np.concatenate([vertices[idx].T, np.ones((1, len(idx)))])  # [4, n]: sum w v = J, sum w = 1
        uniform = np.full(len(idx), 1 / len(idx))
        target = np.append(joint, 1.0)
        regressor[k, idx] = uniform + np.linalg.lstsq(system, target - system @ uniform, rcond=None)[0]
    return regressor


def shape_directions(vertices: np.ndarray, num_betas: int = NUM_BETAS) -> np.ndarray:
    """Smooth procedural shape blend shapes [V, 3, num_betas] (up to about 2.5 cm per unit beta): direction k scales
    coordinate k % 3 about the origin (the pelvis) with a gain varying smoothly along the height."""
    dirs = np.zeros((len(vertices), 3, num_betas))
    for k in range(num_betas):
        axis = k % 3
        gain = 0.05 * np.cos(np.pi * (k // 3 + 1) * vertices[:, 1] + k)
        dirs[:, axis, k] = gain * vertices[:, axis]
    return dirs


def procedural_smpl_arrays(shape_blend_shapes: bool = True) -> dict[str, np.ndarray]:
    """The procedural body as smplx-named arrays: v_template [6890, 3], shapedirs [6890, 3, 10] (zeros when
    ``shape_blend_shapes`` is False, as the fixture body), posedirs [6890, 3, 207] zeros, J_regressor [24, 6890],
    weights [6890, 24], kintree_table [2, 24] (root parent 4294967295 as in the original files), f [13776, 3]."""
    vertices = template_vertices()
    shapedirs = shape_directions(vertices) if shape_blend_shapes else np.zeros((len(vertices), 3, NUM_BETAS))
    root = np.iinfo(np.uint32).max
    return {"v_template": vertices, "shapedirs": shapedirs,
            "posedirs": np.zeros((len(vertices), 3, POSE_BLEND_SIZE)),
            "J_regressor": joint_regressor(vertices, REST_JOINTS),
            "weights": skinning_weights(vertices, REST_JOINTS),
            "kintree_table": np.array([[root, *PARENTS[1:]], list(range(len(PARENTS)))], dtype=np.int64),
            "f": template_faces()}


def procedural_smpl_model(shape_blend_shapes: bool = True) -> SMPLModel:
    """:func:`procedural_smpl_arrays` as an :class:`SMPLModel`."""
    return SMPLModel.from_arrays(procedural_smpl_arrays(shape_blend_shapes), "<procedural body>")


def procedural_pose(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fixture's random pose for a numpy RandomState seed (11 and 12 there).

    Returns (axis_angle [24, 3] with row 0 drawn but unused, rotmats [24, 3, 3], betas [10]); the root rotation is
    R_x(pi) @ R_small, an upright person in an OpenCV-style camera frame. Draws, in order: clip(randn(24, 3) * 0.12,
    -0.3, 0.3), the rotation vector randn(3) * 0.1 of R_small, betas = randn(10) * 0.5.
    """
    rng = np.random.RandomState(seed)
    axis_angle = np.clip(rng.randn(24, 3) * 0.12, -0.3, 0.3)
    small = Rotation.from_rotvec(rng.randn(3) * 0.1).as_matrix()
    betas = rng.randn(NUM_BETAS) * 0.5
    rotmats = Rotation.from_rotvec(axis_angle).as_matrix()
    rotmats[0] = Rotation.from_euler("xyz", [np.pi, 0, 0]).as_matrix() @ small
    return axis_angle, rotmats, betas


def save_smpl_npz(arrays: dict[str, np.ndarray], path: str | os.PathLike) -> None:
    """Write smplx-named arrays as an (uncompressed) ``.npz`` model file."""
    with open(path, "wb") as file:
        np.savez(file, **arrays)


class _Ch:
    """What a chumpy ``Ch`` pickles as: its class name and a state dict holding the wrapped array under ``x``."""

    def __init__(self, x):
        self.x = x

    def __getstate__(self):
        return {"x": self.x}


class _Py2Pickler(pickle._Pickler):
    """Pickles bytes as Python 2 ``str`` (BINSTRING), as the original SMPL files store numpy data."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


@contextlib.contextmanager
def _importable_as_chumpy():
    """Make :class:`_Ch` importable as ``chumpy.ch.Ch`` while pickling (so no chumpy is needed), then undo it."""
    saved = {name: sys.modules.get(name) for name in ("chumpy", "chumpy.ch")}
    chumpy, ch = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
    chumpy.ch, ch.Ch = ch, _Ch
    _Ch.__module__, _Ch.__qualname__ = "chumpy.ch", "Ch"
    sys.modules.update({"chumpy": chumpy, "chumpy.ch": ch})
    try:
        yield
    finally:
        _Ch.__module__, _Ch.__qualname__ = __name__, "_Ch"
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def save_smpl_chumpy_pkl(arrays: dict[str, np.ndarray], path: str | os.PathLike) -> None:
    """Write smplx-named arrays in the layout of the original ``SMPL_NEUTRAL.pkl``: a protocol-2 pickle with
    Python 2 strings, ``v_template``, ``shapedirs`` and ``J`` (rest joints) as chumpy ``Ch`` objects, ``J_regressor``
    as a scipy ``csc_matrix``, plus ``bs_style`` / ``bs_type``. Reading it back needs no chumpy."""
    content = dict(arrays)
    for key in ("v_template", "shapedirs"):
        content[key] = _Ch(arrays[key])
    content["J"] = _Ch(arrays["J_regressor"] @ arrays["v_template"])
    content["J_regressor"] = scipy.sparse.csc_matrix(arrays["J_regressor"])
    content.update(bs_style="lbs", bs_type="lrotmin")
    with _importable_as_chumpy(), open(path, "wb") as file:
        _Py2Pickler(file, protocol=2).dump(content)
