"""Collects the stdlib corpus of :mod:`qserve.text_data`; run as ``python -I -S _stdlib_docs.py`` (JSON on stdout).

Standalone on purpose (stdlib only, no qserve import), so that it runs in a fresh interpreter where no third-party
library has patched a stdlib function.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import warnings
from collections.abc import Callable

# Modules with import side effects (opening a browser, printing, GUI) or absent on some platforms.
_EXCLUDED = frozenset(
    {
        "antigravity",
        "this",
        "idlelib",
        "tkinter",
        "turtle",
        "turtledemo",
        "msilib",
        "winreg",
        "winsound",
        "nt",
        "msvcrt",
        "ensurepip",
        "lib2to3",
        "pydoc_data",
    }
)


def _doc(obj: object) -> str:
    # obj.__doc__, not inspect.getdoc: getdoc inherits a base class's text, which would duplicate documents.
    raw = getattr(obj, "__doc__", None)
    return inspect.cleandoc(raw).strip() if isinstance(raw, str) else ""


def collect() -> list[tuple[str, str]]:
    """``(name, text)`` of every non-empty document, in a fixed order, duplicates dropped."""
    docs: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(name: str, text: str) -> None:
        if len(text) >= 40 and text not in seen:  # one-liners like "Return self." carry no language
            seen.add(text)
            docs.append((name, text))

    with warnings.catch_warnings():  # deprecated modules (e.g. typing.io) warn on import and attribute access
        warnings.simplefilter("ignore", DeprecationWarning)
        for mod_name in sorted(n for n in sys.stdlib_module_names if not n.startswith("_") and n not in _EXCLUDED):
            _add_module(mod_name, add)
    from pydoc_data.topics import topics  # the language reference sections behind help("...")

    for key in sorted(topics):
        add(f"pydoc_data.topics.{key}", inspect.cleandoc(topics[key]).strip())
    return docs


def _add_module(mod_name: str, add: Callable[[str, str], None]) -> None:
    try:
        module = importlib.import_module(mod_name)
    except Exception:  # platform-specific modules (e.g. grp on Windows) are skipped
        return
    add(mod_name, _doc(module))
    for attr in sorted(dir(module)):
        if attr.startswith("_"):
            continue
        obj = getattr(module, attr, None)
        if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
            continue
        if getattr(obj, "__module__", None) != mod_name:
            continue  # re-exported from elsewhere: documented once, where it is defined
        parts = [_doc(obj)]
        if inspect.isclass(obj):
            for meth_name, meth in sorted(vars(obj).items()):
                if not meth_name.startswith("_") and callable(meth):
                    parts.append(_doc(meth))
        add(f"{mod_name}.{attr}", "\n\n".join(p for p in parts if p))


if __name__ == "__main__":
    sys.stdout.write(json.dumps(collect()))
