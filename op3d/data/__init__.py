"""Datasets with ground truth."""
