"""Metrics: FID, KID, precision/recall and Inception score with the official definitions and detector files, and
mvc (multi-view consistency), a 3D metric that needs no detector. See registry.py for the names."""

from op3d.metrics.registry import METRICS, MetricContext, calc_metric, report_metric

__all__ = ["METRICS", "MetricContext", "calc_metric", "report_metric"]
