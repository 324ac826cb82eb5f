"""What ships: the wheel and the image carry the product only; test tools have their own lock.

The wheel is really built (setuptools' build backend, as ``pip wheel`` / ``uv build`` call it, on a
copy of the working tree, no network: ~3 s); the image cannot be built here (no Docker engine), so
its Dockerfile's COPY lines are checked instead.
"""

import ast
import importlib.metadata as md
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT_PACKAGES = {"vertex_imbalanced", "components", "pipelines", "sql"}
# What the image may copy from the build context: the lock, the project metadata, the packages.
IMAGE_SOURCES = {"requirements.lock", "pyproject.toml", "README.md", *PRODUCT_PACKAGES}
# Imported by product code but locked elsewhere: the legacy tensorflow-io backend (DESIGN.md §2),
# imported lazily by reading/sources/tfio_source.py only in .venv-legacy.
LOCKED_ELSEWHERE = {"tensorflow-io": "requirements-legacy.lock"}


def normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(path):
    """``{normalized name: version}`` of a uv-compiled lock file."""
    pins = {}
    for line in (ROOT / path).read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(\S+)", line):
            pins[normalize(m[1])] = m[2]
    return pins


def requirement_names(path):
    names = set()
    for line in (ROOT / path).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(normalize(re.split(r"[\[=<>!~; ]", line)[0]))
    return names


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory):
    """``{path: bytes}`` of the wheel built from a copy of the working tree."""
    src = tmp_path_factory.mktemp("src") / "tree"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv*",
            "build",
            "dist",
            "local_outputs",
            "*.egg-info",
            "__pycache__",
            ".*_cache",
        ),
    )
    out = tmp_path_factory.mktemp("wheel")
    build = (
        "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", build, str(out)],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with zipfile.ZipFile(out / done.stdout.strip().splitlines()[-1]) as whl:
        return {name: whl.read(name) for name in whl.namelist()}


def test_wheel_holds_the_product_packages_only(wheel_files):
    top = {name.split("/")[0] for name in wheel_files if ".dist-info/" not in name}
    assert top == PRODUCT_PACKAGES
    assert "vertex_imbalanced/warehouse/engines.py" in wheel_files
    assert any(name.startswith("sql/") and name.endswith(".sql") for name in wheel_files)
    assert not [n for n in wheel_files if re.search(r"(^|/)(fakes|tests?|bench|conftest)", n)]


class ModuleOwners:
    """Which installed distribution provides a module (namespace packages resolved by file)."""

    def __init__(self):
        self.top = md.packages_distributions()
        self.files = {}

    def __call__(self, module):
        """The distribution that installs ``module`` in this env, or None when none does."""
        top = module.split(".")[0]
        dists = sorted(set(self.top.get(top, [])))
        if len(dists) <= 1:
            return dists[0] if dists else None
        if top not in self.files:  # e.g. google.*: the longest installed module prefix decides
            owners = self.files[top] = {}
            for dist in dists:
                for file in md.distribution(dist).files or ():
                    if file.parts[-1].endswith((".py", ".so")):
                        stem = file.parts[-1].split(".")[0]
                        names = file.parts[:-1] if stem == "__init__" else (*file.parts[:-1], stem)
                        owners.setdefault(".".join(names), dist)
        parts = module.split(".")
        prefixes = (".".join(parts[:k]) for k in range(len(parts), 0, -1))
        return next((self.files[top][p] for p in prefixes if p in self.files[top]), None)


