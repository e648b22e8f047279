"""Optical flow conventions and conversion to backward maps (placeholder, being written)."""
