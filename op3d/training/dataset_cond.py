"""The pose-conditioned dataset's module under its earlier name: the code lives in `op3d.datasets.conditional`
(below training, with the other datasets); these names keep existing imports working."""

from op3d.datasets.conditional import POSE_DIR, ConditionalImageDataset, collate_conditional, stack_pose_conditions

__all__ = ["POSE_DIR", "ConditionalImageDataset", "collate_conditional", "stack_pose_conditions"]
