"""A browser viewer for any generator op3d loads (OrthoPlanes, EG3D tri-planes, SMPL-conditional), built on viser.

camera: browser camera <-> camera label; render: plane cache, lock, timed renders; mesh: meshes, colours, downloads;
controls: the GUI of one tab; session: one tab's worker (progressive refinement); app: the server; model: loading.
Design and use: docs/viewer.md.
"""
