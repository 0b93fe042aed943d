"""Helpers shared by the benchmark scripts (rainmer.utils.benchmarking)."""
import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from rainmer_fixtures import TINY_RAINMER

from rainmer.archs.fast import is_auto, is_fast
from rainmer.archs.modules import msfn
from rainmer.archs.modules.depthwise import depthwise_conv2d
from rainmer.archs.modules.msfn import MSFN
from rainmer.archs.modules.tksa import TopKSparseAttention
from rainmer.archs.rainmer_arch import Rainmer
from rainmer.utils.benchmarking import (
    component_timer,
    flop_counter,
    proc_status_kib,
    proxy_training_loss,
    set_variant,
)

ROOT = Path(__file__).resolve().parent.parent


def test_proxy_training_loss_is_l1_plus_a_tenth_of_both_infonce_terms():
    torch.manual_seed(0)
    restored, gt = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    logits = {'chromatic': torch.randn(2, 5), 'degradation_detail': torch.randn(2, 9), 'detail': torch.randn(2, 5)}
    zeros = torch.zeros(2, dtype=torch.long)
    expected = (restored - gt).abs().mean() + 0.1 * (F.cross_entropy(logits['chromatic'], zeros)
                                                     + F.cross_entropy(logits['degradation_detail'], zeros))
    torch.testing.assert_close(proxy_training_loss(restored, logits, gt), expected)


def test_proc_status_reads_memory_fields_and_names_a_missing_one():
    assert proc_status_kib('VmHWM') >= proc_status_kib('VmRSS') > 0
    with pytest.raises(RuntimeError, match='VmNothing'):
        proc_status_kib('VmNothing')


def test_flop_counter_sees_the_fast_paths_direct_onednn_convolutions(monkeypatch):
    """The fast network calls oneDNN directly; its count must equal the count with every conv through F.conv2d
    (MSFN's channel padding, which adds real work on zero channels, switched off)."""
    monkeypatch.setattr(msfn, 'CHANNEL_ALIGNMENT', 1)
    torch.manual_seed(0)
    arch = {k: v for k, v in TINY_RAINMER.items() if k != 'type'}
    net = Rainmer(**arch, fast=True).eval()
    x = torch.rand(1, 3, 32, 32)
    counts = []
    for onednn in (True, False):
        counter = flop_counter()
        with torch.no_grad(), torch.backends.mkldnn.flags(enabled=onednn), counter:
            net(x)
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] > 0


def test_flop_counter_counts_the_native_depthwise_weight_gradient():
    x = torch.rand(2, 16, 12, 10).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = torch.randn(16, 1, 5, 5, requires_grad=True)
    forward = 2 * 25 * x.numel()  # multiply-adds of the forward, 2 FLOPs each
    counter = flop_counter()
    with counter:
        depthwise_conv2d(x, weight, None, 2).sum().backward()
    assert counter.get_total_flops() == 3 * forward  # forward, input gradient, weight gradient


def test_component_timer_counts_every_module_and_removes_its_hooks():
    torch.manual_seed(0)
    net = Rainmer(**{k: v for k, v in TINY_RAINMER.items() if k != 'type'}).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad(), component_timer(net, {'MSFN': MSFN, 'TKSA': TopKSparseAttention},
                                           torch.device('cpu')) as totals:
        start = time.perf_counter()
        net(x)
        whole = time.perf_counter() - start
    assert totals['MSFN'][1] == totals['TKSA'][1] == 7  # 4 encoder levels and 3 decoder levels of one block
    assert 0 < totals['MSFN'][0] + totals['TKSA'][0] < whole
    with torch.no_grad():
        net(x)
    assert totals['MSFN'][1] == 7  # hooks gone


def test_set_variant_converts_one_network_in_place():
    net = Rainmer(**{k: v for k, v in TINY_RAINMER.items() if k != 'type'})
    assert set_variant(net, 'plain') is net and not is_fast(net) and not is_auto(net)
    assert set_variant(net, 'fast') is net and is_fast(net) and not is_auto(net)
    with pytest.raises(ValueError, match='variant'):
        set_variant(net, 'quick')


def test_benchmark_script_runs_on_a_tiny_network(tmp_path, capsys):
    script = _load_script('benchmark')
    arch = {k: v for k, v in TINY_RAINMER.items() if k != 'type'}
    out = tmp_path / 'rows.json'
    threads = torch.get_num_threads()
    try:  # default malloc: the tuned one would keep this test process's freed memory
        script.main(['--arch', json.dumps(arch), '--prompt-size', '32', '--sizes', '16', '--modes', 'inference',
                     'train', '--batch', '2', '--n-neg', '2', '--repeat', '1', '--threads', '1', '--breakdown',
                     '--malloc', 'default', '--json', str(out)])
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())
    rows, components = result['rows'], result['components']
    assert [(row['mode'], row['variant']) for row in rows] == [
        ('inference', 'plain'), ('inference', 'fast'), ('train', 'plain'), ('train', 'fast')]
    assert all(0 < row['best_s'] <= row['median_s'] for row in rows)
    assert rows[1]['max_abs_diff'] < 1e-4 and rows[3]['max_abs_diff'] < 1e-4
    by_name = {row['component']: row for row in components}
    assert by_name['MSFN']['calls'] == 7 and by_name['whole network']['plain_s'] > by_name['MSFN']['plain_s'] > 0
    assert '| 16 | MSFN | 7 |' in capsys.readouterr().out


