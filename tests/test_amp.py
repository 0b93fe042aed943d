"""AMP in RainmerModel: a bf16 autocast training step on CPU runs, gives finite fp32 losses and updates weights;
bf16 validation output is close to fp32; the fp16 GradScaler is only built for CUDA."""
import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import copy

import pytest
import torch
from basicsr.models import build_model
from rainmer_fixtures import tiny_rainmer_options

from rainmer.models.derain_model import amp_dtype as _amp_dtype


def _model(tmp_path, num_gpu=0, **train):
    opt = tiny_rainmer_options('amp', {'syn': str(tmp_path), 'real': str(tmp_path)})
    opt['num_gpu'] = num_gpu
    opt['train'].update(train)
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    opt['path'].update(models=str(tmp_path), training_states=str(tmp_path), visualization=str(tmp_path))
    torch.manual_seed(0)
    return build_model(opt)


def _batch():
    torch.manual_seed(1)
    return {k: torch.rand(2, 3, 32, 32) for k in ('lq', 'gt', 'lq_resize', 'gt_resize')}


def test_bf16_training_step_has_finite_losses_and_updates_weights(tmp_path):
    model = _model(tmp_path, use_amp=True, amp_dtype='bf16')
    assert model.amp_dtype == torch.bfloat16 and model.grad_scaler is None  # no loss scaling for bf16 / CPU
    batch = _batch()
    model.archive.prefill(batch['lq_resize'], batch['gt_resize'])
    before = copy.deepcopy(model.net_g.state_dict())
    model.feed_data(batch)
    model.optimize_parameters(1)
    assert model.output.dtype == torch.float32
    assert set(model.log_dict) >= {'l_pix', 'l_ssim', 'l_chromatic', 'l_degradation_detail', 'l_total'}
    assert all(torch.isfinite(torch.as_tensor(value)) for value in model.log_dict.values())
    changed = [k for k, v in model.net_g.state_dict().items() if not torch.equal(v, before[k])]
    assert changed


def test_bf16_validation_is_close_to_fp32(tmp_path):
    model = _model(tmp_path)
    model.feed_data(_batch())
    model.test()
    fp32 = model.output
    model.opt['val'].update(use_amp=True, amp_dtype='bf16')
    model.test()
    assert model.output.dtype == torch.float32
    assert (model.output - fp32).abs().max() < 0.1  # bf16 keeps ~3 significant digits


def test_amp_options():
    assert _amp_dtype({}) is None
    assert _amp_dtype({'use_amp': True}) == torch.bfloat16
    assert _amp_dtype({'use_amp': True, 'amp_dtype': 'fp16'}) == torch.float16
    with pytest.raises(ValueError):
        _amp_dtype({'use_amp': True, 'amp_dtype': 'fp8'})


@pytest.mark.skipif(not torch.cuda.is_available(), reason='fp16 loss scaling runs on CUDA')
def test_fp16_step_with_grad_scaler_on_cuda(tmp_path):
    model = _model(tmp_path, num_gpu=1, use_amp=True, amp_dtype='fp16')
    assert model.grad_scaler is not None
    batch = _batch()
    model.archive.prefill(batch['lq_resize'].cuda(), batch['gt_resize'].cuda())
    model.feed_data(batch)
    model.optimize_parameters(1)
    assert torch.isfinite(torch.as_tensor(model.log_dict['l_total']))
