"""Convert a state dict saved by the public Rainmer code into this package's :class:`Rainmer` keys.

The public code (``models/Rainmer_SA.py``) keeps the encoders under ``disentangle.encoder_q/encoder_k``,
the fusion under ``cross_fuse`` and the decoder prompts under ``attn.chr_promptAttn/detg_promptAttn``; the
backbone keys (``encoder_level1``, ...) are DRSformer's and stay as they are. Modules the public ablations
build but never use (e.g. the second prompt slot without the chromatic view) are dropped. The converted
network reproduces the public outputs only with ``chained_topk: true`` (the public TKSA chains its masks).

``models/Rainmer_SA_chralpha.py`` (the model of the public mixed config ``configs/rainmer_resize_alpha.yaml``)
adds a ``chr_z`` to every decoder attention (``decoder_levelX.i.attn.chr_z``); it becomes
``decoder_levelX.i.chr_z`` of a ``Rainmer(prompt_fusion='chralpha')``. The command detects such checkpoints.

Usage: ``rainmer convert net_epoch_xxx.pth rainmer_converted.pth [--check]``.
"""
import argparse
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch

from rainmer.archs.modules.encoder import PROMPT_VIEWS, VIEW_PROJECTOR, VIEWS

_PREFIXES = ('module.', '_orig_mod.')
_RENAMES = (
    (r'^disentangle\.encoder_q\.', 'query_encoder.'),
    (r'^disentangle\.encoder_k\.', 'key_encoder.'),
    (r'^(query|key)_encoder\.conv\.proj\.', r'\1_encoder.shallow_conv.'),
    (r'^(query|key)_encoder\.MoEs\.', r'\1_encoder.moes.'),
    (r'\.Atom\.chromatic_enc\.0\.', '.chromatic_projector.embed.'),
    (r'\.Atom\.chromatic_enc\.2\.', '.chromatic_projector.residual.'),
    (r'\.Atom\.degra_enc\.0\.', '.degradation_projector.embed.'),
    (r'\.Atom\.degra_enc\.2\.', '.degradation_projector.residual.'),
    (r'\.se([12])\.se\.1\.', r'.se\1.reduce.'),
    (r'\.se([12])\.se\.3\.', r'.se\1.expand.'),
    (r'^cross_fuse\.', 'local_fusion.'),
    (r'\.attn\.chr_promptAttn\.classifier\.', '.prompts.<slot0>.gate.'),
    (r'\.attn\.chr_promptAttn\.trans\.', '.prompts.<slot0>.projection.'),
    (r'\.attn\.detg_promptAttn\.classifier\.', '.prompts.<slot1>.gate.'),
    (r'\.attn\.detg_promptAttn\.trans\.', '.prompts.<slot1>.projection.'),
    (r'^(decoder_level\d\.\d+)\.attn\.chr_z$', r'\1.chr_z'),
)
_CHR_Z = re.compile(r'(^|\.)decoder_level\d\.\d+\.attn\.chr_z$')
_WEIGHT_GENERATOR = re.compile(r'\.layers\.0\.ca_fc\.[02]\.weight$')


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def public_prompt_fusion(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``chralpha`` for a state dict of the public ``Rainmer_SA_chralpha`` (``attn.chr_z`` keys), else ``sum``."""
    return 'chralpha' if any(_CHR_Z.search(key) for key in state_dict) else 'sum'


def _unused_prefixes(views: Sequence[str], local_fusion: bool) -> list[str]:
    """Key fragments of modules the target network does not have."""
    unused = []
    projectors = {VIEW_PROJECTOR[view] for view in views}
    for projector in PROMPT_VIEWS:
        if projector not in projectors:
            unused.append(f'_encoder.{projector}_projector.')
    if not views:
        unused.append('key_encoder.')
        if not local_fusion:
            unused.append('query_encoder.')
    if not local_fusion:
        unused.append('local_fusion.')
    if not all(view in views for view in PROMPT_VIEWS):  # the public chralpha's chr_z only weighs two prompts
        unused.append('.chr_z')
    return unused


def convert_reference_state_dict(state_dict: Mapping[str, torch.Tensor], views: Sequence[str] = VIEWS,
                                 local_fusion: bool = True,
                                 prompt_fusion: str | None = None) -> tuple[OrderedDict, list[str]]:
    """Rename a public Rainmer state dict to :class:`Rainmer`'s keys.

    Args:
        state_dict: The public model's ``state_dict()`` (``module.``/``_orig_mod.`` prefixes are removed).
        views: The target network's views (the public config's ``knowledge_atoms``).
        local_fusion: Whether the target uses local knowledge fusion (False for the public ``wolocf`` and
            ``baseline`` variants).
        prompt_fusion: The target's ``prompt_fusion``: ``chralpha`` for ``Rainmer_SA_chralpha`` (its ``chr_z`` keys
            are mapped), ``sum`` for the other public models; a mismatch with the checkpoint raises ValueError.
            None: whatever the checkpoint holds (:func:`public_prompt_fusion`); ``chr_z`` keys are always mapped,
            never dropped, so a strict load into a ``sum`` network fails on them.

    Returns:
        The converted state dict and the public keys that were dropped (modules the target does not build).
    """
    if prompt_fusion is not None and prompt_fusion != public_prompt_fusion(state_dict):
        found = public_prompt_fusion(state_dict)
        what = 'Rainmer_SA_chralpha (attn.chr_z keys)' if found == 'chralpha' else 'no attn.chr_z keys'
        raise ValueError(f'prompt_fusion {prompt_fusion!r} does not match the checkpoint: it has {what}; '
                         f'convert it with prompt_fusion {found!r}')
    views = [view for view in VIEWS if view in views]
    slots = [view for view in PROMPT_VIEWS if view in views]  # the public code fills slot 0 first
    unused = _unused_prefixes(views, local_fusion)
    converted, dropped = OrderedDict(), []
    for original, value in state_dict.items():
        key = _strip_prefixes(original)
        for pattern, replacement in _RENAMES:
            key = re.sub(pattern, replacement, key)
        slot = re.search(r'<slot(\d)>', key)
        if slot is not None:
            index = int(slot.group(1))
            if index >= len(slots):
                dropped.append(original)
                continue
            key = key.replace(slot.group(0), slots[index])
        if any(fragment in key for fragment in unused):
            dropped.append(original)
            continue
        if _WEIGHT_GENERATOR.search(key) and value.dim() == 4:
            value = value.flatten(1)  # 1x1 conv layout -> linear layout
        converted[key] = value
    return converted, dropped


def _load_state_dict(path: str) -> Mapping[str, torch.Tensor]:
    checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    for key in ('model', 'params_ema', 'params', 'state_dict'):
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(key), Mapping):
            return checkpoint[key]
    return checkpoint


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='rainmer convert', description='Convert a public Rainmer checkpoint to the rainmer Rainmer keys '
                                     '(saved as {"params": ...} for BasicSR\'s pretrain_network_g).')
    parser.add_argument('input', help='checkpoint of the public code (net_epoch_*.pth, or latest.tar)')
    parser.add_argument('output', help='where to write the converted checkpoint')
    parser.add_argument('--views', nargs='*', default=list(VIEWS), choices=VIEWS,
                        help='the public config\'s knowledge_atoms (default: all three)')
    parser.add_argument('--no-local-fusion', action='store_true',
                        help='the public wolocf/baseline variants (no local knowledge fusion)')
    parser.add_argument('--prompt-fusion', choices=('auto', 'sum', 'chralpha'), default='auto',
                        help='chralpha for the public Rainmer_SA_chralpha (configs/rainmer_resize_alpha.yaml), sum '
                             'for the others; auto (default): chralpha when the checkpoint has attn.chr_z keys')
    parser.add_argument('--check', action='store_true',
                        help='load the result strictly into a paper-size Rainmer(chained_topk=True, prompt_fusion=...)')
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    state_dict = _load_state_dict(args.input)
    found = public_prompt_fusion(state_dict)
    prompt_fusion = found if args.prompt_fusion == 'auto' else args.prompt_fusion
    if args.prompt_fusion == 'auto' and found == 'chralpha':
        print('Found attn.chr_z keys: a public Rainmer_SA_chralpha checkpoint (prompt_fusion: chralpha).')
    converted, dropped = convert_reference_state_dict(state_dict, args.views, not args.no_local_fusion,
                                                      prompt_fusion)
    chralpha = prompt_fusion == 'chralpha' and all(view in args.views for view in PROMPT_VIEWS)
    if args.check:
        from rainmer.archs.rainmer_arch import Rainmer

        network = Rainmer(views=args.views, local_fusion=not args.no_local_fusion, chained_topk=True,
                          prompt_fusion='chralpha' if chralpha else 'sum')
        network.load_state_dict(converted, strict=True)
    torch.save({'params': converted}, args.output)
    print(f'Wrote {len(converted)} tensors to {args.output}; dropped {len(dropped)} unused public keys.')
    options = '`chained_topk: true` and `prompt_fusion: chralpha`' if chralpha else '`chained_topk: true`'
    print(f'Build the network with {options} to reproduce the public outputs.')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
