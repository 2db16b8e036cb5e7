"""The name official snapshot pickles call to rebuild their networks.

Official pickles reference ``torch_utils.persistence._reconstruct_persistent_obj(meta)``, whose official version
executes the Python source stored in ``meta``. Here the same name returns an inert
``op3d.safe_pickle.PersistentRecord`` (constructor kwargs and tensors, no code run); ``op3d.load_network_pkl``
turns those records into op3d modules. Use ``op3d.load_network_pkl`` rather than ``pickle.load``.
"""

from op3d.safe_pickle import PersistentRecord
from op3d.safe_pickle import _reconstruct_persistent as _reconstruct_persistent_obj

__all__ = ["PersistentRecord", "_reconstruct_persistent_obj"]
