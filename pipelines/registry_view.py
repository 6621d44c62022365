"""Tables of the registry state and the gate's history, for people (run-local, make demo, registry status)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from components.infrastructure.redaction import redact
from components.infrastructure.storage import fetch_file
from components.infrastructure.tracking import ui_command
from components.registry.attestation import ATTESTATION_FILE, SIGNATURE_FILE, verified
from components.registry.gate_evidence import EvidenceError, attestation_of
from components.registry.promote import (
    CHALLENGER,
    CHAMPION,
    RegistryError,
    alias_version,
    client_for,
    history,
    metrics_of,
    status,
)
from configs.errors import UserError

SHOWN_METRICS = ("test_bits_per_byte", "val_bits_per_byte", "live_code_share_L0", "reconstruction_exact_match_bytes")


def status_table(state: dict) -> str:
    lines = [
        f"model {state['model']}: "
        + (", ".join(f"{a} -> v{v}" for a, v in sorted(state["aliases"].items())) or "no aliases")
    ]
    header = f"{'version':>7}  {'aliases':<22}{'decision':<18}" + "".join(f"{m:>{len(m) + 2}}" for m in SHOWN_METRICS)
    lines.append(header)
    for version in state["versions"]:
        metrics = "".join(
            f"{version['metrics'][m]:>{len(m) + 2}.4f}" if m in version["metrics"] else f"{'-':>{len(m) + 2}}"
            for m in SHOWN_METRICS
        )
        lines.append(
            f"{version['version']:>7}  {','.join(version['aliases']) or '-':<22}"
            f"{version['decision'] or '-':<18}{metrics}"
        )
        if version["reasons"]:
            lines.append(f"{'':>9}{version['reasons']}")
        if version.get("lineage"):
            lines.append(f"{'':>9}lineage: " + ", ".join(f"{k}={v}" for k, v in version["lineage"].items()))
    for record in state.get("pending", []):
        lines.append(
            f"pending since {record['time']} UTC: {record['action']} v{record['version']} (audit run "
            f"{record['run_id']}), completed by the next gate run (promote or rollback) if its evidence still "
            "decides it so"
        )
    return "\n".join(lines)


def history_table(records: list[dict]) -> str:
    if not records:
        return "no gate decisions yet"
    lines = [f"{'time (UTC)':<20} {'version':>7}  {'action':<17}{'champion':<12}{'state':<11}reasons"]
    for r in records:
        lines.append(
            f"{r['time']:<20} {r['version']:>7}  {r['action']:<17}"
            f"{r['champion_before'] + ' -> ' + r['champion_after']:<12}{r.get('state') or '-':<11}"
            f"{r['reasons']}"
        )
    return "\n".join(lines)


def paired_table(version, attestation) -> list[str]:
    """Challenger and champion on the same bytes, from the version's verified attestation."""
    return paired_lines(f"challenger v{version.version}", attestation)


def paired_lines(challenger: str, attestation) -> list[str]:
    """The paired comparison in a verified attestation; `challenger` names the model it scored."""
    if attestation.champion_problem:
        return [f"champion not scored beside the {challenger}: {attestation.champion_problem}"]
    paired = attestation.paired
    if paired is None:
        return [f"no champion to compare the {challenger} with: its own numbers decide"]
    golden = "test split + golden set" if attestation.golden_sha256 else "test split"
    return [
        f"champion versus challenger on the same bytes ({golden}: {paired.blocks} blocks, {paired.bytes} bytes):",
        f"  {challenger:<24}{paired.challenger_bits_per_byte:10.4f} bits per byte",
        f"  {'champion v' + paired.champion_version:<24}{paired.champion_bits_per_byte:10.4f} bits per byte",
        f"  {'difference':<24}{paired.difference:+10.4f}  {paired.confidence:.0%} interval "
        f"[{paired.low:+.4f}, {paired.high:+.4f}]",
    ]


def this_run_table(evaluation: dict) -> str:
    """What this run's evaluation measured, from its own signed attestation (beside its report): a run that
    re-evaluates a model already registered (`--no-skip-unchanged` with nothing changed) registers nothing new,
    so the registry's newest version still shows its first evaluation."""
    from pipelines.step_results import EvaluateStepResult, StepResultError

    try:
        result = EvaluateStepResult.read(evaluation, "this run's evaluation")
    except StepResultError as error:
        return f"this run's evaluation cannot be shown: {error}"
    report_uri = result.report_uri
    lines = [f"this run's evaluation ({report_uri}):"]
    folder = report_uri.rsplit("/", 1)[0]
    try:
        with tempfile.TemporaryDirectory(prefix="abstractinator-attestation-") as tmp:
            data = fetch_file(f"{folder}/{ATTESTATION_FILE}", Path(tmp) / ATTESTATION_FILE).read_bytes()
            signature = fetch_file(f"{folder}/{SIGNATURE_FILE}", Path(tmp) / SIGNATURE_FILE).read_text()
        attestation = verified(data, signature)
    except (OSError, UserError, ValueError) as error:
        return "\n".join([*lines, f"  no verified attestation beside it: {error}"])
    if attestation.report_sha256 != result.report_hash.removeprefix("sha256:"):  # an older attestation, copied
        return "\n".join([*lines, "  the attestation beside it is for another report: not shown"])
    challenger = f"challenger {attestation.challenger_weights_sha256[:12]}"  # its weights: maybe no version yet
    return "\n".join([*lines, *paired_lines(challenger, attestation)])


def eval_table(version, attestation=None) -> str:
    """Every eval metric of one model version (its `metric.*` display tags), one per line, and the paired
    comparison its evaluation made (when its verified `attestation` is given)."""
    metrics = metrics_of(version)
    width = max((len(k) for k in metrics), default=10)
    lines = [f"eval metrics of v{version.version}:"]
    lines += [f"  {key:<{width}}  {value:10.4f}" for key, value in sorted(metrics.items())]
    if attestation is not None:
        lines += paired_table(version, attestation)
    report = (version.tags or {}).get("report_uri")
    if report:
        lines.append(f"  report: {report} (and report.md beside it)")
    return "\n".join(lines)


def print_registry(
    tracking_uri: str, model_name: str, registry_flags: str = "", evaluation: dict | None = None
) -> None:
    """The registry's state and history; with `evaluation` (a run's evaluate result), that evaluation's
    champion-versus-challenger numbers first."""
    if evaluation is not None:
        print(this_run_table(evaluation))
        print()
    client = client_for(tracking_uri)
    try:
        state = status(client, model_name)
    except RegistryError as error:
        print(f"registry: {error}")
        return
    latest = alias_version(client, model_name, CHALLENGER)
    if latest is not None:
        try:
            attestation = attestation_of(client, latest)
        except EvidenceError as error:
            attestation = None
            print(f"no verified evidence: {error}")
        print(eval_table(latest, attestation if evaluation is None else None))  # else shown above, fresher
        print()
    print(status_table(state))
    print()
    print(history_table(history(client, model_name)))
    print()
    print("look further:")
    print(f"  {ui_command(tracking_uri)}")
    print(f"  abstractinator registry status --model-name {model_name} {registry_flags}".rstrip())
    print(f"  abstractinator registry history --model-name {model_name} {registry_flags}".rstrip())
    print(
        f'  MLFLOW_TRACKING_URI={redact(tracking_uri)} python -c "import mlflow; '
        f"m = mlflow.pyfunc.load_model('models:/{model_name}@{CHAMPION}'); print(m.predict(['Hello there']))\""
    )
