"""The evaluation step's paired comparison and its signed attestation (pipelines/step_evaluate.py `evaluate_step`
calls it).

The challenger and the registry's current champion are scored in one evaluation on the same bytes: the current
test split plus the golden set (the Canterbury texts unless the run says `--no-canterbury`; then the test split
alone), each cut to the same max_eval_bytes and in the same windows. The champion's weights are its registered
`artifacts/model.pt`, whose sha256 must equal what its own verified attestation says it scored. A champion that
cannot be loaded or scored (evidence refused, artifact missing, other windows: another sequence_length) is not
compared with anything: the reason goes into the attestation and the gate refuses the challenger with it.

What is written beside the report: `paired_bits.json` (both models' bits of every block, and its bytes),
`attestation.json` and `attestation.sig` (components/registry/attestation.py), signed with the evaluation's key.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path

from components.evaluation.evaluate import EvaluateParams, EvaluateResult, evaluate
from components.infrastructure.atomic_files import write_text_atomic
from components.infrastructure.logs import get_logger
from components.infrastructure.redaction import one_line
from components.registry.attestation import PAIRED_BITS_FILE, WEIGHTS_FILE, Attestation, ScoredChampion, write_signed
from components.registry.gate_evidence import EvidenceError, read_evidence, sha256_of
from components.registry.paired_interval import PairedResult, paired_interval
from configs.errors import UserError

log = get_logger(__name__)
SPLITS = ("val", "test")
PAIRED_SPLIT = "test"


class ChampionProblem(Exception):
    """Why the champion cannot be scored beside the challenger (becomes the attestation's champion_problem)."""


def paired_names(block_bits: dict) -> list[str]:
    """What both models are scored on: the test split and every golden text (never the validation split)."""
    return [name for name in block_bits if name == PAIRED_SPLIT or name not in SPLITS]


def golden_sha256(report: dict) -> str:
    """sha256 over the golden texts scored (each one's name and the sha256 of its bytes), "" when there are none."""
    texts = {name: entry["sha256"] for name, entry in report["compression"].items() if name not in SPLITS}
    if not texts:
        return ""
    return hashlib.sha256(json.dumps(texts, sort_keys=True).encode()).hexdigest()


def champion_weights(client, model_name: str, folder: Path) -> tuple[ScoredChampion | None, Path | None]:
    """The champion of `model_name` and its verified weights file in `folder`; (None, None) without a champion;
    ChampionProblem when it has no verifiable evidence or its registered weights are not what that evidence says."""
    from mlflow.artifacts import download_artifacts

    from components.registry.promote import CHAMPION, alias_version

    champion = alias_version(client, model_name, CHAMPION)
    if champion is None:
        return None, None
    label = f"champion v{champion.version}"
    try:
        attestation = read_evidence(client, model_name, champion).attestation  # its weights hash checked too
    except EvidenceError as error:
        raise ChampionProblem(f"champion {error}") from None  # "champion vN: why"
    location = client.get_model_version_download_uri(model_name, str(champion.version)).rstrip("/")
    local = Path(
        download_artifacts(
            artifact_uri=f"{location}/artifacts/{WEIGHTS_FILE}", dst_path=str(folder), tracking_uri=client.tracking_uri
        )
    )
    if sha256_of(local) != attestation.challenger_weights_sha256:  # changed between the two reads
        raise ChampionProblem(f"{label}: its registered weights are not the ones its evaluation scored")
    return ScoredChampion(version=str(champion.version), weights_sha256=attestation.challenger_weights_sha256), local


def paired_blocks(challenger: dict, champion: dict, names: list[str]) -> tuple[list[float], list[float], list[int]]:
    """Both models' bits on the same blocks (windows of the same texts); ChampionProblem when the windows differ."""
    ours, theirs, sizes = [], [], []
    for name in names:
        a, b = challenger.get(name), champion.get(name)
        if b is None or len(a) != len(b) or any(x[0] != y[0] for x, y in zip(a, b, strict=True)):
            raise ChampionProblem(f"scored {name} in other windows (another sequence_length?): not comparable")
        sizes += [int(x[0]) for x in a]
        ours += [float(x[1]) for x in a]
        theirs += [float(y[1]) for y in b]
    return ours, theirs, sizes


def _score_champion(path: Path, params: EvaluateParams, folder: Path) -> EvaluateResult:
    changes = dict(checkpoint=str(path), out_dir=folder, splits=[PAIRED_SPLIT], tasks=[], tracking=False)
    return evaluate(params.model_copy(update={**changes, "reconstruction_windows": 0, "quality_benchmark": None}))


def attest(
    model_name: str,
    tracking_uri: str | None,
    params: EvaluateParams,
    result: EvaluateResult,
    weights: Path,
    code_identity: str,
    config_hash: str,
) -> list[Path]:
    """Score the champion beside `result` (the challenger's evaluation of `weights`), write paired_bits.json and the
    signed attestation into the evaluation folder; returns the files written."""
    from components.registry.promote import client_for
    from components.registry.pyfunc_model import model_code_files

    report = json.loads(result.report_json.read_text())
    names = paired_names(result.block_bits)
    champion, problem, paired, blocks = None, "", None, {}
    if model_name:
        with tempfile.TemporaryDirectory(prefix="abstractinator-champion-") as tmp:
            try:
                champion, path = champion_weights(client_for(tracking_uri), model_name, Path(tmp))
                if path is not None:
                    log.info("scoring_champion", version=champion.version, texts=", ".join(names))
                    started = time.monotonic()
                    theirs = _score_champion(path, params, Path(tmp) / "champion").block_bits
                    paired = _paired(result.block_bits, theirs, names, champion.version)
                    blocks = {name: {"bytes_bits": result.block_bits[name], "champion": theirs[name]} for name in names}
                    log.info("champion_scored", seconds=round(time.monotonic() - started, 1), **paired.model_dump())
            except (ChampionProblem, UserError, ValueError, RuntimeError, OSError) as error:
                version = champion.version if champion else "?"
                problem = (
                    str(error) if isinstance(error, ChampionProblem) else f"champion v{version}: {one_line(error)}"
                )
                log.warning("champion_not_scored", reason=problem)
            except Exception as error:  # a registry or artifact store that fails: the champion was not scored
                problem = f"champion: {type(error).__name__}: {one_line(error)}"
                log.warning("champion_not_scored", reason=problem)
    folder = Path(result.out_dir)
    bits_file = write_text_atomic(
        folder / PAIRED_BITS_FILE,
        json.dumps(
            {
                "challenger_weights_sha256": sha256_of(weights),
                "champion": champion and champion.model_dump(),
                "blocks": blocks or {name: {"bytes_bits": result.block_bits[name]} for name in names},
            }
        ),
    )
    attestation = Attestation(
        model_name=model_name,
        challenger_weights_sha256=sha256_of(weights),
        champion=champion if paired is not None or problem else None,
        champion_problem=problem,
        data_hash=str(result.data_hash or ""),
        golden_sha256=golden_sha256(report),
        code_identity=code_identity,
        config_hash=config_hash,
        metrics=result.metrics,
        paired=paired,
        paired_bits_sha256=sha256_of(bits_file),
        model_files=model_code_files(),  # the code this evaluation ran, which promote logs with the weights
        report_sha256=sha256_of(result.report_json),
        evaluated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    if paired is not None:
        _add_to_report_md(result.report_md, paired, attestation.golden_sha256)
    return [bits_file, *write_signed(attestation, folder)]


def _add_to_report_md(report_md: Path, paired: PairedResult, golden: str) -> None:
    """Both models' numbers on the same bytes and the interval, at the end of report.md (people read it)."""
    texts = f"the test split and the golden set (sha256 {golden[:12]})" if golden else "the test split"
    section = (
        f"\n\n## Champion versus challenger on the same bytes\n\nScored on {texts}: {paired.blocks} blocks, "
        f"{paired.bytes} bytes; paired bootstrap ({paired.resamples} resamples, seed {paired.seed}).\n\n"
        "| model | bits per byte |\n|---|---:|\n"
        f"| challenger (this evaluation) | {paired.challenger_bits_per_byte:.4f} |\n"
        f"| champion v{paired.champion_version} | {paired.champion_bits_per_byte:.4f} |\n"
        f"| difference, {paired.confidence:.0%} interval | {paired.difference:+.4f} "
        f"[{paired.low:+.4f}, {paired.high:+.4f}] |\n"
    )
    write_text_atomic(report_md, Path(report_md).read_text() + section)


def _paired(ours: dict, theirs: dict, names: list[str], version: str) -> PairedResult:
    challenger_bits, champion_bits, sizes = paired_blocks(ours, theirs, names)
    return paired_interval(challenger_bits, champion_bits, sizes, version)