def _load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / 'scripts' / f'{name}.py')
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_check_cuda_without_cuda_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    """scripts/check_cuda.py on a machine without CUDA (hidden here): one line, exit 0; 1 with --require-cuda."""
    env = {**os.environ, 'CUDA_VISIBLE_DEVICES': '', 'OMP_NUM_THREADS': '1'}
    out = tmp_path / 'report.json'
    run = subprocess.run([sys.executable, str(ROOT / 'scripts' / 'check_cuda.py'), '--out', str(out)],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('CUDA is not available'), run.stdout
    assert json.loads(out.read_text())['cuda_available'] is False
    script = _load_script('check_cuda')  # the same path in this process, without a second interpreter start
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert script.main(['--require-cuda']) == 1
    assert script.main([]) == 0
    assert capsys.readouterr().out.count('CUDA is not available') == 2


def test_check_cuda_checks_run_on_cpu_with_a_tiny_network():
    """The four checks of scripts/check_cuda.py on CPU (bf16 autocast instead of fp16 + GradScaler, gloo instead
    of NCCL): what can be run of them without a GPU."""
    script = _load_script('check_cuda')
    cpu = torch.device('cpu')
    arch = {k: v for k, v in TINY_RAINMER.items() if k != 'type'}
    equal = script.check_equality(cpu, arch, sizes=((32, 32), (41, 29)))
    assert equal['ok'] and [row['status'] for row in equal['rows']] == ['ok'] * 4
    assert all(row['max_abs_diff'] < 1e-5 for row in equal['rows'])
    amp = script.check_amp_step(cpu, arch, 'bf16', crop=32, batch=2, n_neg=2, max_steps=2)
    assert amp['ok'] and amp['steps'] == 1 and amp['changed_tensors'] > 0 and not amp['grad_scaler']
    ddp = script.check_ddp(cpu, arch, 'gloo', crop=32, batch=2, n_neg=2)
    assert ddp['ok'] and ddp['iterations'] == 2 and not torch.distributed.is_initialized()
    timing = script.check_timing(cpu, arch, size=32, warmup=1, repeat=1)
    assert timing['plain_s'] > 0 and timing['fast_s'] > 0
    for name, result in zip('abcd', (equal, amp, ddp, timing)):
        result['seconds'] = 0.0
        assert script.format_result(name, result).startswith(f'({name}) ok')


def test_check_cuda_report_and_exit_status_with_a_faked_device(tmp_path, monkeypatch, capsys):
    """The CUDA branch of check_cuda.main (no GPU here: device queries and checks replaced): every check runs and
    is reported even when one raises, the JSON holds them all, the exit status is 1 when one failed."""
    script = _load_script('check_cuda')
    calls = []
    props = type('Props', (), dict(name='Fake GPU', total_memory=2**34, major=9, minor=0))()
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'current_device', lambda: 0)
    monkeypatch.setattr(torch.cuda, 'set_device', lambda device: calls.append(('set_device', device)))
    monkeypatch.setattr(torch.cuda, 'get_device_properties', lambda device: props)
    monkeypatch.setattr(torch.cuda, 'empty_cache', lambda: None)
    monkeypatch.setattr(torch.cuda.nccl, 'version', lambda: (2, 27, 3))
    equal = dict(ok=True, tolerance=1e-4, rows=[dict(chained_topk=True, size=[128, 128], max_abs_diff=2e-7,
                                                     max_abs_diff_rates_1=2e-7, status='ok')])
    timing = dict(ok=True, size=256, warmup=3, repeat=10, plain_s=0.05, fast_s=0.04, speedup=1.25, tf32_convs=True,
                  tf32_matmul=False)

    def fail(*args):
        raise RuntimeError('NCCL error: unhandled system error')

    monkeypatch.setattr(script, 'check_equality', lambda device, *a, **k: calls.append(('a', device)) or equal)
    monkeypatch.setattr(script, 'check_amp_step', lambda device, *a: calls.append(('b', device)) or dict(
        ok=True, dtype='fp16', grad_scaler=True, steps=2, losses=[0.5, 0.49], scales=[32768.0, 32768.0],
        changed_tensors=10, trainable_tensors=10))
    monkeypatch.setattr(script, 'check_ddp', fail)
    monkeypatch.setattr(script, 'check_timing', lambda device, *a: timing)
    out = tmp_path / 'report.json'
    assert script.main(['--out', str(out)]) == 1
    assert calls[0] == ('set_device', torch.device('cuda', 0)) and ('a', torch.device('cuda', 0)) in calls
    report = json.loads(out.read_text())
    assert report['device'] == 'Fake GPU' and report['nccl'] == '2.27.3' and not report['ok']
    assert [report['checks'][name]['ok'] for name in 'abcd'] == [True, True, False, True]
    assert 'NCCL error' in report['checks']['c']['error']
    printed = capsys.readouterr().out
    assert '(c) FAILED' in printed and 'plain/fast 1.25x' in printed and 'some checks FAILED: c' in printed
    monkeypatch.setattr(script, 'check_ddp', lambda *a: dict(ok=True, backend='nccl', iterations=2, losses=[1.0, 1.0],
                                                             finite_grads=True, evaluation='plain'))
    assert script.main(['--checks', 'c', 'd']) == 0
    assert 'all checks passed' in capsys.readouterr().out
