"""The codec behind `abstractinator compress` / `decompress`: range coding of the model's two-part code, window by
window with context carried across windows (docs/codec.md).

May import: components.evaluation (model loading, the known-token counts), components.registry (a `models:/`
reference's version), components.infrastructure, model/, configs/.
"""
