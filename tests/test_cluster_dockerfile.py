"""docker/Dockerfile (no Docker engine on these machines, so it is linted, not built): hadolint and checkov, the
standard linters `make manifests-check` runs, pass on it and fail on the mistakes they exist to catch; and what
no linter knows, its agreement with the rest of the project (torch pin, the manifests' runAsUser, constraints vs
pyproject pins, .dockerignore, no secrets, online by default)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.manifest_checker import check, needs_tools

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


@needs_tools
def test_hadolint_and_checkov_pass_on_the_dockerfile():
    assert check.hadolint(DOCKERFILE) == []
    assert check.checkov([DOCKERFILE], "dockerfile") == []
    assert check.dockerfile_suppression_problems(DOCKERFILE) == []


@needs_tools
def test_hadolint_and_checkov_fail_on_a_careless_dockerfile(tmp_path):
    careless = tmp_path / "Dockerfile"
    careless.write_text(
        "FROM python:latest\nWORKDIR app\nADD . /app\nRUN pip install requests\n"
        "RUN cd /app && apt-get install -y curl\n"
    )
    codes = {line.split()[2] for line in check.hadolint(careless)}
    # latest tag, relative WORKDIR, ADD for files, unpinned pip, pip cache, cd in RUN, apt without pins/recommends
    assert {"DL3007", "DL3000", "DL3020", "DL3013", "DL3042", "DL3003", "DL3008", "DL3015"} <= codes, codes
    failed = {line.split()[1] for line in check.checkov([careless], "dockerfile")}
    assert {"CKV_DOCKER_3", "CKV_DOCKER_7"} <= failed, failed  # no USER; latest tag
    skipped = tmp_path / "skipped" / "Dockerfile"
    skipped.parent.mkdir()
    skipped.write_text("# checkov:skip=CKV_DOCKER_2\nFROM python:3.11.7-slim\nUSER 10001\n")
    assert check.checkov([skipped], "dockerfile") == []  # checkov honours the skip ...
    assert check.dockerfile_suppression_problems(skipped) == [  # ... and the project refuses it without a reason
        f"{skipped}:1: a suppression needs its reason on the same line: # checkov:skip=CKV_DOCKER_2"
    ]


def test_base_torch_matches_the_pyproject_pin(parsed):
    (base,) = [args for keyword, args in parsed if keyword == "FROM"]
    assert base.startswith(f"pytorch/pytorch:{pyproject_pins()['torch']}-cuda"), base
    assert base.endswith("-runtime")  # not the multi-GB devel image


def test_runs_as_the_non_root_user_of_the_manifests(parsed):
    users = [(i, args) for i, (keyword, args) in enumerate(parsed) if keyword == "USER"]
    assert users, "no USER instruction: the image would run as root"
    index, user = users[-1]
    assert all(keyword not in ("RUN", "COPY", "ADD") for keyword, _ in parsed[index + 1 :]), "USER must come last"
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


def test_pip_installs_against_the_constraints_and_checks_them(parsed):
    run = " ".join(args for keyword, args in parsed if keyword == "RUN")
    assert "--constraint docker/constraints.txt" in run and "pip check" in run


def test_constraints_agree_with_pyproject_pins():
    constraints = {}
    for line in (REPO / "docker/constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            constraints[name.lower().replace("_", "-")] = version
    assert "torch" not in constraints  # the base image's CUDA build, not the CPU wheel of the venv
    mismatched = {
        name: (pin, constraints[name])
        for name, pin in pyproject_pins().items()
        if name in constraints and constraints[name] != pin
    }
    assert mismatched == {}
    missing = sorted(set(pyproject_pins()) - set(constraints) - {"torch"})
    assert missing == [], f"pinned in pyproject but not in constraints (regenerate them): {missing}"


def test_dockerignore_keeps_out_environments_and_secrets_but_not_what_is_copied(parsed):
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".data", "checkpoints", "mlruns", "*.pt", ".env"} <= ignored
    for keyword, args in parsed:
        if keyword == "COPY":
            for source in args.split()[:-1]:
                assert source.rstrip("/") not in ignored, f"COPY {source} is excluded by .dockerignore"
                assert (REPO / source).exists(), f"COPY {source}: no such path"


def test_the_image_carries_the_pinned_archives_after_installing_the_code(parsed):
    """The prepare task needs no internet: the build fetches and checks the pinned archives with the project's
    own code (so after the install), into the folder the image's ABSTRACTINATOR_CARRIED_ARCHIVES_DIR names."""
    keywords = [keyword for keyword, _ in parsed]
    runs = [(i, args) for i, (keyword, args) in enumerate(parsed) if keyword == "RUN"]
    (carry,) = [(i, args) for i, args in runs if "components.data.carried_archives" in args]
    folder = carry[1].split("components.data.carried_archives", 1)[1].split()[0]
    install = next(i for i, args in runs if "pip install" in args)
    assert install <= carry[0] < keywords.index("USER")
    assert carry[0] > install or carry[1].index("pip install") < carry[1].index("carried_archives")
    assert f"ABSTRACTINATOR_CARRIED_ARCHIVES_DIR={folder}" in " ".join(
        args for keyword, args in parsed[carry[0] :] if keyword == "ENV"
    )
    assert folder.startswith("/") and not folder.startswith("/tmp")  # not under a scratch mount
