"""SMPL body model support for the pose-conditional generator (spec section 4).

``body_model`` reads the user's own SMPL file (op3d ships no SMPL data), ``lbs`` holds the kinematics and builds the
pose-condition dict, ``procedural`` makes an SMPL-format stand-in body for tests.
"""

from op3d.smpl.body_model import SMPLModel, SMPLModelError, find_smpl_file, load_smpl_model
from op3d.smpl.lbs import (axis_angle_to_matrix, blend_transforms, blended_inverse_transforms, canonical_frame,
                           inverse_skin, matrix_to_axis_angle, pose_condition, regress_joints, rigid_transforms,
                           shape_blend, skin)

__all__ = ["SMPLModel", "SMPLModelError", "axis_angle_to_matrix", "blend_transforms", "blended_inverse_transforms",
           "canonical_frame", "find_smpl_file", "inverse_skin", "load_smpl_model", "matrix_to_axis_angle",
           "pose_condition", "regress_joints", "rigid_transforms", "shape_blend", "skin"]
