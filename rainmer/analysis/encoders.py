"""Encoders to analyse: any network with ``encode(x) -> dict[str, Tensor]``, or an adapter function.

The interface (docs/analysis.md): ``encode(images [B, 3, H, W] in [0, 1]) -> {space: Tensor [B, ...]}``.
Each key is a representation space; vectors [B, D] are analysed by default, maps [B, C, h, w] when asked
for (flattened). A network without ``encode`` is analysed through ``analysis.encode: 'module:function'``,
a function ``(network, images) -> dict[str, Tensor]``.
"""
import copy
import importlib
import os.path as osp
from collections.abc import Callable, Mapping
from functools import partial

import torch
from torch import Tensor, nn

from rainmer.analysis.errors import AnalysisError

EncodeFn = Callable[[Tensor], Mapping[str, Tensor]]


def load_weights(network: nn.Module, path: str, param_key: str | None = 'params', strict: bool = True) -> None:
    """Load a toolbox checkpoint (``{'params': state_dict}``, or a bare state dict) into ``network``.

    As BasicSR's ``load_network``: a missing ``param_key`` falls back to ``'params'``; ``module.`` prefixes
    are removed.
    """
    if not osp.isfile(path):
        raise AnalysisError(f'checkpoint: no file at {path}')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:  # pickle/zip errors of a file that is not a checkpoint
        raise AnalysisError(f'checkpoint: cannot read {path}: {error}') from error
    if isinstance(state, Mapping) and param_key:
        if param_key not in state and 'params' in state:
            param_key = 'params'
        state = state.get(param_key, state)
    if not isinstance(state, Mapping):
        raise AnalysisError(f'checkpoint: {path} does not hold a state dict')
    state = {key.removeprefix('module.'): value for key, value in state.items()}
    missing, unexpected = _key_mismatch(network, state)
    if strict and (missing or unexpected):
        raise AnalysisError(
            f'checkpoint: {path} does not fit network_g ({type(network).__name__}): {len(missing)} missing keys '
            f'{missing[:3]}, {len(unexpected)} unexpected keys {unexpected[:3]}; check network_g or set '
            'path.strict_load_g: false')
    try:
        network.load_state_dict(state, strict=strict)
    except RuntimeError as error:  # shape mismatches
        raise AnalysisError(f'checkpoint: {path} does not fit network_g: {str(error).splitlines()[0]}') from error


def _key_mismatch(network: nn.Module, state: Mapping) -> tuple[list[str], list[str]]:
    expected = set(network.state_dict())
    return sorted(expected - set(state)), sorted(set(state) - expected)


def build_network(network_opt: Mapping) -> nn.Module:
    """A registered arch from a ``network_g`` mapping (``type`` + arguments)."""
    from basicsr.archs import build_network as toolbox_build_network

    if not isinstance(network_opt, Mapping) or 'type' not in network_opt:
        raise AnalysisError('network_g: expected a mapping with a type (the arch options of the trained model)')
    try:
        return toolbox_build_network(copy.deepcopy(dict(network_opt)))
    except TypeError as error:
        raise AnalysisError(f"network_g ({network_opt['type']}): {error}") from error


def resolve_encode(network: nn.Module, adapter: str | None = None) -> EncodeFn:
    """``network.encode``, or ``partial(adapter_function, network)`` for ``adapter = 'module:function'``."""
    if adapter:
        module_name, _, attribute = str(adapter).partition(':')
        if not module_name or not attribute:
            raise AnalysisError(f"analysis.encode: expected 'module:function', got '{adapter}'")
        try:
            function = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise AnalysisError(f"analysis.encode: cannot import '{adapter}': {error}") from error
        return partial(function, network)
    encode = getattr(network, 'encode', None)
    if not callable(encode):
        raise AnalysisError(
            f'{type(network).__name__} has no encode(x) -> dict method; give analysis.encode: '
            "'module:function' (a function (network, images) -> dict), see docs/analysis.md")
    return encode


class RepresentationEncoder:
    """Images -> representations per space, without gradients, on one device.

    Args:
        encode: The encoder's ``encode`` (see the module docstring).
        device: Where the network and the images go.
        resize: Side the images are resized to (bilinear, as Rainmer's prompt input) so that they batch;
            None keeps their size.
    """

    def __init__(self, network: nn.Module, encode: EncodeFn, device: torch.device | str = 'cpu',
                 resize: int | None = None) -> None:
        self.network = network.to(device).eval()
        self.encode = encode
        self.device = torch.device(device)
        self.resize = resize

    def prepare(self, image: Tensor) -> Tensor:
        """One CHW image -> [1, C, H, W] on the device, resized when asked."""
        x = image.unsqueeze(0).to(self.device, torch.float32)
        if self.resize and tuple(x.shape[-2:]) != (self.resize, self.resize):
            x = torch.nn.functional.interpolate(x, size=(self.resize, self.resize), mode='bilinear',
                                                align_corners=False)
        return x

    @torch.no_grad()
    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        reps = self.encode(images)
        if not isinstance(reps, Mapping):
            raise AnalysisError(f'encode returned {type(reps).__name__}; expected a dict of space -> Tensor')
        return {str(space): rep.detach().float().cpu() for space, rep in reps.items()}


def load_encoder(network_opt: Mapping, checkpoint: str, *, param_key: str | None = 'params', strict: bool = True,
                 adapter: str | None = None, device: torch.device | str = 'cpu',
                 resize: int | None = None) -> RepresentationEncoder:
    """Build ``network_g``, load its trained weights and wrap its ``encode`` (or the adapter).

    ``resize`` defaults to the network's ``prompt_size`` when it has one (Rainmer), so images batch and the
    network sees exactly what its own ``encode`` would feed the query encoder.
    """
    network = build_network(network_opt)
    load_weights(network, checkpoint, param_key, strict)
    encode = resolve_encode(network, adapter)
    if resize is None:
        resize = getattr(network, 'prompt_size', None)
    return RepresentationEncoder(network, encode, device, resize)
