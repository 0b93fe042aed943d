"""Read an image's size, channels and bit depth from its header, and see that the file is complete, without
decoding it: PNG and JPEG are parsed (a few hundred bytes from each end); other formats are decoded.

The rules are :func:`rainmer.data.image_io.decode_bgr_uint8`'s: 8-bit, 3 colour channels (no grayscale, no
alpha), and a file OpenCV can decode (a PNG must end with its IEND chunk, a JPEG with its EOI marker).
"""
import io
import struct
from dataclasses import dataclass
from typing import BinaryIO

from rainmer.data.errors import DataError
from rainmer.data.image_io import check_colour_8bit, decode_bgr_uint8

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
JPEG_SOI = b'\xff\xd8'
JPEG_EOI = b'\xff\xd9'
TAIL_BYTES = 4096  # where the end marker must be (some cameras pad after a JPEG's EOI)
# Start-of-frame markers (C0-CF except DHT C4, JPG C8, DAC CC) carry precision, height, width, components.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 4, 6: 4}  # colour type -> channels as OpenCV decodes it


@dataclass(frozen=True)
class ImageHeader:
    """What the header says: ``width`` x ``height``, ``channels``, ``bit_depth`` per channel."""

    width: int
    height: int
    channels: int
    bit_depth: int


def probe_image(stream: BinaryIO, name: str) -> ImageHeader:
    """The header of the image in ``stream`` (a seekable binary file), checked as training will decode it.

    Raises :class:`DataError` naming ``name`` for an incomplete, undecodable, grayscale, alpha or 16-bit image.
    """
    start = stream.read(8)
    stream.seek(0)
    if start.startswith(PNG_SIGNATURE):
        header = _probe_png(stream, name)
    elif start.startswith(JPEG_SOI):
        header = _probe_jpeg(stream, name)
    else:  # BMP, TIFF, WebP, ...: decoding is the check
        img = decode_bgr_uint8(stream.read(), name)
        return ImageHeader(img.shape[1], img.shape[0], img.shape[2], 8)
    check_colour_8bit(name, header.channels, header.bit_depth)
    return header


def probe_bytes(content: bytes | None, name: str) -> ImageHeader:
    """:func:`probe_image` on bytes (an LMDB value); ``None`` means the key is missing."""
    if content is None:
        raise DataError(f'{name}: no such file or LMDB key')
    return probe_image(io.BytesIO(content), name)


def _incomplete(name: str) -> DataError:
    return DataError(f'{name}: cannot be decoded as an image (unreadable or truncated file)')


def _tail(stream: BinaryIO) -> bytes:
    size = stream.seek(0, io.SEEK_END)
    stream.seek(max(0, size - TAIL_BYTES))
    return stream.read()


def _probe_png(stream: BinaryIO, name: str) -> ImageHeader:
    stream.seek(8)
    chunk = stream.read(25)  # length, 'IHDR', width, height, bit depth, colour type, ...
    if len(chunk) < 25 or chunk[4:8] != b'IHDR':
        raise _incomplete(name)
    width, height, bit_depth, colour_type = struct.unpack('>IIBB', chunk[8:18])
    channels = _PNG_CHANNELS.get(colour_type)
    if channels is None or width == 0 or height == 0:
        raise _incomplete(name)
    if colour_type == 3:  # palette: depth is the index size; OpenCV gives 8-bit BGR, BGRA with transparency
        bit_depth, channels = 8, 4 if _png_has_chunk(stream, b'tRNS') else 3
    elif bit_depth < 8:
        bit_depth = 8  # OpenCV expands 1/2/4-bit grayscale to 8 bits
    if b'IEND' not in _tail(stream):
        raise _incomplete(name)
    return ImageHeader(width, height, channels, bit_depth)


def _png_has_chunk(stream: BinaryIO, wanted: bytes) -> bool:
    """Whether a chunk ``wanted`` comes before the image data (walks chunk headers only)."""
    stream.seek(8)
    while True:
        head = stream.read(8)
        if len(head) < 8:
            return False
        length, kind = struct.unpack('>I4s', head)
        if kind == wanted:
            return True
        if kind in (b'IDAT', b'IEND'):
            return False
        stream.seek(length + 4, io.SEEK_CUR)  # data and CRC


def _probe_jpeg(stream: BinaryIO, name: str) -> ImageHeader:
    stream.seek(2)
    while True:
        marker = stream.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            raise _incomplete(name)
        if marker[1] in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            continue
        length_bytes = stream.read(2)
        if len(length_bytes) < 2:
            raise _incomplete(name)
        length = struct.unpack('>H', length_bytes)[0]
        if marker[1] in _JPEG_SOF:
            frame = stream.read(6)
            if len(frame) < 6:
                raise _incomplete(name)
            precision, height, width, components = struct.unpack('>BHHB', frame)
            break
        if marker[1] == 0xDA:  # start of scan before any frame header
            raise _incomplete(name)
        stream.seek(length - 2, io.SEEK_CUR)
    if JPEG_EOI not in _tail(stream):
        raise _incomplete(name)
    # OpenCV decodes CMYK/YCCK (4 components) to 3-channel BGR.
    return ImageHeader(width, height, 3 if components == 4 else components, precision)
