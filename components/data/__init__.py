"""The data a model is trained and evaluated on: sources of documents, the prepare_data step (documents -> byte
shards + manifest), the shard format, the token-window loader (each batch a pure function of seed and index)
and the pinned held-out evaluation sets.

May import: components.infrastructure, model/ (the tokenizer's ids), configs/.
"""
