"""Videos for ``rainmer derain``: frames streamed one at a time from OpenCV's reader to its writer.

Outputs keep the input's frame count, frame rate and size, in its container: ``.avi`` as Motion JPEG (``MJPG``),
``.mp4``/``.mov``/``.mkv`` as MPEG-4 part 2 (``mp4v``). OpenCV's FFmpeg writer stores even sizes only (it drops an
odd last row/column), so an odd-size ``.avi`` is written by OpenCV's own MJPEG writer, which keeps any size but
stores whole frame rates (29.97 fps becomes 30, with a note); an odd-size ``.mp4``/``.mov``/``.mkv`` is written
without its last column/row (with a note).
"""
import math
import os
import os.path as osp
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from rainmer.errors import UserError

VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mov', '.mkv')
DEFAULT_FPS = 25.0  # for a video whose container has no usable frame rate


class VideoError(UserError):
    """A video OpenCV cannot read or write; the message names the file and what to do."""


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float  # 0 when the container has no usable frame rate
    frames: int  # the container's frame count (0 when unknown; the frames read are what counts)


def is_video(path: str) -> bool:
    return path.lower().endswith(VIDEO_EXTENSIONS)


def _open_capture(path: str) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        capture.release()
        raise VideoError(f'{path}: OpenCV cannot open this video (a damaged file, or a codec its build lacks); '
                         'convert it, e.g. to .mp4 or .avi (MJPG)')
    return capture


def probe_video(path: str) -> VideoInfo:
    """Size, frame rate and frame count from the container (the file is opened and closed)."""
    capture = _open_capture(path)
    try:
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        return VideoInfo(width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                         height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                         fps=fps if math.isfinite(fps) and 0 < fps < 1000 else 0.0,
                         frames=max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0))
    finally:
        capture.release()


def read_frames(path: str) -> Iterator[np.ndarray]:
    """The video's frames as BGR uint8 [H, W, 3], one at a time."""
    capture = _open_capture(path)
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield frame
    finally:
        capture.release()


class VideoSink:
    """Writes BGR uint8 frames to ``path`` at ``fps``; the writer opens at the first frame, with its size.

    ``note`` receives one line when the container cannot keep the size or frame rate exactly (see the module docs).
    Use as a context manager; :attr:`written` counts the frames.
    """

    def __init__(self, path: str, fps: float, note: Callable[[str], None]):
        self.path, self.fps, self.note = path, fps or DEFAULT_FPS, note
        self.has_fps = bool(fps)
        self.writer: cv2.VideoWriter | None = None
        self.frame_size: tuple[int, int] | None = None  # (width, height) of the frames given
        self.size: tuple[int, int] | None = None  # (width, height) written
        self.written = 0

    def _open(self, width: int, height: int) -> None:
        avi = self.path.lower().endswith('.avi')
        fourcc = 'MJPG' if avi else 'mp4v'
        api = cv2.CAP_ANY
        self.frame_size = self.size = (width, height)
        if not self.has_fps:
            self.note(f'{self.path}: the input has no frame rate; written at {DEFAULT_FPS:g} fps')
        if width % 2 or height % 2:
            if avi:
                api = cv2.CAP_OPENCV_MJPEG
                if round(self.fps) != self.fps:
                    self.note(f'{self.path}: OpenCV\'s MJPEG writer, which keeps the odd size {width}x{height}, '
                              f'stores whole frame rates: {self.fps:g} fps written as {round(self.fps)} fps')
            else:
                self.size = (width - width % 2, height - height % 2)
                self.note(f'{self.path}: {fourcc} stores even sizes: {width}x{height} frames written as '
                          f'{self.size[0]}x{self.size[1]} (last column/row dropped; .avi keeps odd sizes)')
        os.makedirs(osp.dirname(self.path) or '.', exist_ok=True)
        self.writer = cv2.VideoWriter(self.path, api, cv2.VideoWriter_fourcc(*fourcc), self.fps, self.size)
        if not self.writer.isOpened():
            raise VideoError(f'{self.path}: OpenCV cannot open a {fourcc} video writer ({width}x{height}, '
                             f'{self.fps:g} fps) in this build; convert the input to .avi (MJPG) or .mp4')

    def write(self, frame: np.ndarray) -> None:
        if self.writer is None:
            self._open(frame.shape[1], frame.shape[0])
        elif frame.shape[1::-1] != self.frame_size:
            raise VideoError(f'{self.path}: frame {self.written + 1} is {frame.shape[1]}x{frame.shape[0]}, the '
                             f'first was {self.frame_size[0]}x{self.frame_size[1]}; a video needs one frame size')
        width, height = self.size
        self.writer.write(np.ascontiguousarray(frame[:height, :width]))
        self.written += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None

    def __enter__(self) -> 'VideoSink':
        return self

    def __exit__(self, *exc) -> None:
        self.close()
