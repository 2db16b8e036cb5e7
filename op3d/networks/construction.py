"""Remembering how a network was built, so snapshots can store constructor arguments instead of code."""

from __future__ import annotations

import functools
import inspect


def records_init_kwargs(cls):
    """Class decorator: after construction, `self.init_kwargs` holds the constructor arguments by name."""
    original_init = cls.__init__
    signature = inspect.signature(original_init)

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        original_init(self, *args, **kwargs)
        self.init_kwargs = {k: v for k, v in bound.arguments.items() if k != "self"}

    cls.__init__ = __init__
    return cls
