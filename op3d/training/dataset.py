"""The training set's module under its earlier name: the dataset code lives in `op3d.datasets` (below training and
metrics, which both read datasets); these names keep existing imports working."""

from op3d.datasets import (CAMERA_LABEL_DIM, LABELS_FILE, TRANSFORMS, ConversionSummary, DatasetError, ImageFiles,
                           ImageFolderDataset, convert_dataset, crop_camera_intrinsics, dataset_writer,
                           mirror_camera_label, png_bytes, refuse_existing, write_image_dataset)

__all__ = ["CAMERA_LABEL_DIM", "LABELS_FILE", "TRANSFORMS", "ConversionSummary", "DatasetError", "ImageFiles",
           "ImageFolderDataset", "convert_dataset", "crop_camera_intrinsics", "dataset_writer", "mirror_camera_label",
           "png_bytes", "refuse_existing", "write_image_dataset"]
