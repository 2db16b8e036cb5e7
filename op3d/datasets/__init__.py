"""Image datasets with camera labels (EG3D's layout): reading (`ImageFolderDataset`), the files and labels behind it,
and writing or converting datasets. Used by training, metrics and the data tools; depends on no other op3d package
but `op3d.atomic`."""

from op3d.datasets.files import LABELS_FILE, DatasetError, ImageFiles
from op3d.datasets.image_folder import ImageFolderDataset
from op3d.datasets.labels import CAMERA_LABEL_DIM, crop_camera_intrinsics, mirror_camera_label
from op3d.datasets.writing import (TRANSFORMS, ConversionSummary, convert_dataset, dataset_writer, png_bytes,
                                   refuse_existing, write_image_dataset)

__all__ = ["CAMERA_LABEL_DIM", "LABELS_FILE", "TRANSFORMS", "ConversionSummary", "DatasetError", "ImageFiles",
           "ImageFolderDataset", "convert_dataset", "crop_camera_intrinsics", "dataset_writer", "mirror_camera_label",
           "png_bytes", "refuse_existing", "write_image_dataset"]
