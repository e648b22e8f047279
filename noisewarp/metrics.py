"""Gaussianity and temporal metrics (placeholder, being written)."""
