"""Pixel-CNN: Kepler planet vetting from TPF pixel-difference images."""
