"""A real English text set that ships with Python: sentences from standard-library docstrings, deterministic.

SpAtten (arXiv:2012.09852), Sec. 5 measures accuracy on real text; with no network here, the docstrings of a fixed
list of standard-library modules (and their public classes and functions) are the corpus. Code-like lines (doctests,
signatures, option tables) are filtered out so what remains reads as prose.
"""

from __future__ import annotations

import importlib
import inspect
import re

# A fixed list, so the corpus is the same on every run of the same Python.
MODULES = (
    "argparse", "asyncio", "base64", "bdb", "bisect", "calendar", "cmd", "codecs", "collections", "concurrent.futures",
    "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email", "enum",
    "filecmp", "fileinput", "fractions", "ftplib", "functools", "getpass", "gettext", "glob", "gzip", "heapq", "hmac",
    "http.client", "http.server", "imaplib", "inspect", "ipaddress", "json", "logging", "lzma", "mailbox", "netrc",
    "numbers", "optparse", "pathlib", "pdb", "pickle", "pkgutil", "plistlib", "poplib", "pprint", "pydoc", "queue",
    "random", "reprlib", "sched", "selectors", "shelve", "shlex", "shutil", "smtplib", "socketserver", "statistics",
    "string", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize", "trace",
    "traceback", "typing", "unittest", "urllib.parse", "urllib.request", "uuid", "warnings", "weakref", "zipfile",
)  # fmt: skip

_SENTENCE_END = re.compile(r"(?<=[a-z0-9\)][.!?])\s+(?=[A-Z])")
_CODE = re.compile(r"[=<>{}\[\]_\\|@#$*`~^]|\.\.\.|::|\(\)|->|\w\(|\b(def|self|None|True|False|import|return)\b")


def _docstrings(module_name: str) -> list[str]:
    try:
        mod = importlib.import_module(module_name)
    except ImportError:  # a module this build of Python lacks: skip it, the rest still define the corpus
        return []
    docs = [inspect.getdoc(mod) or ""]
    names = getattr(mod, "__all__", None) or sorted(n for n in vars(mod) if not n.startswith("_"))
    for name in names:
        obj = getattr(mod, name, None)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and getattr(obj, "__module__", "") == mod.__name__:
            docs.append(inspect.getdoc(obj) or "")
    return docs


def _paragraph_sentences(doc: str) -> list[str]:
    out = []
    for para in re.split(r"\n\s*\n", doc):
        lines = para.strip().splitlines()
        # Indented or symbol-heavy paragraphs are code, tables or option lists.
        if not lines or any(line.startswith((" ", "\t", ">>>", "-", "*", "+")) for line in lines):
            continue
        text = " ".join(line.strip() for line in lines)
        out.extend(_SENTENCE_END.split(text))
    return out


def _is_prose(s: str, min_words: int, max_words: int) -> bool:
    words = s.split()
    if not (min_words <= len(words) <= max_words) or _CODE.search(s):
        return False
    if not s[0].isupper() or s[-1] not in ".!?":
        return False
    letters = sum(c.isalpha() or c.isspace() for c in s)
    return letters >= 0.93 * len(s) and s.isascii()


def sentences(limit: int | None = None, min_words: int = 8, max_words: int = 40) -> list[str]:
    """Distinct prose sentences from the docstrings of `MODULES`, in a fixed order (first `limit` if given)."""
    seen: set[str] = set()
    out: list[str] = []
    for name in MODULES:
        for doc in _docstrings(name):
            for s in _paragraph_sentences(doc):
                s = " ".join(s.split())
                if s not in seen and _is_prose(s, min_words, max_words):
                    seen.add(s)
                    out.append(s)
                    if limit is not None and len(out) >= limit:
                        return out
    return out


def passages(limit: int | None = None, sentences_per_passage: int = 4) -> list[str]:
    """Consecutive sentences joined in groups of `sentences_per_passage` (longer inputs, where token pruning bites)."""
    pool = sentences(None if limit is None else limit * sentences_per_passage)
    groups = [pool[i : i + sentences_per_passage] for i in range(0, len(pool), sentences_per_passage)]
    out = [" ".join(g) for g in groups if len(g) == sentences_per_passage]
    return out if limit is None else out[:limit]
