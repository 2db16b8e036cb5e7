"""Compatibility package named like the one official OP3D / EG3D pickles reference (``dnnlib``)."""

from .util import EasyDict

__all__ = ["EasyDict"]
