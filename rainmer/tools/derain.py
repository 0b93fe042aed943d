"""``rainmer derain``: restore your own photographs and videos (no ground truth needed) with any trained or converted
checkpoint.

``rainmer derain INPUT... -o OUT [--weights W] [--opt YML | --arch NAME --arch-opt k=v ...] [options]``

* INPUT: image files, videos, folders (``--recursive``: nested folders are mirrored under OUT) or globs; JPEG, PNG,
  BMP, TIFF and WebP as OpenCV reads them (read as 8-bit colour). Outputs keep the file names and relative paths,
  8-bit, in the input's format (JPEG at quality 95, WebP lossless; ``--png`` writes PNG for every image). OUT never
  overwrites an input, and may not lie inside a folder read recursively.
* Videos (``.mp4``, ``.avi``, ``.mov``, ``.mkv``) are restored frame by frame, streamed (one frame in memory), into
  a video with the same frame count, frame rate and size (``rainmer/tools/derain_video.py``).
* The network: ``--weights experiments/<name>`` (its option YAML and newest ``models/net_g_*.pth``, as ``rainmer
  compare`` resolves it), ``--weights net.pth`` next to its YAML (or in ``experiments/<name>/models/``), ``--opt``
  (a train or test YAML) with or without ``--weights``, or ``--arch NAME --arch-opt key=value ...``. Checkpoint keys
  ``params`` (``params_ema`` with ``--ema``), ``state_dict`` or a bare state dict, ``module.`` prefixes removed; a
  public Rainmer checkpoint (``disentangle.`` keys) is converted on the fly (``chained_topk`` set; a paper-size
  Rainmer when no options are given).
* Any registered network, padded to its size multiple; images whose longer side is above 1024 run in overlapping
  tiles (``--tile 512 --overlap 32``; ``--tile 0``: never), with the prompt image taken from the whole image for
  networks whose ``forward`` takes ``lq_resize`` (as ``DerainModel.restore`` does).
"""
import argparse
import csv
import glob
import os
import os.path as osp
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import yaml

from rainmer.plugins import load_plugins

load_plugins()

from basicsr.archs import build_network  # noqa: E402
from tqdm import tqdm  # noqa: E402

from rainmer.archs.fast import set_fast  # noqa: E402
from rainmer.compat.checkpoint import CheckpointError, key_mismatch, network_state  # noqa: E402
from rainmer.errors import OptionError, UserError  # noqa: E402
from rainmer.models.derain_model import AMP_DTYPES, DerainModel, restore_image, size_multiple  # noqa: E402
from rainmer.tools.compare import _newest_network, resolve_model  # noqa: E402
from rainmer.tools.convert_checkpoint import convert_reference_state_dict, public_prompt_fusion  # noqa: E402
from rainmer.tools.derain_video import (  # noqa: E402
    VIDEO_EXTENSIONS,
    VideoError,
    VideoInfo,
    VideoSink,
    is_video,
    probe_video,
    read_frames,
)

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
JPEG_EXTENSIONS = ('.jpg', '.jpeg')
AUTO_TILE_ABOVE = 1024  # longer side above which images are tiled unless --tile is given


class DerainError(UserError):
    """An input, output or checkpoint ``rainmer derain`` cannot use; the message says which."""


@dataclass
class Job:
    source: str
    relative: str  # output path relative to OUT (the input's name, with its folder when read from a folder)


# ---------------------------------------------------------------------------------------------- inputs
def _is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def _is_input(path: str) -> bool:
    return _is_image(path) or is_video(path)


_KINDS = ', '.join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)


