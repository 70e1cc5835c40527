"""Datasets: the generated default and loaders for real on-disk layouts."""
