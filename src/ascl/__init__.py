"""ASCL: adversarial supervised contrastive learning, reproduced as a tested pipeline."""

__version__ = "0.1.0"