def collect_inputs(inputs: list[str], recursive: bool) -> list[Job]:
    """Image and video files, folders (recursively with ``recursive``) and globs as jobs with their output paths."""
    jobs = []
    for spec in inputs:
        if osp.isdir(spec):
            if recursive:
                found = [osp.join(root, name) for root, dirs, names in os.walk(spec) for name in names]
            else:
                found = [osp.join(spec, name) for name in os.listdir(spec)]
            files = sorted(path for path in found if osp.isfile(path) and _is_input(path))
            if not files:
                raise DerainError(f'{spec}: no images or videos ({_KINDS}) in this folder'
                                  + ('' if recursive else '; --recursive reads its subfolders'))
            jobs += [Job(path, osp.relpath(path, spec)) for path in files]
        elif osp.isfile(spec):
            if not _is_input(spec):
                raise DerainError(f'{spec}: not an image or video file ({_KINDS})')
            jobs.append(Job(spec, osp.basename(spec)))
        else:
            matches = sorted(path for path in glob.glob(spec, recursive=recursive)
                             if osp.isfile(path) and _is_input(path))
            if not matches:
                raise FileNotFoundError(f'{spec}: no such image, video, folder or matching file')
            jobs += [Job(path, osp.basename(path)) for path in matches]
    return jobs


def output_path(job: Job, out_dir: str, png: bool) -> str:
    """Where a job's output goes: its relative path under OUT (images as PNG with ``png``; videos keep their
    container)."""
    stem, ext = osp.splitext(job.relative)
    return osp.join(out_dir, stem + ('.png' if png and not is_video(job.source) else ext))


def compare_path(job: Job, out_dir: str) -> str:
    """Where ``--compare`` writes input | output: ``<stem>_compare.png``, or ``<stem>_compare<ext>`` for a video."""
    stem, ext = osp.splitext(job.relative)
    return osp.join(out_dir, stem + '_compare' + (ext if is_video(job.source) else '.png'))


def check_outputs(jobs: list[Job], inputs: list[str], out_dir: str, recursive: bool, png: bool,
                  compare: bool) -> None:
    """Refuse (one line) when OUT would overwrite an input, two inputs share an output, or OUT lies inside a
    folder read recursively."""
    out_real = osp.realpath(out_dir)
    if recursive:
        for spec in inputs:
            if osp.isdir(spec):
                folder = osp.realpath(spec)
                if out_real == folder or out_real.startswith(folder + os.sep):
                    raise DerainError(f'-o {out_dir} is inside the input folder {spec}, which is read recursively; '
                                      'choose an output folder outside it')
    sources = {osp.realpath(job.source): job.source for job in jobs}
    written: dict[str, str] = {}
    for job in jobs:
        targets = [output_path(job, out_dir, png)]
        if compare:
            targets.append(compare_path(job, out_dir))
        for target in targets:
            real = osp.realpath(target)
            if real in sources:
                raise DerainError(f'-o {out_dir} would overwrite the input {sources[real]}; choose another output '
                                  'folder')
            if real in written and written[real] != job.source:
                raise DerainError(f'{written[real]} and {job.source} would both be written to {target}; derain them '
                                  'into separate output folders')
            written[real] = job.source


def read_image(path: str) -> np.ndarray:
    """BGR uint8 [H, W, 3] (grey and 16-bit images as 8-bit colour, alpha dropped)."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise DerainError(f'{path}: OpenCV cannot read this image')
    return image


def write_image(path: str, image: np.ndarray) -> None:
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    ext = osp.splitext(path)[1].lower()
    params = []
    if ext in JPEG_EXTENSIONS:
        params = [cv2.IMWRITE_JPEG_QUALITY, 95]
    elif ext == '.webp':
        params = [cv2.IMWRITE_WEBP_QUALITY, 101]  # lossless
    if not cv2.imwrite(path, image, params):
        raise DerainError(f'{path}: OpenCV cannot write this image')


def to_tensor(bgr: np.ndarray, device: torch.device) -> torch.Tensor:
    """RGB float [1, 3, H, W] in [0, 1], as BasicSR's datasets read images."""
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous().to(device)


