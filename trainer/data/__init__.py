"""Dataset readers: raw distribution layouts -> :class:`~trainer.data.records.VideoRecord` lists."""

from trainer.data.celebdf import read_celebdf
from trainer.data.dfdc import read_dfdc, read_dfdc_preview
from trainer.data.ffpp import read_dfd, read_faceshifter, read_ffpp
from trainer.data.generic import read_generic, read_image_folder, read_shared_data, read_video_folder
from trainer.data.records import DatasetLayoutError, VideoRecord, make_uid, safe_name, summarize
from trainer.data.registry import dataset_names, get_reader, load_records
from trainer.data.wilddeepfake import read_wilddeepfake

__all__ = [
    "DatasetLayoutError",
    "VideoRecord",
    "dataset_names",
    "get_reader",
    "load_records",
    "make_uid",
    "read_celebdf",
    "read_dfd",
    "read_dfdc",
    "read_dfdc_preview",
    "read_faceshifter",
    "read_ffpp",
    "read_generic",
    "read_image_folder",
    "read_shared_data",
    "read_video_folder",
    "read_wilddeepfake",
    "safe_name",
    "summarize",
]
