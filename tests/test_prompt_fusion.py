"""The public code's mixed recipe (options/rainmer_mixed_public.yml): chralpha prompt fusion, public crop flips."""
import copy
import json
import os.path as osp
import random
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from data_fixtures import clean_image, rainy_image
from toolbox_fixtures import REPO_ROOT

import rainmer  # noqa: F401  (before basicsr: compat shim, registers the arch and the datasets)

# isort: split
from basicsr.archs import build_network

from rainmer.archs.fast import to_fast, to_plain
from rainmer.archs.modules.prompt import PromptedTransformerBlock, chromatic_weight
from rainmer.archs.rainmer_arch import Rainmer
from rainmer.data.pair_items import train_item
from rainmer.option_check import check_options
from rainmer.options import load_yaml

TINY = dict(dim=8, base_dim=16, num_blocks=[1, 1, 1, 1], heads=[1, 1, 2, 2], prompt_size=32)
BLOCK = dict(dim=16, num_heads=2, ffn_expansion_factor=2.66, bias=False, LayerNorm_type='WithBias',
             prompt_views=('chromatic', 'degradation'), prompt_dim=12, sparse_rates=(1 / 2, 2 / 3, 3 / 4, 4 / 5))


def _randomise(module: torch.nn.Module, seed: int, only_chr_z: bool = False) -> None:
    """Move the parameters (chr_z always) away from their initial values, so the tests see every term."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith('chr_z'):
                param.copy_(noise)
            elif not only_chr_z:
                param.add_(0.1 * noise)


def _prompts(batch: int, dim: int, seed: int, requires_grad: bool = False) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {view: F.normalize(torch.randn(batch, dim, 1, 1, generator=generator), dim=1).requires_grad_(requires_grad)
            for view in ('chromatic', 'degradation')}


def _reference_block(block: PromptedTransformerBlock, x, prompts, fusion: str, stop_gradient: bool = True):
    """The decoder block written out from the formulas (docs/public_recipe.md), using the block's submodules."""
    out = block.attn(block.norm1(x))
    p_chr = block.prompts['chromatic'](out, prompts['chromatic'])
    p_deg = block.prompts['degradation'](out, prompts['degradation'])
    if fusion == 'sum':
        out = out + p_chr + p_deg
    else:
        z_chr = prompts['chromatic'].detach() if stop_gradient else prompts['chromatic']
        direction = block.chr_z / block.chr_z.flatten().norm()
        a = (1 + (direction * z_chr).sum(dim=1, keepdim=True)) / 2  # [B, 1, 1, 1]
        out = out + a * p_chr + (1 - a) * p_deg
    x = x + out
    return x + block.ffn(block.norm2(x))


# ---------------------------------------------------------------------------------------------------- the fusion
def test_chralpha_block_equals_the_formula_forward_and_backward():
    block = PromptedTransformerBlock(**BLOCK, prompt_fusion='chralpha')
    assert block.chr_z.shape == (1, 12, 1, 1)
    assert torch.equal(block.chr_z.detach(), torch.ones(1, 12, 1, 1))  # public initialisation
    _randomise(block, 0)
    x = torch.randn(3, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    prompts = _prompts(3, 12, 2, requires_grad=True)
    out = block(x, prompts)
    expected = _reference_block(block, x, prompts, 'chralpha')
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    # a really varies per sample and lies in [0, 1] (unit vectors)
    a = chromatic_weight(block.chr_z, prompts['chromatic'])
    assert a.shape == (3, 1, 1, 1) and a.min() >= 0 and a.max() <= 1 and a.std() > 1e-3

    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    grads = torch.autograd.grad((out * weights).sum(), [prompts['chromatic'], block.chr_z])
    ref_grads = torch.autograd.grad((expected * weights).sum(), [prompts['chromatic'], block.chr_z])
    for grad, ref in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref, rtol=1e-5, atol=1e-6)
    # the stop-gradient matters: without it the chromatic prompt would receive a's gradient too
    no_stop = _reference_block(block, x, prompts, 'chralpha', stop_gradient=False)
    leaked = torch.autograd.grad((no_stop * weights).sum(), prompts['chromatic'])[0]
    assert (leaked - grads[0]).abs().max() > 1e-4


