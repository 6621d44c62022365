"""The cluster side of the evaluation's signing key (docs/cluster.md, step 3): the manifests' contracts on the
Secret `abstractinator-eval-signing-key` (a placeholder template, no Role grants it) and on the settings
ConfigMap's ABSTRACTINATOR_EVAL_PUBLIC_KEY (the placeholder or an Ed25519 public key, never a private key), tied
to the names the compiled pipeline and the gate use."""

from __future__ import annotations

import copy

import pytest

from components.infrastructure import signing
from pipelines import task_runtime, training
from tests.manifest_checker import check

OVERLAYS = ("overlays/dev", "overlays/gpu", "overlays/gpu-external-db", "overlays/multi-user")


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict]]:
    kubectl = check.find_kubectl()
    return {str(d.relative_to(check.ROOT)): check.build(d, kubectl) for d in check.kustomizations()}


@pytest.fixture(scope="module")
def key_pair(tmp_path_factory) -> tuple[str, str]:
    private, public = signing.generate_cluster_key(tmp_path_factory.mktemp("keys") / "eval-signing")
    return private.read_text(), public.read_text()


def test_the_checker_names_what_the_pipeline_and_the_gate_read() -> None:
    assert check.EVAL_SIGNING_SECRET == training.ClusterSettings().eval_signing_secret
    assert check.SETTINGS_CONFIG_MAP == task_runtime.SETTINGS_CONFIG_MAP
    assert check.EVAL_PUBLIC_KEY == signing.PUBLIC_KEY_ENV
    assert check.PLACEHOLDER == signing.PLACEHOLDER


def test_the_signing_secret_template_holds_the_key_the_evaluate_task_mounts_and_no_role_grants_it(built) -> None:
    templates = {s["metadata"]["name"]: s for s in built["secrets"]}
    template = templates[check.EVAL_SIGNING_SECRET]
    assert set(template["stringData"]) == {training.EVAL_KEY_FILE}
    assert template["stringData"][training.EVAL_KEY_FILE].startswith(check.PLACEHOLDER)
    for name in OVERLAYS:
        for obj in built[name]:
            for rule in obj.get("rules", []):
                assert check.EVAL_SIGNING_SECRET not in rule.get("resourceNames", []), (name, obj["metadata"])
            assert not (obj["kind"] == "Secret"), name


def test_every_overlay_ships_the_public_key_placeholder_and_the_gate_says_so(built, monkeypatch) -> None:
    for name in OVERLAYS:
        settings = [o for o in built[name] if o["metadata"]["name"] == check.SETTINGS_CONFIG_MAP]
        assert len(settings) == 1 and check.settings_problems(settings[0]) == []
        value = settings[0]["data"][signing.PUBLIC_KEY_ENV]
        assert value.startswith(check.PLACEHOLDER)
    monkeypatch.setenv(signing.PUBLIC_KEY_ENV, value)  # a cluster where nobody replaced it: refused, and why
    with pytest.raises(signing.SigningError, match="still the manifests' placeholder"):
        signing.verify(b"evidence", "AAAA")


def test_the_settings_check_takes_a_public_key_and_refuses_a_private_one_or_none(built, key_pair) -> None:
    private_pem, public_pem = key_pair
    settings = next(o for o in built["overlays/gpu"] if o["metadata"]["name"] == check.SETTINGS_CONFIG_MAP)
    filled = copy.deepcopy(settings)
    filled["data"][check.EVAL_PUBLIC_KEY] = public_pem
    assert check.settings_problems(filled) == []
    label = "ConfigMap/kubeflow/abstractinator-pipeline-settings"
    filled["data"][check.EVAL_PUBLIC_KEY] = private_pem
    assert check.settings_problems(filled) == [
        f"{label}: ABSTRACTINATOR_EVAL_PUBLIC_KEY holds a PRIVATE key (it belongs in abstractinator-eval-signing-key)"
    ]
    filled["data"][check.EVAL_PUBLIC_KEY] = "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n"
    assert check.settings_problems(filled) == [
        f"{label}: ABSTRACTINATOR_EVAL_PUBLIC_KEY is neither a REPLACE_ME placeholder nor an Ed25519 PEM"
    ]
    del filled["data"][check.EVAL_PUBLIC_KEY]
    assert check.settings_problems(filled) == [
        f"{label}: no ABSTRACTINATOR_EVAL_PUBLIC_KEY (the public key of `abstractinator registry keygen`)"
    ]


def test_a_role_granting_the_signing_secret_or_a_template_holding_a_real_key_is_a_problem(key_pair) -> None:
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "r"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
    }
    role["rules"][0]["resourceNames"] = ["abstractinator-s3", check.EVAL_SIGNING_SECRET]
    assert check.role_problems(role) == [
        "Role/r: grants abstractinator-eval-signing-key; only the evaluate task may hold it (mounted by the kubelet, "
        "no Role needed)"
    ]
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": check.EVAL_SIGNING_SECRET},
        "stringData": {training.EVAL_KEY_FILE: key_pair[0]},
    }
    assert check.secret_problems(secret, templates=True) == [
        "Secret/abstractinator-eval-signing-key: ed25519.pem holds a value that is not a REPLACE_ME placeholder"
    ]
