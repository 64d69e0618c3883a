"""Training side of scenetool: data, model zoo, training, plots and ONNX export.

Needs the `train` extra (TensorFlow); the scenetool runtime never imports this package.
"""
