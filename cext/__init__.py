"""Compiled leaf kernels (Cython). Import them through their Python facades in media/."""
