"""Data primitives shared by the integrations (no framework imports): the seeded sample stream, the CPU count."""

from .stream import SampleStream, augmentation_seed, derive_seed, step_seed
from .workers import available_cpus

__all__ = ["SampleStream", "augmentation_seed", "available_cpus", "derive_seed", "step_seed"]
