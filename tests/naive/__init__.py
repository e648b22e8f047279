"""Slow, obviously-correct reference implementations: the oracles of the fast kernels."""
