"""Measuring and reporting: a run's checkpoint scored on its validation split (`evaluate`),
ONNX models timed side by side (`speed`), every candidate model in one table (`candidates`),
the model card (`card`) and the figures (`plots`).

Nothing is imported here, so importing one of them loads only what it needs.
"""
