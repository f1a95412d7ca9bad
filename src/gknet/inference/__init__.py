"""Running trained weights: the Harmonizer, full-resolution transfer, image files and folder batches, ONNX,
release files."""
