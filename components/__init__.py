"""The pipeline steps as plain functions (prepare_data, train, evaluate, promote) and what they share, one
subpackage per concern. Imports point one way, down this list:

    infrastructure/  settings, logging, redaction, S3 storage, MLflow tracking, provenance: imports no step
    data/            text sources -> byte shards -> token windows
    training/        the trainer and its stateful parts (optimizer, DDP, checkpoints, validation, stage configs)
    evaluation/      the evaluation report: compression, conditional code length, lm-eval, model loading
    registry/        the promotion gate on the MLflow registry and the registered pyfunc model
    codec/           `compress` / `decompress` (a range coder over the model's distributions)

Nothing here imports pipelines/, abstractinator/ or devtools/; the steps are called by those, never the reverse.
"""
