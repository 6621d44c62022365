"""Each step's result (pipelines/step_results.py, named by pipelines/step_table.py): one typed value that survives
the kfp dict output and results/<step>.json unchanged (a NaN metric included) and is validated on read, so a
missing, unknown or bad field fails in one line naming it."""

from __future__ import annotations

import json
import math

import pytest
from google.protobuf import json_format
from kfp.compiler.pipeline_spec_builder import to_protobuf_value

from pipelines.step_results import StepResultError
from pipelines.step_table import STEPS, read_result

# One filled-in result per step (every field that has no default, and the metrics where there are some).
FILLED = {
    "prepare_data": {"data_uri": "s3://b/data/d", "data_hash": "d" * 64},
    "stage1_pretrain": {
        "stage": "stage1",
        "checkpoint_uri": "s3://b/runs/k/stage1/final.pt",
        "checkpoint_hash": "sha256:1",
        "base_components_uri": "s3://b/runs/k/stage1/base_components.pt",
        "base_components_hash": "sha256:2",
        "mlflow_run_id": "run-1",
        "final_metrics": {"loss": 2.5, "val_bits_per_byte": math.nan},
    },
    "stage2_top_lm": {"stage": "stage2", "checkpoint_uri": "s3://b/runs/k/stage2/final.pt", "checkpoint_hash": "h"},
    "evaluate": {"report_uri": "r", "report_hash": "h", "metrics": {"a": 1.5, "b": math.nan}, "mlflow_run_id": "m"},
    "promote": {
        "model": "m",
        "version": "3",
        "action": "refused",
        "promoted": False,
        "champion": None,  # no champion after the decision
        "reasons": ["worse than the champion"],
        "tracking_uri": "http://mlflow",
    },
}
STEP_NAMES = [step.name for step in STEPS]


def _same(one: dict, other: dict) -> bool:
    """Equal, a NaN equal to a NaN."""
    return json.dumps(one, sort_keys=True) == json.dumps(other, sort_keys=True)


def test_every_step_has_a_filled_in_result_here() -> None:
    assert set(FILLED) == set(STEP_NAMES)


@pytest.mark.parametrize("name", STEP_NAMES)
def test_a_result_round_trips_through_the_kfp_dict_and_the_json_file(name: str) -> None:
    result = read_result(name, FILLED[name], name)
    assert type(result) is STEPS[STEP_NAMES.index(name)].result
    # kfp turns a dict parameter into a protobuf Struct (None refused), the next task gets it back as JSON
    struct = json_format.MessageToJson(to_protobuf_value(result.handed_on()))
    from_kfp = read_result(name, json.loads(struct), name)
    from_file = read_result(name, result.model_dump_json(indent=2), name)  # results/<step>.json
    assert _same(from_kfp.model_dump(), FILLED[name] | from_kfp.model_dump())
    assert _same(from_file.model_dump(), from_kfp.model_dump())


@pytest.mark.parametrize("name", STEP_NAMES)
def test_an_unknown_key_is_refused_in_one_line(name: str) -> None:
    """A misspelt or stale field fails the reading step (extra="forbid"), in the dict and the file alike."""
    for value in ({**FILLED[name], "checkpoint_sha": "x"}, json.dumps({**FILLED[name], "checkpoint_sha": "x"})):
        with pytest.raises(StepResultError) as refused:
            read_result(name, value, f"results/{name}.json")
        assert str(refused.value) == f"results/{name}.json: checkpoint_sha: unknown key"


@pytest.mark.parametrize("name", STEP_NAMES)
def test_a_missing_or_bad_field_is_refused_on_read_naming_it(name: str) -> None:
    """Validated on read: every required field's absence, and a value of the wrong type, name the field."""
    model = STEPS[STEP_NAMES.index(name)].result
    required = [field for field, info in model.model_fields.items() if info.is_required()]
    assert required
    for field in required:
        with pytest.raises(StepResultError, match=f"^{name}: {field}: Field required"):
            read_result(name, {k: v for k, v in FILLED[name].items() if k != field}, name)
        with pytest.raises(StepResultError, match=rf"^{name}: {field}\b"):
            read_result(name, {**FILLED[name], field: [1]}, name)


def test_the_kfp_promote_task_refuses_a_bad_earlier_result_before_any_work(capsys) -> None:
    """The kfp task reads each dict input with its step's model first: exit 2, one line naming input and field
    (the other inputs are None: nothing past the reading is reached)."""
    import inspect

    from pipelines.kfp_tasks import promote

    inputs = {name: None for name in inspect.signature(promote).parameters}
    inputs.update({name: FILLED[name] for name in STEP_NAMES if name in inputs}, gate_rules={})
    inputs["stage2_top_lm"] = {**FILLED["stage2_top_lm"], "checkpoint_hash": None}
    with pytest.raises(SystemExit) as stopped:
        promote(**inputs)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1
    assert "stage2_top_lm: checkpoint_hash: Input should be a valid string" in err, err


def test_a_result_never_hands_on_a_credential(monkeypatch) -> None:
    """A full local run's promote output held the MLflow password inside its tracking URI (kfp keeps every
    output in its metadata store and UI; dvc keeps results/promote.json): every string is masked."""
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "Pw-marker-in-a-result")
    result = read_result(
        "promote",
        {**FILLED["promote"], "tracking_uri": "http://pipeline:Pw-marker-in-a-result@mlflow:5000"},
        "promote",
    )
    handed_on = json.dumps(result.handed_on()) + result.model_dump_json()
    assert "Pw-marker-in-a-result" not in handed_on and "mlflow:5000" in handed_on
