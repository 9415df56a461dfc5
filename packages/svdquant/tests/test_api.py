"""The public API resolves lazily and `import svdquant` stays free of torch."""

from __future__ import annotations

import subprocess
import sys

import svdquant


def test_every_public_name_resolves() -> None:
    for name in svdquant.__all__:
        assert getattr(svdquant, name) is not None, name


def test_import_does_not_import_torch() -> None:
    code = "import sys, svdquant; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
