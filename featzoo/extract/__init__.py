"""The extraction pipeline: a folder of images to sharded, resumable, distributable embeddings, and back.

>>> import featzoo
>>> result = featzoo.extract_embeddings('resnet18', 'photos/', 'emb/', pretrained=False)  # doctest: +SKIP
>>> paths, emb = featzoo.read_embeddings('emb/')  # doctest: +SKIP
>>> view = featzoo.open_embeddings('emb/')  # lazy, memory-mapped  # doctest: +SKIP
"""
from .dataset import (
    DEFAULT_MAX_PIXELS, ImageFileDataset, ImageTooLargeError, collate_images, decode_image, fast_decode_size,
)
from .distributed import DistContext, RankLostError, init_distributed, split_work
from .files import (
    IMAGE_EXTENSIONS, ImageFile, changed_paths, describe_image_set_change, file_fingerprint, fingerprint,
    image_set_digest, list_images,
)
from .lock import OutputInUseError, OutputLock
from .manifest import FORMAT_VERSION, JOB_FILE, LISTING_FILE, LOCK_FILE, MANIFEST_FILE, SHARD_DIR
from .pipeline import (
    AUTOCAST_MODES, DEFAULT_SHARD_SIZE, DTYPES, RESUMABLE_CHANGES, ExtractResult, JobMismatchError,
    WeightsUnavailableError, build_with_weights, extract_embeddings, weights_digest,
)
from .reader import EmbeddingView, load_manifest, open_embeddings, read_embeddings
from .shards import ShardInfo, ShardWriteError, read_shard_info, shard_name, write_shard

__all__ = [
    'extract_embeddings', 'read_embeddings', 'open_embeddings', 'load_manifest', 'EmbeddingView', 'ExtractResult',
    'WeightsUnavailableError', 'list_images', 'ImageFile', 'IMAGE_EXTENSIONS', 'image_set_digest',
    'describe_image_set_change', 'ImageFileDataset', 'collate_images', 'decode_image', 'fast_decode_size',
    'DistContext', 'init_distributed', 'split_work', 'ShardInfo', 'read_shard_info', 'shard_name', 'write_shard',
    'weights_digest', 'build_with_weights', 'FORMAT_VERSION', 'JOB_FILE', 'LISTING_FILE', 'MANIFEST_FILE',
    'SHARD_DIR', 'DTYPES', 'AUTOCAST_MODES', 'DEFAULT_SHARD_SIZE', 'DEFAULT_MAX_PIXELS', 'ImageTooLargeError',
    'RankLostError', 'fingerprint', 'file_fingerprint', 'changed_paths', 'OutputLock', 'OutputInUseError',
    'LOCK_FILE', 'RESUMABLE_CHANGES', 'ShardWriteError', 'JobMismatchError',
]
