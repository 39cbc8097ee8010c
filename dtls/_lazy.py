"""Package attributes imported on first use (PEP 562).

``import dtls`` then costs almost nothing, and importing one small part of the
package -- ``dtls.asyncio.udp``, which the QOTP socket layer shares -- does not
load the whole engine.  Type checkers read the package's ``TYPE_CHECKING``
imports instead.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(
    package: str, modules: Mapping[str, tuple[str, ...]], exported: list[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``modules`` maps each submodule
    to the public names it provides; any other submodule is imported by its name."""
    sources = {name: module for module, names in modules.items() for name in names}
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        module = sources.get(name)
        if module is None:
            # A submodule (``dtls.errors`` after a plain ``import dtls``), as when
            # the package imported everything at once.
            try:
                return importlib.import_module(f".{name}", package)
            except ModuleNotFoundError as error:
                if error.name != f"{package}.{name}":
                    raise
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exported))

    return __getattr__, __dir__
