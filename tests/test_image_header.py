"""The header probe agrees with a full decode on every kind of image a download may hold."""
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from rainmer.data.errors import DataError
from rainmer.data.image_header import ImageHeader, probe_bytes
from rainmer.data.image_io import decode_bgr_uint8

H, W = 177, 241  # odd sizes, as the public sets have


def _pil(mode: str, fmt: str, **params) -> bytes:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    image = rgb.convert(mode) if mode not in ('P', 'PT') else rgb.quantize(16)
    if mode == 'PT':
        params['transparency'] = 0
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _cv2(ext: str, img: np.ndarray) -> bytes:
    return cv2.imencode(ext, img)[1].tobytes()


def _cases() -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    bgr = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    cases = {
        'png-rgb': _cv2('.png', bgr), 'png-rgba': _cv2('.png', np.dstack([bgr, bgr[..., :1]])),
        'png-gray': _cv2('.png', bgr[..., 0]), 'png-16bit': _cv2('.png', bgr.astype(np.uint16) * 257),
        'png-palette': _pil('P', 'PNG'), 'png-palette-transparent': _pil('PT', 'PNG'),
        'png-gray-alpha': _pil('LA', 'PNG'), 'png-1bit': _pil('1', 'PNG'),
        'jpeg-rgb': _cv2('.jpg', bgr), 'jpeg-gray': _cv2('.jpg', bgr[..., 0]), 'jpeg-cmyk': _pil('CMYK', 'JPEG'),
        'jpeg-progressive': _pil('RGB', 'JPEG', progressive=True),
        'jpeg-exif': _pil('RGB', 'JPEG', exif=b'Exif\0\0' + bytes(3000)),
        'bmp': _cv2('.bmp', bgr), 'webp': _cv2('.webp', bgr),
        'jpeg-padded': _cv2('.jpg', bgr) + bytes(100), 'empty': b'', 'text': b'not an image at all',
    }
    for name in ('png-rgb', 'jpeg-rgb', 'jpeg-progressive', 'bmp'):
        for fraction in (0.98, 0.5, 0.01):
            cases[f'{name}-cut{fraction}'] = cases[name][:int(len(cases[name]) * fraction)]
    return cases


CASES = _cases()


@pytest.mark.parametrize('name', sorted(CASES))
def test_probe_accepts_and_rejects_exactly_what_decoding_does(name):
    content = CASES[name]
    try:
        img = decode_bgr_uint8(content, name)
    except DataError as decode_error:
        with pytest.raises(DataError) as probe_error:
            probe_bytes(content, name)
        assert str(probe_error.value).split(':')[1] == str(decode_error).split(':')[1]  # the same reason
    else:
        assert probe_bytes(content, name) == ImageHeader(img.shape[1], img.shape[0], 3, 8)


def test_a_missing_lmdb_key_is_named():
    with pytest.raises(DataError, match='lq.lmdb:k: no such file or LMDB key'):
        probe_bytes(None, 'lq.lmdb:k')
