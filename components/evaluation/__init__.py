"""The evaluation step: `evaluate(EvaluateParams)` writes the report the registry gate decides from: bits per
byte beside standard compressors, the conditional code length behind the lm-eval adapter (`hier_ae`), the
report files, and loading a trained model from wherever its checkpoint lives.

May import: components.data, components.training (checkpoints), components.infrastructure, model/ (its window plan
is the codec's, so the report's code length is measured on the codec's own windows), configs/.
"""