def to_image(tensor: torch.Tensor) -> np.ndarray:
    """BGR uint8 from an RGB [1, 3, H, W] output (clamped to [0, 1] and rounded, as BasicSR's ``tensor2img``)."""
    rgb = tensor[0].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return cv2.cvtColor((rgb * 255.0).round().astype(np.uint8), cv2.COLOR_RGB2BGR)


# ---------------------------------------------------------------------------------------------- network
def _parse_arch_opts(items: list[str]) -> dict:
    opts = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep or not key:
            raise OptionError(f'--arch-opt {item!r}: expected key=value (e.g. dim=48)')
        opts[key.strip()] = yaml.safe_load(value)
    return opts


def _options_near(checkpoint: str) -> str | None:
    """The experiment-like folder holding the option YAML of a checkpoint: its own folder, or the parent of a
    ``models/`` folder."""
    folder = osp.dirname(osp.abspath(checkpoint))
    for candidate in (folder, osp.dirname(folder) if osp.basename(folder) == 'models' else None):
        if candidate and glob.glob(osp.join(candidate, '*.yml')):
            return candidate
    return None


def resolve_network(args) -> tuple[dict, str, dict]:
    """(network_g options, checkpoint path, whole options) from --weights / --opt / --arch."""
    if args.arch:
        if not args.weights or not osp.isfile(args.weights):
            raise FileNotFoundError(f'--arch {args.arch}: --weights must name a checkpoint file '
                                    f'({args.weights or "none given"})')
        return {'type': args.arch, **_parse_arch_opts(args.arch_opt)}, args.weights, {}
    if args.arch_opt:
        raise OptionError('--arch-opt needs --arch')
    if args.opt:
        spec = args.opt + (f'={args.weights}' if args.weights else '')
        if args.weights and osp.isdir(args.weights):
            checkpoint = _newest_network(osp.join(args.weights, 'models')) or ''
            spec = f'{args.opt}={checkpoint}'
        entry = resolve_model(spec)
        return dict(entry.opt['network_g']), entry.checkpoint, entry.opt
    if not args.weights:
        raise OptionError('give the network: --weights (an experiment folder or a checkpoint), --opt YML or --arch')
    if osp.isdir(args.weights):
        entry = resolve_model(args.weights)
        return dict(entry.opt['network_g']), entry.checkpoint, entry.opt
    if not osp.isfile(args.weights):
        raise FileNotFoundError(f'--weights {args.weights}: no such file or folder')
    folder = _options_near(args.weights)
    if folder:
        entry = resolve_model(f'{folder}={args.weights}')
        return dict(entry.opt['network_g']), entry.checkpoint, entry.opt
    return {}, args.weights, {}  # a public Rainmer checkpoint carries its layout; anything else needs options


def load_state_dict(checkpoint: str, ema: bool, preferred: str | None) -> OrderedDict:
    """The network's state dict in ``checkpoint`` (every layout :func:`network_state` reads), ``params_ema`` with
    ``ema``."""
    try:
        saved = torch.load(checkpoint, map_location='cpu', weights_only=True)
    except Exception as error:  # pickle/zip errors of a file that is not a checkpoint
        raise DerainError(f'{checkpoint}: not a readable PyTorch checkpoint ({type(error).__name__})') from error
    if ema and not (isinstance(saved, Mapping) and 'params_ema' in saved):
        keys = ', '.join(map(str, saved)) if isinstance(saved, Mapping) else type(saved).__name__
        raise DerainError(f'{checkpoint}: --ema, but the checkpoint has no params_ema (keys: {keys})')
    try:
        return network_state(saved, 'params_ema' if ema else preferred or 'params', checkpoint)[0]
    except CheckpointError as error:
        raise DerainError(str(error)) from error


