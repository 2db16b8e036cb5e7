"""Minimal stand-in for the ``dnnlib.util`` module referenced by official OP3D / EG3D pickles.

Only :class:`EasyDict` is provided: snapshot pickles store constructor keyword arguments in it.
"""


class EasyDict(dict):
    """A ``dict`` whose keys can also be read, written and deleted as attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value

    def __delattr__(self, name):
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None
