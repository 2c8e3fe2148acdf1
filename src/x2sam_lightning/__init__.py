"""X2SAM as a PyTorch Lightning + Hydra package."""

__version__ = "0.1.0"