def build_restorer(network_opt: dict, checkpoint: str, ema: bool, preferred: str | None) -> tuple[torch.nn.Module,
                                                                                                 dict]:
    """The network with its weights loaded strictly; returns (network, the network options used)."""
    state = load_state_dict(checkpoint, ema, preferred)
    network_opt = dict(network_opt)
    if any(key.startswith('disentangle.') for key in state):  # the public Rainmer code's layout
        if not network_opt:
            network_opt = {'type': 'Rainmer', 'prompt_fusion': public_prompt_fusion(state)}
        if network_opt.get('type') != 'Rainmer':
            raise DerainError(f'{checkpoint}: a public Rainmer checkpoint, but the options name '
                              f'{network_opt.get("type")}; use a Rainmer network_g (or no options)')
        views = network_opt.get('views')
        try:
            state, _ = convert_reference_state_dict(
                state, **({'views': views} if views is not None else {}),
                local_fusion=network_opt.get('local_fusion', True), prompt_fusion=network_opt.get('prompt_fusion'))
        except ValueError as error:
            raise DerainError(f'{checkpoint}: {error}') from error
        network_opt['chained_topk'] = True
    if not network_opt:
        raise OptionError(f'{checkpoint}: no option YAML next to this checkpoint; give --opt YML or --arch NAME '
                          '--arch-opt key=value ...')
    try:
        net = build_network(dict(network_opt))
    except TypeError as error:
        raise OptionError(f'network_g ({network_opt.get("type")}): {error}') from error
    mismatch = key_mismatch(net.state_dict(), state)
    if mismatch:
        raise DerainError(f'{checkpoint} does not fit network_g ({network_opt["type"]}): {mismatch}; check the options '
                          '(--opt/--arch-opt) or the file')
    net.load_state_dict(state, strict=True)
    return net.eval(), network_opt


def restore(net: torch.nn.Module, network_opt: dict, lq: torch.Tensor, tile: int, overlap: int,
            pad_multiple: int | None = None) -> torch.Tensor:
    """The network's output for a whole image: as ``DerainModel.restore`` (padded to the size multiple, in tiles
    when the image's longer side exceeds ``tile`` (0: never), the prompt image from the whole image)."""
    return restore_image(net, lq, size_multiple(net, network_opt, pad_multiple), 1, tile, overlap)


def pick_device(name: str) -> torch.device:
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name == 'cuda' and not torch.cuda.is_available():
        raise OptionError('--device cuda: no CUDA device is available (use --device cpu or auto)')
    return torch.device(name)


# ---------------------------------------------------------------------------------------------- metrics
def _gt_for(job: Job, gt_dir: str) -> str | None:
    stem = osp.splitext(job.relative)[0]
    for candidate in [osp.join(gt_dir, job.relative)] + [osp.join(gt_dir, stem + ext) for ext in IMAGE_EXTENSIONS]:
        if osp.isfile(candidate):
            return candidate
    return None


def image_metrics(output: torch.Tensor, gt: np.ndarray) -> dict[str, float]:
    """PSNR/SSIM on Y of the network's RGB [1, 3, H, W] output against a uint8 BGR ground truth, in both protocols,
    from the same data as ``basicsr test`` (``DerainModel.metric_data``): BasicSR's on the 8-bit output, the public
    Rainmer code's on the float output clamped to [0, 1]."""
    from basicsr.metrics import calculate_psnr, calculate_ssim

    from rainmer.metrics import calculate_psnr_rainmer, calculate_ssim_rainmer

    cpu = torch.device('cpu')
    data = DerainModel.metric_data({'result': output.detach().float().cpu(), 'gt': to_tensor(gt, cpu)})
    return {
        'psnr_y': float(calculate_psnr(**data, crop_border=0, test_y_channel=True)),
        'ssim_y': float(calculate_ssim(**data, crop_border=0, test_y_channel=True)),
        'psnr_rainmer': float(calculate_psnr_rainmer(**data, crop_border=0, test_y_channel=True)),
        'ssim_rainmer': float(calculate_ssim_rainmer(**data, crop_border=0, test_y_channel=True)),
    }


