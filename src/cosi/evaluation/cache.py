"""Results kept per model: bounded, and never keeping a model alive.

The λ search and the accuracy references are expensive and asked for again with the same model; they are
remembered per eps_model in a :class:`ModelCache`."""

from __future__ import annotations

import weakref
from collections import OrderedDict


def owner(eps_model):
    """What identifies an eps_model across calls: a bound method (``model.eps_model`` is a new object at
    every access) by its instance and function; anything else by itself."""
    own = getattr(eps_model, "__self__", None)
    return (own, eps_model.__func__) if own is not None else (eps_model, None)


def model_key(eps_model) -> tuple:
    """The part of a cache key that names the model: the id of its owner and the function."""
    own, func = owner(eps_model)
    return id(own), func


class ModelCache:
    """Results per eps_model, bounded to ``size`` entries (least recently used dropped first).

    A key starts with :func:`model_key`; its entry holds a weak reference to the model's owner, so the cache
    keeps no model alive, a hit checks identity (an id is reused once its object dies) and a dead owner's
    entries are dropped. An owner that takes no weak reference is held strongly, within the same bound."""

    def __init__(self, size: int):
        self.size, self._entries = size, OrderedDict()

    def get(self, eps_model, key):
        entry = self._entries.get(key)
        if entry is None or entry[0]() is not owner(eps_model)[0]:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, eps_model, key, value) -> None:
        own = owner(eps_model)[0]
        try:
            ref = weakref.ref(own, self._drop)
        except TypeError:
            ref = lambda: own  # noqa: E731
        self._entries[key] = (ref, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def _drop(self, ref) -> None:
        for key in [k for k, (r, _) in self._entries.items() if r is ref]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