def test_the_mixing_weight_sends_no_gradient_into_the_chromatic_prompt():
    chr_z = torch.nn.Parameter(torch.randn(1, 12, 1, 1, generator=torch.Generator().manual_seed(0)))
    z_chr = _prompts(4, 12, 1, requires_grad=True)['chromatic']
    a = chromatic_weight(chr_z, z_chr)
    torch.testing.assert_close(a, (1 + (F.normalize(chr_z, dim=1) * z_chr).sum(1, keepdim=True)) / 2)
    a.sum().backward()
    assert z_chr.grad is None  # only through the stop-gradient: nothing reaches the prompt
    assert chr_z.grad is not None and chr_z.grad.abs().max() > 0


def test_default_sum_is_unchanged_and_builds_no_chr_z():
    block = PromptedTransformerBlock(**BLOCK)
    assert block.prompt_fusion == 'sum' and block.chr_z is None
    assert not any('chr_z' in key for key in block.state_dict())
    _randomise(block, 0)
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    prompts = _prompts(2, 12, 2)
    torch.testing.assert_close(block(x, prompts), _reference_block(block, x, prompts, 'sum'), rtol=1e-5, atol=1e-6)

    plain, mixed = Rainmer(**TINY, fast=False), Rainmer(**TINY, prompt_fusion='chralpha', fast=False)
    assert not any('chr_z' in key for key in plain.state_dict())
    chr_z = {key for key in mixed.state_dict() if key.endswith('chr_z')}
    assert chr_z == {f'decoder_level{level}.0.chr_z' for level in (1, 2, 3)}
    assert set(mixed.state_dict()) - chr_z == set(plain.state_dict())
    count = sum(p.numel() for p in mixed.parameters()) - sum(p.numel() for p in plain.parameters())
    assert count == 16 * 3  # base_dim per prompted decoder block
    # chr_z is a backbone parameter (the public code puts it in the backbone optimiser and the clipping)
    encoder = {id(p) for p in mixed.query_encoder.parameters()}
    assert all(id(mixed.get_parameter(key)) not in encoder for key in chr_z)


def test_chralpha_needs_both_prompts_and_unknown_fusions_fail():
    with pytest.raises(ValueError, match='chralpha'):
        Rainmer(**TINY, views=['degradation', 'detail'], prompt_fusion='chralpha')
    with pytest.raises(ValueError, match='prompt_fusion'):
        Rainmer(**TINY, prompt_fusion='product')


def test_chralpha_network_plain_equals_fast_forward_and_backward():
    torch.manual_seed(0)
    net = Rainmer(**TINY, prompt_fusion='chralpha')
    _randomise(net, 4, only_chr_z=True)
    generator = torch.Generator().manual_seed(5)
    x = torch.rand(2, 3, 32, 32, generator=generator)
    weights = torch.randn(2, 3, 32, 32, generator=generator)
    results = []
    for convert in (to_plain, to_fast):
        convert(net)
        net.zero_grad(set_to_none=True)
        out = net(x)
        (out * weights).sum().backward()
        grads = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
        results.append((out.detach(), grads))
    (plain_out, plain_grads), (fast_out, fast_grads) = results
    torch.testing.assert_close(fast_out, plain_out, rtol=1e-5, atol=1e-5)
    assert plain_grads.keys() == fast_grads.keys()
    assert {f'decoder_level{level}.0.chr_z' for level in (1, 2, 3)} <= plain_grads.keys()
    for name, plain_grad in plain_grads.items():  # tolerance relative to each tensor, as tests/test_rainmer_arch.py
        scale = plain_grad.abs().max().item()
        torch.testing.assert_close(fast_grads[name], plain_grad, atol=2e-3 * scale, rtol=1e-3, msg=name)


def test_paper_size_chralpha_has_the_public_parameter_counts():
    """Measured on the public Rainmer_SA_chralpha (configs/rainmer_resize_alpha.yaml): 35,825,344 trainable."""
    net = Rainmer(prompt_fusion='chralpha', chained_topk=True, fast=False)
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == 35_823_296 + 16 * 128
    assert sum(p.numel() for p in net.parameters()) == 36_764_832 + 16 * 128


# ----------------------------------------------------------------------------------------------------- the flips
SIDE = 24
PUBLIC_OPT = dict(gt_size=SIDE, resize_size=SIDE, flip_mode='public')