# ---------------------------------------------------------------------------------------------- command
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='rainmer derain', description='Derain photographs with a trained or converted checkpoint '
        '(docs/derain.md).')
    parser.add_argument('inputs', nargs='+', metavar='INPUT', help='image files, videos, folders or globs')
    parser.add_argument('-o', '--output', required=True, metavar='OUT', help='output folder')
    parser.add_argument('--weights', help='experiment folder (experiments/<name>) or checkpoint (.pth)')
    parser.add_argument('--opt', help='train or test option YAML (its network_g; its checkpoint unless --weights)')
    parser.add_argument('--arch', help='registered network name (with --weights and --arch-opt)')
    parser.add_argument('--arch-opt', nargs='*', default=[], metavar='KEY=VALUE',
                        help='network arguments, values in YAML (e.g. dim=48 num_blocks=[4,6,6,8])')
    parser.add_argument('--ema', action='store_true', help='load params_ema instead of params')
    parser.add_argument('--recursive', '-r', action='store_true', help='read folders recursively (mirrored in OUT)')
    parser.add_argument('--png', action='store_true',
                        help='write every image output as PNG (videos keep their container)')
    parser.add_argument('--tile', type=int, default=None,
                        help=f'tile size (default: 512 for images above {AUTO_TILE_ABOVE} px; 0: never tile)')
    parser.add_argument('--overlap', type=int, default=32, help='tile overlap in pixels (32)')
    parser.add_argument('--pad-multiple', type=int, default=None, help="override of the network's size multiple")
    parser.add_argument('--device', choices=('auto', 'cpu', 'cuda'), default='auto')
    parser.add_argument('--amp', choices=('bf16', 'fp16'), default=None, help='autocast dtype (default: fp32)')
    parser.add_argument('--fast', choices=('auto', 'on', 'off'), default=None,
                        help="the networks' fast evaluation (default: as the options say)")
    parser.add_argument('--compare', action='store_true',
                        help='also write <name>_compare.png (videos: <name>_compare.<ext>): input | output')
    parser.add_argument('--gt', metavar='DIR',
                        help='ground-truth folder (same names): PSNR/SSIM of the images into metrics.csv')
    return parser


def side_by_side(image: np.ndarray, restored: np.ndarray) -> np.ndarray:
    """input | output, the output resized to the input's size if the network changed it."""
    if restored.shape != image.shape:
        restored = cv2.resize(restored, image.shape[1::-1], interpolation=cv2.INTER_CUBIC)
    return np.concatenate([image, restored], axis=1)


def _plural(count: int, word: str) -> str:
    return f'{count} {word}{"s" * (count != 1)}'


def _note(message: str) -> None:
    tqdm.write(f'note: {message}', file=sys.stderr)


