"""The benchmark behind `make bench`: scenetool measured against its own ceilings.

Every figure comes from the same run, in rounds (each case once per round), so ratios
between cases hold on a noisy machine; each case is repeated and its median reported.
TensorFlow is never imported here: the benchmark needs only what scenetool needs.
"""
