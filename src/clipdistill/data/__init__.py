"""Data layer: image-text sources, batches with per-model views, and the task-format readers."""

from clipdistill.data.batch import LoaderBatch, View
from clipdistill.data.loader import Batches, make_loader
from clipdistill.data.sources import MapSource, Sample, ShardSource, SkipCounter, open_source

__all__ = ["Batches", "LoaderBatch", "MapSource", "Sample", "ShardSource", "SkipCounter", "View", "make_loader",
           "open_source"]
