"""The image installs the versions the tests run on: every version is pinned in pyproject.toml
(direct dependencies in their lists, the rest in `[tool.uv] constraint-dependencies`), the test
environment holds exactly those, and the Dockerfile installs from that file alone, naming no
package index. No lockfile is committed."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import distributions
from pathlib import Path

from tests.unit.test_deployment import DOCKERFILE, dockerfile_instructions

REPO_ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)(\[[^\]]*\])?==(?P<version>[^\s;]+)(\s*;.*)?$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements() -> list[str]:
    return [
        *PYPROJECT["project"]["dependencies"],
        *PYPROJECT["dependency-groups"]["dev"],
        *PYPROJECT["tool"]["uv"]["constraint-dependencies"],
    ]


def pins() -> dict[str, str]:
    found = {}
    for requirement in requirements():
        matched = REQUIREMENT.match(requirement)
        assert matched, f"{requirement!r} is not pinned with =="
        found[canonical(matched["name"])] = matched["version"]
    return found


def test_every_requirement_is_pinned_exactly_once() -> None:
    names = [canonical(re.split(r"[=\[ ;]", requirement)[0]) for requirement in requirements()]
    assert len(names) == len(set(names)), "a package is pinned twice"
    assert pins()


def test_the_test_environment_holds_exactly_the_pinned_versions() -> None:
    expected = pins()
    for distribution in distributions():
        name = canonical(distribution.metadata["Name"])
        if name == "orderworker":
            continue
        assert expected.get(name) == distribution.version, (
            f"{name} {distribution.version} is installed but pinned as {expected.get(name)}: "
            "refresh the pins (README, Dependencies)"
        )


def test_the_image_installs_from_pyproject_alone() -> None:
    instructions = dockerfile_instructions()
    copied = [args for name, args in instructions if name == "COPY"]
    assert any(args.split()[0] == "pyproject.toml" for args in copied)
    assert not any("uv.lock" in args or "requirements" in args for args in copied)
    installs = [args for name, args in instructions if name == "RUN" and "pip install" in args]
    assert all(re.search(r"pip install --no-cache-dir uv==[\d.]+$", args) for args in installs)
    syncs = [args for name, args in instructions if name == "RUN" and "uv sync" in args]
    assert syncs, "the Dockerfile installs with `uv sync`"
    for args in syncs:
        assert not re.search(r"--upgrade|--resolution|--prerelease|--index|--extra-index", args)


def test_no_package_index_is_named() -> None:
    assert "index" not in PYPROJECT["tool"]["uv"]
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert not re.search(r"UV_INDEX|UV_EXTRA_INDEX|PIP_INDEX|PIP_EXTRA_INDEX|https?://", text)
    assert not any("://" in requirement for requirement in requirements())
