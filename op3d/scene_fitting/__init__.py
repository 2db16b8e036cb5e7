"""Single-scene fitting: optimise OrthoPlanes or tri-plane tensors directly on posed images, rendered by the
generators' own lookup, decoder and renderer (field.py), and evaluate them on held-out views and meshes (fit.py)."""