def imported_modules(source):
    """Absolute module names a file imports (``from a.b import c`` gives ``a.b.c`` and ``a.b``)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
            yield node.module


def test_every_third_party_import_of_the_wheel_is_in_the_product_lock(wheel_files):
    product = lock_pins("requirements.lock")
    module_owner = ModuleOwners()
    problems = set()
    for path, data in wheel_files.items():
        if not path.endswith(".py"):
            continue
        for module in imported_modules(data):
            parts = module.split(".")
            if parts[0] in sys.stdlib_module_names or parts[0] in PRODUCT_PACKAGES:
                continue
            owner = module_owner(module)
            if owner is None:
                if "." not in module:  # (a.b.c may name an attribute, not a module)
                    problems.add(f"{path}: {module} is not installed in this env")
                continue
            name = normalize(owner)
            if name in LOCKED_ELSEWHERE:
                assert name in lock_pins(LOCKED_ELSEWHERE[name])
            elif name not in product:
                problems.add(f"{path}: {module} comes from {owner}, not in requirements.lock")
    assert not sorted(problems)


def test_test_tools_are_locked_apart_and_both_locks_agree():
    product, dev = lock_pins("requirements.lock"), lock_pins("requirements-dev.lock")
    tools = requirement_names("requirements-dev.in")
    assert {"pytest", "pytest-timeout", "ruff"} <= tools
    assert not tools & product.keys(), "test/dev tools must not be in the product lock"
    assert not tools & requirement_names("requirements.in")
    assert tools <= dev.keys()
    assert {name: dev[name] for name in dev.keys() & product.keys()} == {
        name: product[name] for name in dev.keys() & product.keys()
    }, "requirements-dev.lock disagrees with requirements.lock: run make lock"
    assert "-c requirements.lock" in (ROOT / "requirements-dev.in").read_text().splitlines()


def test_pyproject_dev_extra_is_the_dev_requirements():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert {normalize(r) for r in project["optional-dependencies"]["dev"]} == requirement_names(
        "requirements-dev.in"
    )
    deps = {normalize(re.split(r"[\[=<>!~; ]", r)[0]) for r in project["dependencies"]}
    assert deps == requirement_names("requirements.in")


def dockerfile_instructions():
    """``(KEYWORD, args)`` per instruction; comment lines dropped first, as Docker does."""
    lines = [
        ln
        for ln in (ROOT / "Dockerfile").read_text().splitlines()
        if not ln.strip().startswith("#")
    ]
    for line in re.sub(r"\\\n", " ", "\n".join(lines)).splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            yield keyword.upper(), rest.split()


def test_image_copies_only_product_paths():
    copied = set()
    for keyword, args in dockerfile_instructions():
        assert keyword != "ADD", "use COPY: ADD fetches URLs and unpacks archives"
        if keyword == "COPY" and not any(a.startswith("--from") for a in args):
            sources = [a.rstrip("/") for a in args[:-1] if not a.startswith("--")]
            assert set(sources) <= IMAGE_SOURCES, f"COPY {args} copies a non-product path"
            copied.update(sources)
    assert copied >= PRODUCT_PACKAGES, "every package of the wheel must reach the image"
    runs = " ".join(
        " ".join(args) for keyword, args in dockerfile_instructions() if keyword == "RUN"
    )
    assert "requirements.lock" in runs and "requirements-dev" not in runs
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"fakes", "tests", "bench"} <= set(ignored)


def test_image_is_beams_sdk_image_of_the_locked_beam_version():
    instructions = list(dockerfile_instructions())
    args = dict(a.split("=", 1) for k, v in instructions if k == "ARG" for a in v if "=" in a)
    stages = [v[0] for k, v in instructions if k == "FROM"]
    assert stages and all(s == "${BEAM_IMAGE}" for s in stages), stages
    beam = lock_pins("requirements.lock")["apache-beam"]
    assert args["BEAM_IMAGE"] == f"apache/beam_python3.11_sdk:{beam}"
    runs = " ".join(" ".join(v) for k, v in instructions if k == "RUN")
    assert f"apache_beam.__version__ == '{beam}'" in runs
    env = " ".join(" ".join(v) for k, v in instructions if k == "ENV")
    assert "RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT=1" in env  # else boot hides /opt/venv
    assert not [k for k, _ in instructions if k in ("ENTRYPOINT", "CMD")]  # keep Beam's boot
