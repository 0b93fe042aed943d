"""RainmerModel through the toolbox's trainer: losses, optimisers, accumulation, exact resume, validation."""
import copy
import re

import pytest
import torch
from basicsr.models import build_model
from rainmer_fixtures import prepare_tiny_lmdb, tiny_rainmer_options
from toolbox_fixtures import run_command, write_yaml

LOSS_LINE = re.compile(r'iter:\s+(\d+),.*?(l_pix: \S+ .*l_total: \S+)')


def _losses(output: str) -> dict[int, str]:
    return {int(m.group(1)): m.group(2) for m in LOSS_LINE.finditer(output)}


def _train(workdir, opt, *extra):
    yml = write_yaml(str(workdir / f"{opt['name']}.yml"), opt)
    result = run_command(['basicsr', 'train', '-opt', yml, *extra], cwd=str(workdir))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp('rainmer_model')
    return root, prepare_tiny_lmdb(str(root))


def test_training_logs_every_loss_term_and_saves(workdir):
    root, roots = workdir
    opt = tiny_rainmer_options('tiny_run', roots, total_iter=2, save_freq=2)
    opt['train']['ema_decay'] = 0.5
    output = _train(root, opt)
    assert 'Archive of negatives filled: 6 entries.' in output
    for term in ('l_pix', 'l_ssim', 'l_chromatic', 'l_degradation_detail', 'l_total'):
        assert f'{term}: ' in output
    assert 'Validation tiny_val per source' in output and 'synthetic (4 images)' in output
    exp = root / 'experiments' / 'tiny_run'
    state = torch.load(exp / 'training_states' / '2.state', weights_only=True)
    assert len(state['optimizers']) == 2 and len(state['schedulers']) == 2
    assert state['archive']['means'].shape == (6, 3) and int(state['archive']['count']) == 6
    saved = torch.load(exp / 'models' / 'net_g_2.pth', weights_only=True)
    params, ema = saved['params'], saved['params_ema']
    assert any(k.startswith('key_encoder.') for k in params) and any(k.startswith('query_encoder.') for k in params)
    assert params.keys() == ema.keys() and not all(torch.equal(params[k], ema[k]) for k in params)


def test_auto_resume_restores_every_tensor_and_reproduces_the_uninterrupted_run(workdir):
    root, roots = workdir
    # 4 synthetic + 4 real pairs, batch 2: 4 iterations per epoch; stop at the epoch boundary (iter 4)
    full = _losses(_train(root, tiny_rainmer_options('exact_full', roots, total_iter=6, save_freq=4)))
    cut = tiny_rainmer_options('exact_cut', roots, total_iter=4, save_freq=4)
    _train(root, cut)
    exp = root / 'experiments' / 'exact_cut'
    saved_state = torch.load(exp / 'training_states' / '4.state', weights_only=True)
    saved_net = torch.load(exp / 'models' / 'net_g_4.pth', weights_only=True)['params']

    # in process: what the resume path restores equals what was saved, bitwise
    opt = copy.deepcopy(cut)
    opt.update(is_train=True, dist=False, rank=0, world_size=1, auto_resume=True)
    opt['path'].update(models=str(exp / 'models'), training_states=str(exp / 'training_states'),
                       experiments_root=str(exp), log=str(exp), visualization=str(exp / 'visualization'))
    opt['path']['pretrain_network_g'] = str(exp / 'models' / 'net_g_4.pth')
    model = build_model(opt)
    model.resume_training(saved_state)
    for key, value in model.net_g.state_dict().items():
        assert torch.equal(value, saved_net[key]), key
    for key, value in model.archive.state_dict().items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(saved_state['archive'][key])), key
    for optimizer, saved in zip(model.optimizers, saved_state['optimizers']):
        for index, values in optimizer.state_dict()['state'].items():
            for name, tensor in values.items():
                assert torch.equal(torch.as_tensor(tensor), torch.as_tensor(saved['state'][index][name]))
    assert [s.state_dict() for s in model.schedulers] == saved_state['schedulers']
    assert torch.equal(model.view_generator.get_state(), saved_state['view_generator'])

    # through the command: continues at iteration 5 with exactly the uninterrupted run's losses
    resumed = _train(root, dict(cut, train=dict(cut['train'], total_iter=6)), '--auto_resume')
    resumed_losses = _losses(resumed)
    assert min(resumed_losses) == 5
    assert resumed_losses[5] == full[5] and resumed_losses[6] == full[6]
    final = {}
    for name in ('exact_full', 'exact_cut'):
        final[name] = torch.load(root / 'experiments' / name / 'models' / 'net_g_latest.pth', weights_only=True)
    for key, value in final['exact_full']['params'].items():
        assert torch.equal(value, final['exact_cut']['params'][key]), key


