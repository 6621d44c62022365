"""The registered model as an `mlflow.pyfunc` model: strings in, bits per byte, codes or generated text out.

    model = mlflow.pyfunc.load_model("models:/abstractinator@champion")
    model.predict(["some text"])                                         # [{"text", "bits_per_byte", "bytes"}]
    model.predict(["some text"], params={"task": "codes"})               # [{"text", "codes": [[...] per level]}]
    model.predict(["Once upon"], params={"task": "generate", "max_new_bytes": 64})   # [{"text", "generated"}]

Input: a list of strings, or a DataFrame with a `text` column. The artifact is a training checkpoint (model
state + config as plain data), loaded with `torch.load(weights_only=True)`: no pickled code runs on load.

Self-contained: the model is logged as MLflow "models from code" (this file is the model's code: MLflow runs it
at load time and it ends with `set_model`), with the `model` and `configs` packages as `code_paths` and pinned
requirements, so it loads where this repository is absent (a serving image, `mlflow models serve`). Nothing is
pickled: MLflow 3 refuses cloudpickled models unless MLFLOW_ALLOW_PICKLE_DESERIALIZATION is set
(mlflow/pyfunc/model.py, `_load_context_model_and_signature`), and a pickle would run code on load. This file
imports only the standard library and mlflow at module level for the same reason.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import mlflow.models
import mlflow.pyfunc

CHECKPOINT_ARTIFACT = "checkpoint"
TASKS = ("bits_per_byte", "codes", "generate")
# What the model's code (model/, configs/, this file) imports, pinned to the versions it was logged with.
REQUIRED_DISTRIBUTIONS = ("torch", "pydantic", "pyyaml", "numpy", "mlflow")
CODE_PACKAGES = ("model", "configs")  # top-level packages the model needs; both import nothing of components/


def _texts(model_input: Any) -> list[str]:
    if hasattr(model_input, "columns"):  # a pandas DataFrame
        column = "text" if "text" in model_input.columns else model_input.columns[0]
        return [str(v) for v in model_input[column].tolist()]
    if isinstance(model_input, str):
        return [model_input]
    return [str(v) for v in model_input]


class AbstractinatorPyfunc(mlflow.pyfunc.PythonModel):
    """Loads the checkpoint artifact on `load_context`; `predict` runs one task per input string."""

    def load_context(self, context) -> None:
        self.load_checkpoint(Path(context.artifacts[CHECKPOINT_ARTIFACT]))

    def load_checkpoint(self, path: Path) -> None:
        import torch

        from configs import validate_config
        from model import ByteTokenizer, build_model

        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        self.config = validate_config(checkpoint["exp_config"], origin=str(path))
        self.model = build_model(self.config)
        self.model.load_state_dict(checkpoint["model_state"])
        self.model.eval()
        self.tokenizer = ByteTokenizer()

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        params = dict(params or {})
        task = params.get("task", "bits_per_byte")
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r} (choose one of {', '.join(TASKS)})")
        handler = {"bits_per_byte": self._bits_per_byte, "codes": self._codes, "generate": self._generate}[task]
        return [handler(text, params) for text in _texts(model_input)]

    def _tokens(self, text: str, add_eos: bool):
        return self.tokenizer.encode(text, add_bos=True, add_eos=add_eos).unsqueeze(0)

    def _bits_per_byte(self, text: str, params: dict[str, Any]) -> dict[str, Any]:
        import torch

        byte_count = len(text.encode("utf-8", errors="surrogateescape"))
        if byte_count == 0:  # bits per byte of nothing is undefined (it came out as the framing's bits before)
            raise ValueError("bits_per_byte of an empty text: give at least one byte")
        tokens = self._tokens(text, add_eos=True)
        with torch.no_grad():
            bits = float(self.model.code_length_bits(tokens)[0])
        return {"text": text, "bits_per_byte": bits / byte_count, "bytes": byte_count}

    def _codes(self, text: str, params: dict[str, Any]) -> dict[str, Any]:
        import torch

        with torch.no_grad():
            compressed = self.model.compress(self._tokens(text, add_eos=False))
        pairs = zip(compressed.codes, compressed.row_valid, strict=True)
        codes = [level_codes[0][valid[0]].tolist() for level_codes, valid in pairs]
        return {"text": text, "codes": codes}

    def _generate(self, text: str, params: dict[str, Any]) -> dict[str, Any]:
        import torch

        max_new = int(params.get("max_new_bytes", 64))
        temperature = float(params.get("temperature", 0.0))
        if not math.isfinite(temperature) or temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0 (0: greedy), got {temperature}")
        if max_new < 0:
            raise ValueError(f"max_new_bytes must be >= 0, got {max_new}")
        with torch.no_grad():
            continuation = self.model.generate_bytes(self._tokens(text, add_eos=False)[0], max_new, temperature)
        return {"text": text, "generated": self.tokenizer.decode_text(continuation)}


def slim_checkpoint(checkpoint_path: Path, out_path: Path) -> Path:
    """Only what serving needs (model state, config, provenance): no optimizer or data-loader state."""
    import torch

    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    # the format marker keeps it a checkpoint that evaluation and the codec read (components/training/checkpoints.py)
    keep = ("format", "format_version", "model_state", "exp_config", "git_commit", "data_hash", "config_hash")
    keep += ("global_step", "stage")
    torch.save({key: checkpoint[key] for key in keep if key in checkpoint}, out_path)
    return out_path


def pip_requirements() -> list[str]:
    """`name==version` of each required distribution as installed here (what the model was tested with)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in REQUIRED_DISTRIBUTIONS]