def derain_video(job: Job, info: VideoInfo, derain: Callable[[np.ndarray], tuple[np.ndarray, torch.Tensor]],
                 out_dir: str, compare: bool, bar: tqdm) -> int:
    """Restore a video frame by frame (one frame in memory) into OUT (and its input | output video with
    ``compare``); ``derain(frame)`` returns (restored frame, float output). Returns the number of frames."""
    with VideoSink(output_path(job, out_dir, False), info.fps, _note) as sink, \
            VideoSink(compare_path(job, out_dir), info.fps, _note) as side:  # opens at its first frame: unused
        for frame in read_frames(job.source):
            restored, _ = derain(frame)
            sink.write(restored)
            if compare:
                side.write(side_by_side(frame, restored))
            bar.update(1)
    if not sink.written:
        raise VideoError(f'{job.source}: OpenCV read no frame of this video (damaged, or a codec its build lacks); '
                         'convert it, e.g. to .mp4 or .avi (MJPG)')
    if sink.written != (info.frames or 1):  # the container's frame count was an estimate
        bar.total += sink.written - (info.frames or 1)
        bar.refresh()
    return sink.written


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.tile is not None and args.tile < 0 or args.overlap < 0:
        raise OptionError('--tile and --overlap must be >= 0')
    if args.tile and args.overlap >= args.tile:
        raise OptionError(f'--overlap {args.overlap} must be smaller than --tile {args.tile}')
    if args.gt and not osp.isdir(args.gt):
        raise FileNotFoundError(f'--gt {args.gt}: no such folder')
    jobs = collect_inputs(args.inputs, args.recursive)
    check_outputs(jobs, args.inputs, args.output, args.recursive, args.png, args.compare)
    videos: dict[str, VideoInfo] = {job.source: probe_video(job.source) for job in jobs if is_video(job.source)}
    if args.gt and len(videos) == len(jobs):
        raise OptionError('--gt measures images, and every input is a video; derain videos without --gt')

    network_opt, checkpoint, opt = resolve_network(args)
    preferred = (opt.get('path') or {}).get('param_key_g') or 'params'
    net, network_opt = build_restorer(network_opt, checkpoint, args.ema, preferred)
    if args.fast is not None:
        set_fast(net, {'on': True, 'off': False}.get(args.fast, 'auto'))
    device = pick_device(args.device)
    net = net.to(device)
    dtype = AMP_DTYPES[args.amp] if args.amp else None
    tile_default = 512

    def derain(image: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        """(the restored BGR uint8 image, the network's float output) of one image or frame."""
        tile = args.tile if args.tile is not None else (tile_default if max(image.shape[:2]) > AUTO_TILE_ABOVE
                                                        else 0)
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            output = restore(net, network_opt, to_tensor(image, device), tile, args.overlap, args.pad_multiple)
        output = output.float()
        return to_image(output), output

    if args.gt and videos:
        _note(f'--gt: {_plural(len(videos), "video")} not measured (metrics are for images)')
    rows = []
    frames = 0
    total = sum(1 if job.source not in videos else videos[job.source].frames or 1 for job in jobs)
    start = time.perf_counter()
    with tqdm(total=total, unit='frame' if videos else 'img', desc='derain', file=sys.stderr) as bar:
        for job in jobs:
            if job.source in videos:
                frames += derain_video(job, videos[job.source], derain, args.output, args.compare, bar)
                continue
            image = read_image(job.source)
            restored, output = derain(image)
            write_image(output_path(job, args.output, args.png), restored)
            if args.compare:
                write_image(compare_path(job, args.output), side_by_side(image, restored))
            if args.gt:
                gt_path = _gt_for(job, args.gt)
                if gt_path is None:
                    raise FileNotFoundError(f'--gt {args.gt}: no ground truth for {job.relative}')
                rows.append({'image': job.relative, **image_metrics(output, read_image(gt_path))})
            frames += 1
            bar.update(1)
    seconds = time.perf_counter() - start
    if rows:
        metrics_file = osp.join(args.output, 'metrics.csv')
        names = [key for key in rows[0] if key != 'image']
        mean = {'image': 'mean', **{key: float(np.mean([row[key] for row in rows])) for key in names}}
        with open(metrics_file, 'w', newline='', encoding='utf-8') as f:
            writer = csv.DictWriter(f, fieldnames=['image', *names])
            writer.writeheader()
            for row in [*rows, mean]:
                writer.writerow({k: (f'{v:.6f}' if isinstance(v, float) else v) for k, v in row.items()})
        print('mean ' + ', '.join(f'{key} {mean[key]:.4f}' for key in names) + f' ({metrics_file})')
    images = len(jobs) - len(videos)
    done = ' and '.join(([_plural(images, 'image')] if images else [])
                        + ([f'{_plural(len(videos), "video")} ({_plural(frames - images, "frame")})'] if videos
                           else []))
    rate = f'{frames / max(seconds, 1e-9):.2f} {"frames" if videos else "img"}/s'
    print(f'derained {done} in {seconds:.1f} s ({rate}) on {device.type} -> {args.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
