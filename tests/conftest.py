"""Shared pytest fixtures for op3d tests, and the CPU kernel pin the parity tests rely on."""

import os
import pathlib

# The reference fixtures were made with oneDNN's AVX2 kernels; on an AVX-512 host oneDNN picks kernels that sum
# convolution / matmul terms in another order, and the gradients of a training step (test_loss_parity) then differ from
# the fixtures by a few float32 ulps more than the parity tolerance allows. Capping oneDNN at AVX2 (read once, at its
# first primitive, so it must be set before any test runs a convolution) selects the fixtures' kernels on every x86
# host, as the GPU tests switch TF32 off; it changes which kernels run, never what op3d computes. A caller's own
# setting wins.
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _unavailable(message):
    """Skip, or fail when OP3D_REQUIRE_FIXTURES=1 (so CI cannot silently skip reference checks)."""
    if os.environ.get("OP3D_REQUIRE_FIXTURES") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    """Directory holding the reference fixture sets (``official/``, ``eg3d/``).

    ``$OP3D_FIXTURES`` if set, else ``<repo>/../shared/fixtures``.
    """
    path = pathlib.Path(os.environ.get("OP3D_FIXTURES") or REPO_ROOT.parent / "shared" / "fixtures")
    if not path.is_dir():
        _unavailable(f"reference fixtures not found at {path} (set OP3D_FIXTURES)")
    return path


@pytest.fixture(scope="session")
def fixture_file(fixtures_dir):
    """Return a function mapping a path relative to ``fixtures_dir`` to an existing file (skips/fails if missing)."""

    def get(relpath) -> pathlib.Path:
        path = fixtures_dir / relpath
        if not path.is_file():
            _unavailable(f"reference fixture file missing: {path}")
        return path

    return get
