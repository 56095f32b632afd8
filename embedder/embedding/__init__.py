"""Crops in, unit vectors out: backbones by name, heads, the Embedder and its model folders,
the hand-landmark encoder, and the ONNX runtime an exported bundle uses instead of torch."""
