"""Running trained weights: the Harmonizer, full-resolution transfer, folder batches, ONNX, release files."""
