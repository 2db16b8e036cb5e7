"""op3d's differentiable ADA augmentation of discriminator inputs: `AugmentPipe` (the module, its groups and presets)
and the transforms it is made of. The adaptive choice of p during training is op3d.training.augment."""

from op3d.augmentation.pipe import AUGMENT_PRESETS, AugmentPipe, augment_pipe_kwargs
from op3d.augmentation.transforms import (blit, brightness_shift, contrast_scale, hue_rotation, luma_flip, resample,
                                          rotate2d, saturation_scale, scale2d, translate2d)

__all__ = ["AUGMENT_PRESETS", "AugmentPipe", "augment_pipe_kwargs", "blit", "brightness_shift", "contrast_scale",
           "hue_rotation", "luma_flip", "resample", "rotate2d", "saturation_scale", "scale2d", "translate2d"]
