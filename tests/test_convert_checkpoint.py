import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import math
from collections import OrderedDict

import pytest
import torch
from public_rainmer_keys import is_trainable, public_rainmer_shapes

from rainmer.archs.rainmer_arch import Rainmer
from rainmer.tools.convert_checkpoint import convert_reference_state_dict, main, public_prompt_fusion

TINY = dict(dim=8, base_dim=16, num_blocks=[1, 1, 1, 1], heads=[1, 1, 2, 2])
# public key -> ours, one per kind of rename (and a few kept as they are)
REPRESENTATIVE = {
    'disentangle.encoder_q.conv.proj.weight': 'query_encoder.shallow_conv.weight',
    'disentangle.encoder_k.conv.proj.bias': 'key_encoder.shallow_conv.bias',
    'disentangle.encoder_q.MoEs.layers.0.ca_fc.2.weight': 'query_encoder.moes.layers.0.ca_fc.2.weight',
    'disentangle.encoder_q.MoEs.layers.1._ops.3._ops.6.op.0.weight':
        'query_encoder.moes.layers.1._ops.3._ops.6.op.0.weight',
    'disentangle.encoder_q.Atom.chromatic_enc.0.weight': 'query_encoder.chromatic_projector.embed.weight',
    'disentangle.encoder_k.Atom.degra_enc.2.conv2.bias': 'key_encoder.degradation_projector.residual.conv2.bias',
    'disentangle.encoder_q.Atom.degra_enc.2.se1.se.1.weight':
        'query_encoder.degradation_projector.residual.se1.reduce.weight',
    'disentangle.encoder_q.Atom.chromatic_enc.2.se2.se.3.weight':
        'query_encoder.chromatic_projector.residual.se2.expand.weight',
    'cross_fuse.location_map.2.bias': 'local_fusion.location_map.2.bias',
    'cross_fuse.channel_map.0.weight': 'local_fusion.channel_map.0.weight',
    'encoder_level0.layers.0.ca_fc.0.weight': 'encoder_level0.layers.0.ca_fc.0.weight',
    'refinement.layers.1._ops.0._out.0.weight': 'refinement.layers.1._ops.0._out.0.weight',
    'latent.0.attn.attns': 'latent.0.attn.attns',
    'decoder_level3.0.attn.chr_promptAttn.classifier.0.weight': 'decoder_level3.0.prompts.chromatic.gate.0.weight',
    'decoder_level2.0.attn.chr_promptAttn.trans.0.bias': 'decoder_level2.0.prompts.chromatic.projection.0.bias',
    'decoder_level1.0.attn.detg_promptAttn.classifier.2.bias': 'decoder_level1.0.prompts.degradation.gate.2.bias',
    'decoder_level1.0.attn.detg_promptAttn.trans.0.weight':
        'decoder_level1.0.prompts.degradation.projection.0.weight',
    'decoder_level1.0.attn.temperature': 'decoder_level1.0.attn.temperature',
}


def public_state_dict(**size):
    """Tensor i of the public layout holds values in [i, i + 0.5): each converted tensor names its source."""
    generator = torch.Generator().manual_seed(0)
    return OrderedDict((key, index + 0.5 * torch.rand(shape, generator=generator))
                       for index, (key, shape) in enumerate(public_rainmer_shapes(**size).items()))


def source_names(public, converted):
    """Our key -> the public key whose tensor it holds (checking the values, up to the 1x1-conv flattening)."""
    keys = list(public)
    sources = {}
    for key, value in converted.items():
        source = keys[int(value.flatten()[0])]
        assert torch.equal(value.flatten(), public[source].flatten()), key
        sources[key] = source
    return sources


