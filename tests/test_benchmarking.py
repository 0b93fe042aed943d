"""Helpers shared by the benchmark scripts (rainmer.utils.benchmarking)."""
import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from rainmer_fixtures import TINY_RAINMER

from rainmer.archs.modules import msfn
from rainmer.archs.modules.depthwise import depthwise_conv2d
from rainmer.archs.modules.tksa import TopKSparseAttention
from rainmer.archs.modules.transformer import FeedForward
from rainmer.archs.rainmer_arch import Rainmer
from rainmer.utils.benchmarking import component_timer, flop_counter, proc_status_kib, proxy_training_loss

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
    net = Rainmer(**arch).eval()
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
    with torch.no_grad(), component_timer(net, {'MSFN': FeedForward, 'TKSA': TopKSparseAttention},
                                           torch.device('cpu')) as totals:
        start = time.perf_counter()
        net(x)
        whole = time.perf_counter() - start
    assert totals['MSFN'][1] == totals['TKSA'][1] == 7  # 4 encoder levels and 3 decoder levels of one block
    assert 0 < totals['MSFN'][0] + totals['TKSA'][0] < whole
    with torch.no_grad():
        net(x)
    assert totals['MSFN'][1] == 7  # hooks gone


def test_benchmark_script_runs_on_a_tiny_network(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location('benchmark_script', ROOT / 'scripts' / 'benchmark.py')
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
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
