"""Fitting a model: the architectures (`zoo`), the tf.data input and augmentation
(`pipeline`), the training loop and its runs (`fit`), the learning-rate schedule
(`schedule`) and the weight averages (`ema`, `swa`).

Nothing is imported here: `zoo`, `schedule`, `ema` and `swa` import Keras and `pipeline`
imports TensorFlow at import time, so each is imported where it is used.
"""
