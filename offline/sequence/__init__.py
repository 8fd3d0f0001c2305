"""The learned profile encoder (issue 34): model, training, ONNX export."""
