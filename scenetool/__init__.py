"""scenetool: sort photos of scenes into buildings, forest, glacier, mountain, sea and street.

Importing the package is cheap: onnxruntime is loaded when a model is opened, and
TensorFlow never is.
"""

__version__ = "0.1.0"
