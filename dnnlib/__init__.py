"""The name official OP3D / EG3D pickles reference, for code run from this checkout (not installed with op3d; see
``dnnlib.util``)."""

from .util import EasyDict

__all__ = ["EasyDict"]