def model_code_files() -> dict[str, str]:
    """{path in the logged model: sha256} of the code a model logged from this checkout carries (this file as
    `pyfunc_model.py`, the packages under `code/`, as _stage_code copies them): what the evaluation attests, so
    that a registered model whose code was edited afterwards is refused before MLflow runs any of it."""
    import hashlib

    here = Path(__file__).resolve()
    files = {here.name: here}
    for package in CODE_PACKAGES:
        folder = here.parents[2] / package
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_file() and "__pycache__" not in relative.parts and path.suffix != ".pyc":
                files[f"code/{package}/{relative.as_posix()}"] = path
    return {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()}


def _stage_code(target: Path) -> list[str]:
    """Copies of the code packages without bytecode caches; their paths, for `code_paths`."""
    import shutil

    root = Path(__file__).resolve().parents[2]
    paths = []
    for package in CODE_PACKAGES:
        shutil.copytree(root / package, target / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        paths.append(str(target / package))
    return paths


def _signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string")]),
        params=ParamSchema(
            [
                ParamSpec("task", "string", "bits_per_byte"),
                ParamSpec("max_new_bytes", "long", 64),
                ParamSpec("temperature", "double", 0.0),
            ]
        ),
    )


def save_pyfunc_model(weights: Path, model_code: Path, code_paths: list[str], path: Path) -> Path:
    """Write a pyfunc model folder at `path` from given files alone: `weights` (the slim checkpoint, as
    artifacts/model.pt), `model_code` (this file, as it was logged) and `code_paths` (the code packages); its
    MLmodel is written here by MLflow, not copied from anywhere. What `registry serve` serves
    (components/registry/verified_loading.py)."""
    mlflow.pyfunc.save_model(
        path=str(path),
        python_model=str(model_code),  # models from code: the given file
        artifacts={CHECKPOINT_ARTIFACT: str(weights)},
        code_paths=code_paths,
        pip_requirements=pip_requirements(),
        signature=_signature(),
    )
    return Path(path)


def log_pyfunc_model(checkpoint_path: Path, name: str = "model", slim: bool = True) -> Any:
    """Log the checkpoint (slimmed, unless `slim` is False: a file slim_checkpoint made already, logged byte for
    byte) as a self-contained pyfunc model in the active MLflow run; returns mlflow's ModelInfo."""
    import shutil
    import tempfile

    signature = _signature()
    with tempfile.TemporaryDirectory(prefix="abstractinator-pyfunc-") as tmp:
        weights = Path(tmp) / "model.pt"
        if slim:
            slim_checkpoint(Path(checkpoint_path), weights)
        else:
            shutil.copyfile(checkpoint_path, weights)  # named model.pt in the model whatever its name here
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(Path(__file__).resolve()),  # models from code: this file, not a pickle
            artifacts={CHECKPOINT_ARTIFACT: str(weights)},
            code_paths=_stage_code(Path(tmp) / "code"),
            pip_requirements=pip_requirements(),
            signature=signature,
        )


# Models from code: MLflow executes this file when it logs and when it loads the model; this is the model.
mlflow.models.set_model(AbstractinatorPyfunc())
