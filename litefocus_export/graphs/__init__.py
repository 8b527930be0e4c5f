"""ONNX graph surgery shared by the backends (onnx only, no torch, no engine runtime): lowering the contract's
DualSparseAttention node to ``com.microsoft`` MultiHeadAttention, fusing softmax attention, writing a rewritten
model beside its weights."""
