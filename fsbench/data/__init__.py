"""Face datasets on disk: reading (FaceDataset), writing (DatasetWriter), decoding images."""

from fsbench.data.dataset import Batch, FaceDataset, Item
from fsbench.data.images import decode_image, encode_image, read_image
from fsbench.data.writer import DatasetWriter, write_item

__all__ = ["Batch", "DatasetWriter", "FaceDataset", "Item", "decode_image", "encode_image", "read_image", "write_item"]
