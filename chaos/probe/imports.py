"""
A module patched the moment it is imported: nothing is imported that the app does not import
itself. The resource instrumentation (`chaos.probe.resources`) hooks the libraries the app uses
this way, and the launcher of an app's own script (`chaos.probe.script`) the server it starts.

`when_imported(name, patch)` runs `patch(module)` once the module has executed, before the
import that loaded it returns, so that `from hypercorn.asyncio import serve` binds what the patch
left there; at once when the module is imported already.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

Patch = Callable[[ModuleType], None]


def when_imported(name: str, patch: Patch) -> None:
    """`patch(module)` once the module `name` is imported, or now if it is."""
    global _finder
    module = sys.modules.get(name)
    if module is not None:
        patch(module)
        return
    if _finder is None:
        _finder = _PostImportFinder()
        sys.meta_path.insert(0, _finder)
    _finder.pending.setdefault(name, []).append(patch)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it lets the other finders find a patched module and wraps its loader."""

    def __init__(self) -> None:
        self.pending: dict[str, list[Patch]] = {}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.pending:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None  # a namespace package or an old-style loader: let the import go its way
        spec.loader = _PatchingLoader(spec.loader, functools.partial(self.loaded, fullname))
        return spec

    def loaded(self, fullname: str, module: ModuleType) -> None:
        for patch in self.pending.pop(fullname, ()):
            patch(module)


class _PatchingLoader(importlib.abc.Loader):
    """The module's own loader, with the patches run once the module has executed."""

    def __init__(self, loader: Any, on_load: Patch) -> None:
        self._loader = loader
        self._on_load = on_load

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: ModuleType) -> None:
        # The module never sees this wrapper: its spec and __loader__ name its real loader.
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        module.__loader__ = self._loader
        self._loader.exec_module(module)
        self._on_load(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


_finder: _PostImportFinder | None = None