def test_generator_matches_the_public_parameter_counts():
    shapes = public_rainmer_shapes()
    count = {key: math.prod(shape) for key, shape in shapes.items()}

    def total(prefix=''):
        return sum(n for key, n in count.items() if key.startswith(prefix))

    assert total() == 36_764_832
    assert sum(n for key, n in count.items() if is_trainable(key)) == 35_823_296
    assert total('disentangle.encoder_k.') == total('disentangle.encoder_q.') == 941_536
    assert total('disentangle.encoder_q.MoEs.') == total('encoder_level0.') == 230_816
    assert total('disentangle.encoder_q.Atom.') == 709_376
    assert total('refinement.') == 814_304
    assert total('cross_fuse.') == 46_272
    chralpha = public_rainmer_shapes(chr_alpha=True)
    assert set(chralpha) - set(shapes) == {f'decoder_level{level}.{block}.attn.chr_z'
                                           for level, blocks in ((3, 6), (2, 6), (1, 4)) for block in range(blocks)}
    # measured on the public Rainmer_SA_chralpha: 35,825,344 trainable, 36,766,880 in all (+128 per decoder block)
    assert sum(math.prod(shape) for key, shape in chralpha.items() if is_trainable(key)) == 35_825_344
    assert sum(math.prod(shape) for shape in chralpha.values()) == 36_766_880


def test_public_state_dict_converts_value_for_value_and_loads_strictly():
    public = public_state_dict(**TINY)
    converted, dropped = convert_reference_state_dict(public)
    assert dropped == []
    target = Rainmer(**TINY, chained_topk=True)
    target.load_state_dict(converted, strict=True)
    sources = source_names(public, converted)
    assert sorted(sources.values()) == sorted(public)  # one-to-one
    assert {sources[ours]: ours for ours in REPRESENTATIVE.values()} == REPRESENTATIVE
    # the backbone's weight generator is a pair of 1x1 convs in the public code, nn.Linear in the encoder and here
    assert public['encoder_level0.layers.0.ca_fc.0.weight'].shape == (64, 8, 1, 1)
    assert converted['encoder_level0.layers.0.ca_fc.0.weight'].shape == (64, 8)
    loaded = target.state_dict()
    for key, value in converted.items():
        assert torch.equal(loaded[key], value), key


def test_default_size_converts_to_the_same_keys_and_shapes():
    public = OrderedDict((key, torch.empty(shape, device='meta')) for key, shape in public_rainmer_shapes().items())
    converted, dropped = convert_reference_state_dict(public)
    ours = Rainmer(chained_topk=True).state_dict()
    assert dropped == [] and len(public) == len(converted) == len(ours) == 1242
    assert {key: tuple(value.shape) for key, value in converted.items()} == \
        {key: tuple(value.shape) for key, value in ours.items()}


def test_single_prompt_ablation_uses_the_first_public_slot_and_drops_unused_modules():
    public = public_state_dict(**TINY)
    converted, dropped = convert_reference_state_dict(public, views=['degradation', 'detail'])
    Rainmer(**TINY, views=['degradation', 'detail'], chained_topk=True).load_state_dict(converted, strict=True)
    # the public code feeds a lone prompt through its first slot (chr_promptAttn)
    sources = source_names(public, converted)
    assert sources['decoder_level1.0.prompts.degradation.gate.0.weight'] == \
        'decoder_level1.0.attn.chr_promptAttn.classifier.0.weight'
    assert set(dropped) == {key for key in public if 'detg_promptAttn' in key or 'chromatic_enc' in key}


def test_baseline_drops_encoders_and_fusion():
    public = public_state_dict(**TINY)
    converted, dropped = convert_reference_state_dict(public, views=[], local_fusion=False)
    Rainmer(**TINY, views=[], local_fusion=False, chained_topk=True).load_state_dict(converted, strict=True)
    assert set(dropped) == {key for key in public
                            if key.startswith(('disentangle.', 'cross_fuse.')) or '_promptAttn.' in key}
    assert all(source == key for key, source in source_names(public, converted).items())


CHR_Z = {f'decoder_level{level}.{block}.attn.chr_z': f'decoder_level{level}.{block}.chr_z'
         for level in (1, 2, 3) for block in range(1)}