def _pair():
    gt = clean_image(7, SIDE, SIDE)
    return rainy_image(gt, 7), gt


def _public_reference(lq: np.ndarray, gt: np.ndarray, size: int):
    """datasets/dataset_noresize.py of the public code (CHW torch tensors, its own draws in its own order)."""
    inp, tar = (torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1) for img in (lq, gt))
    hh, ww = tar.shape[1], tar.shape[2]
    rr = random.randint(0, hh - size)
    cc = random.randint(0, ww - size)
    inp, tar = inp[:, rr:rr + size, cc:cc + size], tar[:, rr:rr + size, cc:cc + size]
    aug = random.randint(0, 3)
    if aug == 1:
        inp, tar = inp.flip(1), tar.flip(1)
    elif aug == 2:
        inp, tar = inp.flip(2), tar.flip(2)
    return inp, tar


def test_public_flips_are_the_public_draws_on_the_crop():
    lq, gt = clean_image(3, 40, 48), clean_image(4, 40, 48)
    for seed in range(40):
        random.seed(seed)
        item = train_item(lq, gt, dict(gt_size=24, resize_size=16, flip_mode='public'), 'pair')
        random.seed(seed)
        ref_lq, ref_gt = _public_reference(lq[..., ::-1], gt[..., ::-1], 24)  # items are RGB
        assert torch.equal(item['lq'], ref_lq.float() / 255) and torch.equal(item['gt'], ref_gt.float() / 255)


def test_public_flip_distribution_and_unflipped_resized_views():
    lq, gt = _pair()
    ref = train_item(lq, gt, dict(PUBLIC_OPT, flip_mode='basicsr', use_hflip=False, use_rot=False), 'pair')
    kinds = {'none': lambda t: t, 'vertical': lambda t: t.flip(1), 'horizontal': lambda t: t.flip(2)}
    random.seed(0)
    counts = Counter()
    draws = 4000
    for _ in range(draws):
        item = train_item(lq, gt, PUBLIC_OPT, 'pair')
        found = [kind for kind, flip in kinds.items() if torch.equal(item['gt'], flip(ref['gt']))]
        assert len(found) == 1
        assert torch.equal(item['lq'], kinds[found[0]](ref['lq']))  # the pair stays aligned
        assert torch.equal(item['lq_resize'], ref['lq_resize']) and torch.equal(item['gt_resize'], ref['gt_resize'])
        counts[found[0]] += 1
    shares = {kind: counts[kind] / draws for kind in kinds}
    for kind, expected in (('none', 0.5), ('vertical', 0.25), ('horizontal', 0.25)):
        assert abs(shares[kind] - expected) < 0.03, shares  # > 4 standard deviations


# ---------------------------------------------------------------------------------------------------- the options
def _option(name: str) -> dict:
    return json.loads(json.dumps(load_yaml(osp.join(REPO_ROOT, 'options', name))))


def _flatten(tree, prefix=''):
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f'{prefix}{key}.'))
        return out
    return {prefix[:-1]: tree}


def test_public_yaml_passes_the_option_check_and_differs_only_where_the_public_code_does():
    path = osp.join(REPO_ROOT, 'options', 'rainmer_mixed_public.yml')
    check_options(load_yaml(path), path)
    paper, public = _flatten(_option('rainmer_mixed.yml')), _flatten(_option('rainmer_mixed_public.yml'))
    changed = {key: (paper.get(key), public.get(key)) for key in paper.keys() | public.keys()
               if paper.get(key) != public.get(key)}
    assert changed == {
        'name': ('Rainmer_mixed', 'Rainmer_mixed_public'),
        'datasets.train.use_hflip': (True, None),
        'datasets.train.use_rot': (False, None),
        'datasets.train.flip_mode': (None, 'public'),
        'network_g.prompt_fusion': (None, 'chralpha'),
        'network_g.chained_topk': (None, True),
        'train.scheduler.eta_mins': ([3e-4, 1e-6], [1e-4, 1e-6]),
    }
    assert public['train.optim_encoder.weight_decay'] == 0.01  # the public 1e-5 is never read: AdamW's default
    net = build_network(copy.deepcopy(_option('rainmer_mixed_public.yml')['network_g']))
    assert isinstance(net, Rainmer) and net.prompt_fusion == 'chralpha'
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == 35_825_344