def test_gradient_accumulation_matches_the_larger_batch(workdir):
    root, roots = workdir
    base = tiny_rainmer_options('accum', roots)
    for key in ('chromatic_opt', 'degradation_detail_opt'):
        base['train'].pop(key)  # contrastive weight 0
    models = []
    for accumulate in (1, 2):
        opt = copy.deepcopy(base)
        opt['train']['accumulate_grad_step'] = accumulate
        opt.update(is_train=True, dist=False, rank=0, world_size=1)
        opt['path'].update(models=str(root), training_states=str(root), visualization=str(root))
        torch.manual_seed(0)
        models.append(build_model(opt))
    torch.manual_seed(1)
    batch = {k: torch.rand(4, 3, 32, 32) for k in ('lq', 'gt', 'lq_resize', 'gt_resize')}
    for model in models:
        model.archive.prefill(batch['lq_resize'], batch['gt_resize'])
    single, accumulated = models
    before = {name: p.detach().clone() for name, p in single.net_g.named_parameters() if p.requires_grad}
    single.feed_data(batch)
    single.optimize_parameters(1)
    for micro, part in enumerate((slice(0, 2), slice(2, 4)), start=1):
        accumulated.feed_data({k: v[part] for k, v in batch.items()})
        accumulated.optimize_parameters(micro)
    # both took an optimiser step: (almost) every trainable tensor moved from its snapshot...
    moved = [name for name, p in single.net_g.named_parameters() if name in before and not torch.equal(p, before[name])]
    assert len(moved) >= 0.9 * len(before), f'only {len(moved)} of {len(before)} parameters were updated'
    # ...to the same place
    for (name, p1), p2 in zip(single.net_g.named_parameters(), accumulated.net_g.parameters()):
        if p1.requires_grad:
            torch.testing.assert_close(p1, p2, rtol=1e-5, atol=1e-6, msg=name)


def test_a_toolbox_restorer_trains_on_the_mixed_dataset_with_srmodel(workdir):
    root, roots = workdir
    opt = tiny_rainmer_options('swinir_on_mixed', roots, total_iter=2, save_freq=2)
    opt['model_type'] = 'SRModel'
    opt['network_g'] = dict(type='SwinIR', upscale=1, in_chans=3, img_size=32, window_size=8, img_range=1.0,
                            depths=[1], embed_dim=12, num_heads=[2], mlp_ratio=2, upsampler='',
                            resi_connection='1conv')
    opt['train'] = dict(optim_g=dict(type='AdamW', lr=2e-4), scheduler=opt['train']['scheduler'], total_iter=2,
                        pixel_opt=opt['train']['pixel_opt'])
    output = _train(root, opt)
    assert 'l_pix: ' in output and 'Validation tiny_val' in output
    assert (root / 'experiments' / 'swinir_on_mixed' / 'models' / 'net_g_2.pth').is_file()


def test_torchrun_two_cpu_processes(workdir):
    import socket

    root, roots = workdir
    opt = tiny_rainmer_options('rainmer_ddp', roots, total_iter=2, save_freq=2)
    opt['datasets']['train']['batch_size_per_gpu'] = 1
    yml = write_yaml(str(root / 'rainmer_ddp.yml'), opt)
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    result = run_command(['python', '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={port}',
                          '-m', 'rainmer.train', '-opt', yml, '--launcher', 'pytorch'], cwd=str(root))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert 'World size (gpu number): 2' in output and 'l_chromatic: ' in output
    exp = root / 'experiments' / 'rainmer_ddp'
    state = torch.load(exp / 'training_states' / '2.state', weights_only=True)
    assert state['iter'] == 2 and len(state['optimizers']) == 2
    params = torch.load(exp / 'models' / 'net_g_latest.pth', weights_only=True)['params']
    assert not any(k.startswith('module.') for k in params)


def test_a_resize_size_other_than_the_prompt_size_is_refused(workdir):
    root, roots = workdir
    opt = tiny_rainmer_options('mismatch', roots)
    opt['datasets']['train']['resize_size'] = 48  # the network's prompt_size is 32
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    opt['path'].update(models=str(root), training_states=str(root), visualization=str(root))
    with pytest.raises(ValueError, match=r'^datasets\.train\.resize_size \(48\) differs from network_g\.prompt_size '
                                         r'\(32\)'):
        build_model(opt)
