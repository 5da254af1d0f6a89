"""requirements/lock.txt: the one source of versions for CI, `make install` and the worker images.

The lock must satisfy pyproject.toml (else `make lock` was not run after a dependency change), and
the environment these tests run in must be the lock's (else an install step bypassed it).
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sysconfig
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"


def locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", LOCK.read_text(), re.MULTILINE)
    return {canonicalize_name(name): version for name, version in pins}


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [
        Requirement(text) for text in [*project["dependencies"], *extras["dev"], *extras["gpu"]]
    ]


def test_the_lock_satisfies_every_requirement_of_the_project() -> None:
    pins = locked()
    constraints = (ROOT / "requirements" / "constraints.in").read_text()
    for requirement in project_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in the lock: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"the lock has {name}=={pins[name]}, pyproject.toml asks for {requirement}: "
            "run `make lock`"
        )
    # The torch the worker tests run on: the CPU build of the release the constraints name.
    (torch,) = re.findall(r"^torch==(\S+)", constraints, re.MULTILINE)
    assert pins["torch"] == f"{torch}+cpu"


def test_the_environment_under_test_is_the_lock() -> None:
    """What `make install-gpu` made: every locked package that is installed has its locked
    version, and everything videokit requires (with its dev and gpu extras) is locked."""
    pins = locked()
    # The environment's own site-packages only: once something imports setuptools (torch's
    # inductor does, compiling on the CPU), its vendored copies of packaging, zipp and others
    # are on sys.path too, at setuptools' versions, and they are not what was installed.
    paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    installed = {
        canonicalize_name(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions(path=paths)
    }
    wrong = {
        name: f"{installed[name]} installed, {version} locked"
        for name, version in pins.items()
        if name in installed and installed[name] != version
    }
    assert not wrong, f"installed versions differ from requirements/lock.txt: {wrong}"
    for requirement in project_requirements():
        assert canonicalize_name(requirement.name) in installed, requirement


def test_every_install_in_the_makefile_is_constrained_by_the_lock() -> None:
    # `make -n` prints the commands the install targets would run, whatever their state.
    result = subprocess.run(
        ["make", "-n", "-B", "install-gpu", "VENV=/nonexistent-venv"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    installs = [line for line in result.stdout.splitlines() if " pip install " in line]
    assert len(installs) == 2, result.stdout
    for line in installs:
        assert "--constraint requirements/lock.txt" in line, line
