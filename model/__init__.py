"""The Abstractinator model: a hierarchical autoencoder over UTF-8 bytes (its invariants: docs/model.md).

Imports only torch, the stdlib and `configs`. Entry point: `build_model(exp_config)`; one concept per module:
attention, blocks, segmentation, pooling, quantizer, compressor, expander, top_lm, autoencoder, code_length,
generation, tokenizer, window_plan, eval_mode (a block in eval mode, the previous mode restored after).
"""

from model.autoencoder import HierarchicalAutoencoder, build_model, require_memory_for
from model.code_length import code_length_bits, code_length_breakdown
from model.compressor import Compressor
from model.expander import Expander
from model.pooling import SegmentPooler
from model.quantizer import EmaVectorQuantizer
from model.segmentation import EntropySegmenter
from model.tokenizer import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE, ByteTokenizer
from model.top_lm import CodeSequenceTransformer

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "PAD_ID",
    "VOCAB_SIZE",
    "ByteTokenizer",
    "CodeSequenceTransformer",
    "Compressor",
    "EmaVectorQuantizer",
    "EntropySegmenter",
    "Expander",
    "HierarchicalAutoencoder",
    "SegmentPooler",
    "build_model",
    "code_length_bits",
    "code_length_breakdown",
    "require_memory_for",
]
