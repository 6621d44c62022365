"""docker/Dockerfile, checked by parsing it (no Docker engine on these machines): hadolint-style rules (pinned base,
no `latest`, non-root USER last, no secrets, pip without cache, COPY not ADD, absolute WORKDIR) and agreement with
the rest of the project (torch pin, the manifests' runAsUser, constraints vs pyproject pins, .dockerignore)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments and parser directives dropped."""
    result, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        current += " " + stripped.removesuffix("\\").strip() if current else stripped.removesuffix("\\").strip()
        if not stripped.endswith("\\"):
            keyword, _, arguments = current.partition(" ")
            result.append((keyword.upper(), arguments.strip()))
            current = ""
    assert not current, "Dockerfile ends inside a continued line"
    return result


@pytest.fixture(scope="module")
def parsed() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for items in project["optional-dependencies"].values():
        requirements += [r for r in items if not r.startswith("abstractinator[")]
    pins = {}
    for requirement in requirements:
        name, _, version = requirement.partition("==")
        pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_parser_joins_continuations_and_drops_comments():
    text = "# c\nFROM a:1\nRUN x \\\n    # inner\n    && y\nUSER 1\n"
    assert instructions(text) == [("FROM", "a:1"), ("RUN", "x && y"), ("USER", "1")]


def test_base_image_is_pinned_and_never_latest(parsed):
    (base,) = [args for keyword, args in parsed if keyword == "FROM"]
    image = base.split()[0]
    assert "$" not in image, "the base image must be literal so it can be checked"
    name, _, tag = image.partition("@")[0].rpartition(":")
    assert "@sha256:" in image or (name and tag and tag != "latest"), image
    assert not re.search(r":latest\b", DOCKERFILE.read_text())


def test_base_torch_matches_the_pyproject_pin(parsed):
    (base,) = [args for keyword, args in parsed if keyword == "FROM"]
    assert base.startswith(f"pytorch/pytorch:{pyproject_pins()['torch']}-cuda"), base
    assert base.endswith("-runtime")  # not the multi-GB devel image


def test_runs_as_the_non_root_user_of_the_manifests(parsed):
    users = [(i, args) for i, (keyword, args) in enumerate(parsed) if keyword == "USER"]
    assert users, "no USER instruction: the image would run as root"
    index, user = users[-1]
    assert all(keyword not in ("RUN", "COPY", "ADD") for keyword, _ in parsed[index + 1:]), "USER must come last"
    uid = user.split(":")[0]
    assert uid not in ("root", "0") and uid.isdigit() and int(uid) >= 1000
    mlflow = yaml.safe_load((REPO / "manifests/base/mlflow.yaml").read_text().split("\n---\n")[0])
    assert mlflow["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)


def test_no_secrets_and_online_by_default(parsed):
    for keyword, args in parsed:
        if keyword in ("ENV", "ARG"):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0].split("=")[0]]
            for name in names:
                assert not re.search(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL", name, re.I), name
    env = " ".join(args for keyword, args in parsed if keyword == "ENV")
    assert "HF_HUB_OFFLINE=0" in env and "HF_DATASETS_OFFLINE=0" in env


def test_hadolint_style_rules(parsed):
    keywords = [keyword for keyword, _ in parsed]
    assert "ADD" not in keywords  # DL3020: COPY for local files
    for keyword, args in parsed:
        if keyword == "WORKDIR":
            assert args.startswith("/"), "DL3000: WORKDIR must be absolute"
        if keyword == "RUN":
            assert "sudo " not in args  # DL3004
            assert not re.search(r"(^|&&|;)\s*cd\s", args)  # DL3003: use WORKDIR
            if "pip install" in args:
                assert "--no-cache-dir" in args  # DL3042
                assert "--constraint docker/constraints.txt" in args  # transitive pins
            if "apt-get install" in args:
                assert "--no-install-recommends" in args and "rm -rf /var/lib/apt/lists" in args  # DL3015/DL3009
    run = " ".join(args for keyword, args in parsed if keyword == "RUN")
    assert "pip check" in run


def test_constraints_agree_with_pyproject_pins():
    constraints = {}
    for line in (REPO / "docker/constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            constraints[name.lower().replace("_", "-")] = version
    assert "torch" not in constraints  # the base image's CUDA build, not the CPU wheel of the venv
    mismatched = {name: (pin, constraints[name]) for name, pin in pyproject_pins().items()
                  if name in constraints and constraints[name] != pin}
    assert mismatched == {}
    missing = sorted(set(pyproject_pins()) - set(constraints) - {"torch"})
    assert missing == [], f"pinned in pyproject but not in constraints (regenerate them): {missing}"


def test_dockerignore_keeps_out_environments_and_secrets_but_not_what_is_copied(parsed):
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", ".data", "checkpoints", "mlruns", "*.pt", ".env"} <= ignored
    for keyword, args in parsed:
        if keyword == "COPY":
            for source in args.split()[:-1]:
                assert source.rstrip("/") not in ignored, f"COPY {source} is excluded by .dockerignore"
                assert (REPO / source).exists(), f"COPY {source}: no such path"