def test_public_chralpha_state_dict_loads_strictly_into_prompt_fusion_chralpha():
    """Rainmer_SA_chralpha (the public mixed config's model): each ``attn.chr_z`` becomes the block's ``chr_z``."""
    public = public_state_dict(**TINY, chr_alpha=True)
    assert public_prompt_fusion(public) == 'chralpha' and public_prompt_fusion(public_state_dict(**TINY)) == 'sum'
    for prompt_fusion in (None, 'chralpha'):
        converted, dropped = convert_reference_state_dict(public, prompt_fusion=prompt_fusion)
        assert dropped == []
        target = Rainmer(**TINY, chained_topk=True, prompt_fusion='chralpha')
        target.load_state_dict(converted, strict=True)
        sources = source_names(public, converted)
        assert sorted(sources.values()) == sorted(public)  # one-to-one
        assert {sources[ours]: ours for ours in CHR_Z.values()} == CHR_Z
        assert {sources[ours]: ours for ours in REPRESENTATIVE.values()} == REPRESENTATIVE
        loaded = target.state_dict()
        assert all(torch.equal(loaded[key], value) for key, value in converted.items())


def test_chralpha_keys_are_never_silently_dropped():
    """Into a ``sum`` network the mapped ``chr_z`` keys fail a strict load; a wrong explicit fusion is refused."""
    public = public_state_dict(**TINY, chr_alpha=True)
    converted, dropped = convert_reference_state_dict(public)
    assert dropped == []
    with pytest.raises(RuntimeError, match='chr_z'):
        Rainmer(**TINY, chained_topk=True).load_state_dict(converted, strict=True)
    with pytest.raises(ValueError, match='chralpha'):
        convert_reference_state_dict(public, prompt_fusion='sum')
    with pytest.raises(ValueError, match='chr_z'):
        convert_reference_state_dict(public_state_dict(**TINY), prompt_fusion='chralpha')


def test_chralpha_without_both_prompts_drops_the_unused_chr_z():
    public = public_state_dict(**TINY, chr_alpha=True)
    converted, dropped = convert_reference_state_dict(public, views=['degradation', 'detail'])
    Rainmer(**TINY, views=['degradation', 'detail'], chained_topk=True).load_state_dict(converted, strict=True)
    assert set(CHR_Z) <= set(dropped)


def test_default_size_chralpha_converts_to_the_same_keys_and_shapes():
    public = OrderedDict((key, torch.empty(shape, device='meta'))
                         for key, shape in public_rainmer_shapes(chr_alpha=True).items())
    converted, dropped = convert_reference_state_dict(public, prompt_fusion='chralpha')
    ours = Rainmer(chained_topk=True, prompt_fusion='chralpha').state_dict()
    assert dropped == [] and len(public) == len(converted) == len(ours) == 1242 + 16
    assert {key: tuple(value.shape) for key, value in converted.items()} == \
        {key: tuple(value.shape) for key, value in ours.items()}


def test_command_line_detects_chralpha(tmp_path, capsys):
    public = public_state_dict(**TINY, chr_alpha=True)
    torch.save({f'module.{key}': value for key, value in public.items()}, tmp_path / 'net_epoch_1.pth')
    assert main([str(tmp_path / 'net_epoch_1.pth'), str(tmp_path / 'converted.pth')]) == 0
    printed = capsys.readouterr().out
    assert 'Rainmer_SA_chralpha' in printed and 'prompt_fusion: chralpha' in printed
    params = torch.load(tmp_path / 'converted.pth', weights_only=True)['params']
    Rainmer(**TINY, chained_topk=True, prompt_fusion='chralpha').load_state_dict(params, strict=True)
    with pytest.raises(ValueError, match='chralpha'):
        main([str(tmp_path / 'net_epoch_1.pth'), str(tmp_path / 'other.pth'), '--prompt-fusion', 'sum'])


def test_command_line_round_trip(tmp_path):
    public = public_state_dict(**TINY)
    checkpoint = {'epoch': 3, 'model': {f'module.{key}': value for key, value in public.items()}}
    torch.save(checkpoint, tmp_path / 'latest.tar')
    assert main([str(tmp_path / 'latest.tar'), str(tmp_path / 'converted.pth')]) == 0
    params = torch.load(tmp_path / 'converted.pth', weights_only=True)['params']
    expected, _ = convert_reference_state_dict(public)
    assert list(params) == list(expected)
    assert all(torch.equal(params[key], expected[key]) for key in expected)
    Rainmer(**TINY, chained_topk=True).load_state_dict(params, strict=True)
