"""Decode image bytes and refuse images that would silently train on a wrong pair."""
import cv2
import numpy as np

from rainmer.data.errors import DataError


def decode_bgr_uint8(content: bytes | None, name: str) -> np.ndarray:
    """Decode ``content`` to an HxWx3 uint8 BGR array, or raise :class:`DataError` naming ``name``.

    Rejected (never converted silently): missing or undecodable bytes, grayscale, alpha channel,
    and 16-bit images.
    """
    if content is None:
        raise DataError(f'{name}: no such file or LMDB key')
    img = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_UNCHANGED) if len(content) else None
    if img is None:
        raise DataError(f'{name}: cannot be decoded as an image (unreadable or truncated file)')
    check_colour_8bit(name, 1 if img.ndim == 2 else img.shape[2], img.dtype.itemsize * 8)
    return img


def check_colour_8bit(name: str, channels: int, bit_depth: int) -> None:
    """Raise :class:`DataError` naming ``name`` unless the image is 8-bit with 3 colour channels."""
    if bit_depth != 8:
        raise DataError(f'{name}: {bit_depth}-bit image; only 8-bit images are supported, '
                        'convert it to 8 bits per channel')
    if channels == 1:
        raise DataError(f'{name}: grayscale image; rain pairs must be 3-channel colour images')
    if channels != 3:
        raise DataError(f'{name}: {channels} channels (alpha channel?); expected 3-channel colour')


def read_bgr_uint8(path: str) -> np.ndarray:
    """Read a file from disk with :func:`decode_bgr_uint8`'s checks."""
    try:
        with open(path, 'rb') as f:
            content = f.read()
    except FileNotFoundError:
        content = None
    except OSError as err:
        raise DataError(f'{path}: cannot be read ({err.strerror})') from err
    return decode_bgr_uint8(content, path)


def check_same_size(lq: np.ndarray, gt: np.ndarray, lq_name: str, gt_name: str) -> None:
    """Raise :class:`DataError` when a rainy image and its clean partner differ in size."""
    check_same_extent((lq.shape[1], lq.shape[0]), (gt.shape[1], gt.shape[0]), lq_name, gt_name)


def check_same_extent(lq_size: tuple[int, int], gt_size: tuple[int, int], lq_name: str, gt_name: str) -> None:
    """:func:`check_same_size` on ``(width, height)`` pairs (e.g. read from image headers)."""
    if tuple(lq_size) != tuple(gt_size):
        raise DataError(f'size mismatch: {lq_name} is {lq_size[0]}x{lq_size[1]} but its clean partner '
                        f'{gt_name} is {gt_size[0]}x{gt_size[1]} (width x height)')


def encode_png(img: np.ndarray, compress_level: int = 1) -> bytes:
    """Lossless PNG bytes of ``img`` (what the LMDBs store, as BasicSR's tools do)."""
    ok, buf = cv2.imencode('.png', img, [cv2.IMWRITE_PNG_COMPRESSION, compress_level])
    if not ok:
        raise DataError('cannot encode an image as PNG')
    return buf.tobytes()
