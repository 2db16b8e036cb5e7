"""Compatibility package named like the one official OP3D / EG3D pickles reference (``torch_utils``).

op3d never executes the code that official pickles embed; see ``torch_utils.persistence``.
"""
