"""Training side of scenetool: data, model zoo, training, plots and ONNX export.

`fitting/` fits a model (zoo, tf.data pipeline, training loop, schedule, weight averages),
`reports/` measures and reports it (evaluation, speed, candidates, model card, figures),
`cli/` is `python -m train`; data, export, the "not a scene" rule (unknown, ood), ship and
quiet are one module each at the top.

Needs the `train` extra (TensorFlow); the scenetool runtime never imports this package.
"""
