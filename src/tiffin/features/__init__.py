"""The feature code: one transformer for training, the API and batch.

Every registered model pickles `FeatureEncoder` under this public path, `tiffin.features.FeatureEncoder`, as
models registered before the package had layers do: the path is part of the model's bytes, and so of its tag.
"""

from tiffin.features.encoder import FeatureEncoder

__all__ = ["FeatureEncoder"]
