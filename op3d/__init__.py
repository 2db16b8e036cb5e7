"""op3d: a clean-room, Apache-2.0 implementation of OrthoPlanes (ICCV 2023) and EG3D tri-planes.

    import op3d
    G = op3d.load_network_pkl('op3d-ffhq-512-128-withc-7plane.pkl')['G_ema']
"""

__version__ = "0.1.0"

from op3d.checkpoints import (CheckpointError, export_safetensors, import_safetensors, load_network_pkl,
                              save_network_pkl)
from op3d.networks.discriminator import DualDiscriminator
from op3d.networks.generator import OrthoPlanesGenerator, TriPlaneGenerator
from op3d.rendering.renderer import RendererDraws
from op3d.rendering.settings import RenderingSettings
from op3d.safe_pickle import UnsafePickleError

__all__ = ["CheckpointError", "DualDiscriminator", "OrthoPlanesGenerator", "RendererDraws", "RenderingSettings",
           "TriPlaneGenerator", "UnsafePickleError", "export_safetensors", "import_safetensors", "load_network_pkl",
           "save_network_pkl"]
