import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import re

import torch

from rainmer.archs.rainmer_arch import Rainmer
from rainmer.tools.convert_checkpoint import convert_reference_state_dict, main

TINY = dict(dim=8, base_dim=16, num_blocks=[1, 1, 1, 1], heads=[1, 1, 2, 2], prompt_size=32, chained_topk=True)
PUBLIC_PROMPT_SLOTS = ('chr_promptAttn', 'detg_promptAttn')


def to_public_names(state_dict, prompt_views):
    """Our keys -> the public Rainmer code's keys and layouts (models/Rainmer_SA.py, models/encoder.py)."""
    public = {}
    for key, value in state_dict.items():
        key = re.sub(r'^query_encoder\.', 'disentangle.encoder_q.', key)
        key = re.sub(r'^key_encoder\.', 'disentangle.encoder_k.', key)
        key = key.replace('.shallow_conv.', '.conv.proj.').replace('.moes.', '.MoEs.')
        key = key.replace('.chromatic_projector.embed.', '.Atom.chromatic_enc.0.')
        key = key.replace('.chromatic_projector.residual.', '.Atom.chromatic_enc.2.')
        key = key.replace('.degradation_projector.embed.', '.Atom.degra_enc.0.')
        key = key.replace('.degradation_projector.residual.', '.Atom.degra_enc.2.')
        key = re.sub(r'\.se([12])\.reduce\.', r'.se\1.se.1.', key)
        key = re.sub(r'\.se([12])\.expand\.', r'.se\1.se.3.', key)
        key = re.sub(r'^local_fusion\.', 'cross_fuse.', key)
        for view, slot in zip(prompt_views, PUBLIC_PROMPT_SLOTS):
            key = key.replace(f'.prompts.{view}.gate.', f'.attn.{slot}.classifier.')
            key = key.replace(f'.prompts.{view}.projection.', f'.attn.{slot}.trans.')
        if not key.startswith('disentangle.') and re.search(r'\.ca_fc\.[02]\.weight$', key):
            value = value[..., None, None]  # the public backbone MEFC uses 1x1 convs, the encoder nn.Linear
        public[key] = value
    return public


def perturbed(**options):
    torch.manual_seed(0)
    network = Rainmer(**{**TINY, **options})
    with torch.no_grad():
        for p in network.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return network


def test_public_keys_convert_and_reproduce_outputs():
    source = perturbed()
    public = to_public_names(source.state_dict(), ('chromatic', 'degradation'))
    assert 'disentangle.encoder_q.Atom.degra_enc.2.se1.se.1.weight' in public
    assert public['encoder_level0.layers.0.ca_fc.0.weight'].dim() == 4
    converted, dropped = convert_reference_state_dict(public)
    assert dropped == []
    target = Rainmer(**TINY)
    target.load_state_dict(converted, strict=True)
    x = torch.rand(2, 3, 30, 42)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), atol=0, rtol=0)


def test_single_prompt_ablation_uses_the_first_public_slot_and_drops_unused_modules():
    full = perturbed()
    public = to_public_names(full.state_dict(), ('chromatic', 'degradation'))
    converted, dropped = convert_reference_state_dict(public, views=['degradation', 'detail'])
    target = Rainmer(**TINY, views=['degradation', 'detail'])
    target.load_state_dict(converted, strict=True)
    # the public code feeds a lone prompt through its first slot (chr_promptAttn)
    torch.testing.assert_close(target.decoder_level1[0].prompts['degradation'].gate[0].weight,
                               full.decoder_level1[0].prompts['chromatic'].gate[0].weight)
    assert dropped and all('detg_promptAttn' in key or 'chromatic_enc' in key for key in dropped)


def test_baseline_drops_encoders_and_fusion():
    public = to_public_names(perturbed().state_dict(), ('chromatic', 'degradation'))
    converted, dropped = convert_reference_state_dict(public, views=[], local_fusion=False)
    Rainmer(**TINY, views=[], local_fusion=False).load_state_dict(converted, strict=True)
    assert any(key.startswith('disentangle.') for key in dropped)
    assert any(key.startswith('cross_fuse.') for key in dropped)


def test_command_line_round_trip(tmp_path):
    source = perturbed()
    public = to_public_names(source.state_dict(), ('chromatic', 'degradation'))
    checkpoint = {'epoch': 3, 'model': {f'module.{key}': value for key, value in public.items()}}
    torch.save(checkpoint, tmp_path / 'latest.tar')
    assert main([str(tmp_path / 'latest.tar'), str(tmp_path / 'converted.pth')]) == 0
    params = torch.load(tmp_path / 'converted.pth', weights_only=True)['params']
    target = Rainmer(**TINY)
    target.load_state_dict(params, strict=True)
    lq, lq_resize = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    keys = {'chromatic': torch.rand(1, 3, 32, 32), 'degradation': torch.rand(1, 3, 32, 32)}
    negatives = {view: torch.rand(1, 2, 3, 32, 32) for view in ('chromatic', 'degradation', 'detail')}
    with torch.no_grad():
        restored, logits = target.forward_train(lq, lq_resize, keys, negatives)
        expected, expected_logits = source.forward_train(lq, lq_resize, keys, negatives)
    torch.testing.assert_close(restored, expected)
    torch.testing.assert_close(logits['degradation_detail'], expected_logits['degradation_detail'])
