"""``dnnlib.util`` for code run from this checkout that imports it (tests/test_safe_pickle.py does): only
``EasyDict``, which is op3d's own (``op3d.safe_pickle.EasyDict``).

This folder is not installed with op3d (it would shadow the real EG3D/StyleGAN ``dnnlib``); reading official pickles
needs no ``dnnlib`` package at all, since op3d's restricted unpickler resolves the name itself.
"""

from op3d.safe_pickle import EasyDict

__all__ = ["EasyDict"]
