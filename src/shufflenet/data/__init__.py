"""Data primitives shared by the integrations (no framework imports): the seeded sample stream."""

from .stream import SampleStream, augmentation_seed, derive_seed, step_seed

__all__ = ["SampleStream", "augmentation_seed", "derive_seed", "step_seed"]
