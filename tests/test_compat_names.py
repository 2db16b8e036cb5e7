"""Official pickles name `dnnlib` and `torch_utils`; op3d resolves those names itself and installs no packages of
that name (they would shadow the real EG3D/StyleGAN ones in the same environment)."""

import subprocess
import sys

# Run in a fresh interpreter in an empty folder, in isolated mode (-I: no current folder, no PYTHONPATH on sys.path),
# so only what the installation provides is importable.
_BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] in ('dnnlib', 'torch_utils'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
"""

_LOAD = _BLOCK + """
import op3d
from op3d.safe_pickle import EasyDict, load_pickle
snapshot = op3d.load_network_pkl(sys.argv[1])
assert type(snapshot['G_ema']).__name__ == 'OrthoPlanesGenerator', type(snapshot['G_ema'])
kwargs = load_pickle(sys.argv[1])['G_ema'].state['_init_kwargs']
assert type(kwargs['mapping_kwargs']) is EasyDict and kwargs['mapping_kwargs'].num_layers >= 1
assert not [m for m in sys.modules if m.partition('.')[0] in ('dnnlib', 'torch_utils')]
print('ok')
"""


def _isolated(code: str, *args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", "-c", code, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_installation_provides_no_dnnlib_or_torch_utils(tmp_path):
    code = ("import importlib.util; import op3d; "
            "print([n for n in ('dnnlib', 'torch_utils') if importlib.util.find_spec(n) is not None])")
    result = _isolated(code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_official_pickle_loads_with_no_dnnlib_or_torch_utils(fixture_file, tmp_path):
    result = _isolated(_LOAD, fixture_file("official/shhq_k4_l6/G.pkl"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
