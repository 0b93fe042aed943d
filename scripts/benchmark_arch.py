"""Benchmark Rainmer, DRSformer and a toolbox restorer (SwinIR): params, FLOPs, latency and peak memory.

Every (network, TKSA evaluation, mode) is measured in its own subprocess, so peak memory is that of the
measured step alone:

* CPU: the process's resident-set high-water mark (``VmHWM`` in /proc/self/status) minus its resident set
  just before the first step (network, optimiser and inputs already built): the extra memory the step needs.
* CUDA: ``torch.cuda.max_memory_allocated`` minus the memory allocated before the step.

Latency is the fastest of ``--repeat`` runs after a warm-up run: on a shared machine the minimum is the
figure least disturbed by other load. For Rainmer, DRSformer and a TKSA block alone, the fast and the plain
evaluation of ONE network (converted in place by ``to_fast`` / ``to_plain``, :mod:`rainmer.archs.fast`) are
timed alternately in one process, so that both see the same load. FLOPs come from
``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions; a multiply-add counts as 2 FLOPs),
with a grouped-aware formula for convolution backward (see :func:`conv_backward_flops`).
'inference' is a forward pass under ``torch.no_grad``; 'train' is one optimisation step (forward, loss,
backward, AdamW step), for Rainmer through its training entry with 4 negatives per view.
The rows 'plain' are the reference evaluation (the public code's computation, op for op: TKSA's per-rate loop,
one module per MoE expert, MSFN on concatenations, NCHW); 'fast' the same weights through the fast blocks. The
other networks run as built (``fast='auto'``: the fast evaluation for fp32 on the CPU, the plain one elsewhere).

Example: ``python scripts/benchmark_arch.py --size 128 --threads 2 --batch 1 --repeat 3``.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial

import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import conv_flop_count

from rainmer.archs.modules.fastpath import convertible
from rainmer.utils.allocator import tune_malloc
from rainmer.utils.benchmarking import flop_counter, peak_memory_mib, proxy_training_loss, set_variant, synchronize

ARCHS = ('rainmer', 'drsformer', 'nerdrain', 'nerdrain_s', 'swinir', 'restormer', 'promptir', 'prenet', 'brn', 'rcdnet',
         'idt', 'tksa')
# the comparison roster at the public codes' defaults: name -> registered class
ROSTER = {'restormer': 'Restormer', 'promptir': 'PromptIR', 'prenet': 'PReNet', 'brn': 'BRN', 'rcdnet': 'RCDNet',
          'idt': 'IDT'}
TKSA_ARCHS = ('rainmer', 'drsformer', 'tksa')
N_NEG = 4
PROMPT_SIZE = 128


def conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """FLOPs of a convolution's backward: the forward's count once for grad_input and once for grad_weight.

    torch's own formula ignores ``groups`` here and counts a depthwise conv's backward as a dense one
    (channels times too many), which would swamp the training-step totals of these depthwise-heavy networks.
    """
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def build(arch: str) -> nn.Module:
    """A network at its paper/public default size (Rainmer, DRSformer, TKSA: plain until converted)."""
    if arch == 'rainmer':
        from rainmer.archs.rainmer_arch import Rainmer

        return Rainmer(fast=False)
    if arch == 'drsformer':
        from rainmer.archs.drsformer_arch import DRSformer

        return DRSformer(fast=False)
    if arch in ('nerdrain', 'nerdrain_s'):
        from rainmer.archs.nerdrain_arch import NeRDRain, NeRDRainS

        return NeRDRain() if arch == 'nerdrain' else NeRDRainS()
    if arch == 'swinir':
        from basicsr.archs.swinir_arch import SwinIR

        # SwinIR's colour denoising / deraining-style restorer (upscale 1, no upsampler)
        return SwinIR(upscale=1, in_chans=3, img_size=128, window_size=8, img_range=1.0, depths=[6] * 6,
                      embed_dim=180, num_heads=[6] * 6, mlp_ratio=2, upsampler='', resi_connection='1conv')
    if arch in ROSTER:
        from basicsr.utils.registry import ARCH_REGISTRY

        return ARCH_REGISTRY.get(ROSTER[arch])()
    if arch == 'tksa':
        from rainmer.archs.modules.tksa import TopKSparseAttention

        return TopKSparseAttention(48, 1, bias=False)  # the level-1 attention of both networks
    raise ValueError(f'Unknown arch {arch!r}; choose among {ARCHS}.')


def make_batch(arch: str, batch: int, size: int, device: torch.device) -> dict[str, Tensor]:
    channels = 48 if arch == 'tksa' else 3
    data = {'lq': torch.rand(batch, channels, size, size, device=device)}
    if arch != 'tksa':
        data['gt'] = torch.rand(batch, 3, size, size, device=device)
    if arch == 'rainmer':
        def images(*shape: int) -> Tensor:
            return torch.rand(batch, *shape, 3, PROMPT_SIZE, PROMPT_SIZE, device=device)

        data['lq_resize'] = images()
        data['keys'] = {'chromatic': images(), 'degradation': images()}
        data['negatives'] = {view: images(N_NEG) for view in ('chromatic', 'degradation', 'detail')}
    return data


def inference_step(network: nn.Module, data: dict) -> None:
    with torch.no_grad():
        network(data['lq'])


def train_step(network: nn.Module, data: dict, optimizer: torch.optim.Optimizer) -> None:
    if 'keys' in data:
        restored, logits = network.forward_train(data['lq'], data['lq_resize'], data['keys'], data['negatives'])
        loss = proxy_training_loss(restored, logits, data['gt'])
    else:
        out = network(data['lq'])
        loss = F.l1_loss(out, data['gt']) if 'gt' in data else out.square().mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _setup(arch: str, fast: bool, mode: str, args: argparse.Namespace) -> tuple[nn.Module, Callable[[], None]]:
    """The network (in the fast or plain evaluation where it has both) and a closure running one inference or
    training step on a fixed batch."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    network = build(arch).to(device)
    if arch in TKSA_ARCHS:
        set_variant(network, 'fast' if fast else 'plain')
    network.train(mode == 'train')
    data = make_batch(arch, args.batch, args.size, device)
    if mode == 'train':
        optimizer = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], lr=1e-4)
        return network, partial(train_step, network, data, optimizer)
    return network, partial(inference_step, network, data)


def _timed(step: Callable[[], None], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return 1000 * (time.perf_counter() - start)


def measure(arch: str, fast: bool, mode: str, args: argparse.Namespace, timed: bool = True) -> dict:
    """Run in a fresh process: peak memory of the first step, then (if ``timed``) latency, then FLOPs."""
    device = torch.device(args.device)
    network, step = _setup(arch, fast, mode, args)
    peak_mib = peak_memory_mib(step, device)
    latency = min(_timed(step, device) for _ in range(args.repeat)) if timed else None
    counter = flop_counter({torch.ops.aten.convolution_backward: conv_backward_flops})
    with counter:
        step()
    return {
        'params': sum(p.numel() for p in network.parameters()),
        'trainable': sum(p.numel() for p in network.parameters() if p.requires_grad),
        'flops': counter.get_total_flops(), 'latency_ms': latency, 'peak_mib': peak_mib,
        'convertible': convertible(network),
    }


def measure_pair(arch: str, mode: str, args: argparse.Namespace) -> dict:
    """Latency of the fast and the plain evaluation of one network, converted in place between alternating runs
    in one process (the conversion is not timed).

    Alternating makes both see the same machine load, which keeps their ratio meaningful on a shared machine.
    """
    device = torch.device(args.device)
    network, step = _setup(arch, True, mode, args)
    times = {'fast': [], 'plain': []}
    for run in range(args.repeat + 1):  # the first round warms up
        for variant, values in times.items():
            set_variant(network, variant)
            elapsed = _timed(step, device)
            if run:
                values.append(elapsed)
    return {variant: min(values) for variant, values in times.items()}


def run_worker(spec: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, os.path.abspath(__file__), '--worker', spec,
               '--size', str(args.size), '--threads', str(args.threads), '--batch', str(args.batch),
               '--repeat', str(args.repeat), '--device', args.device]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f'{spec} failed:\n{result.stderr[-3000:]}')
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_worker_spec(spec: str, args: argparse.Namespace) -> dict:
    """Inside a worker: 'pair:<arch>:<mode>' or '<arch>:<fast 0/1>:<mode>:<timed 0/1>'."""
    parts = spec.split(':')
    if parts[0] == 'pair':
        return measure_pair(parts[1], parts[2], args)
    arch, fast, mode, timed = parts
    return measure(arch, bool(int(fast)), mode, args, timed=bool(int(timed)))


def _fmt_count(value: float, scale: float, digits: int = 2) -> str:
    return f'{value / scale:,.{digits}f}'


def print_tables(results: dict, args: argparse.Namespace) -> None:
    print(f'\nsize {args.size}x{args.size}, batch {args.batch}, threads {args.threads}, device {args.device}, '
          f'best of {args.repeat}\n')
    print('| network | evaluation | params (M) | trainable (M) | inference GFLOPs | inference ms | inference peak MiB '
          '| train-step GFLOPs | train-step ms | train-step peak MiB |')
    print('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|')
    for (arch, fast), modes in results.items():
        any_mode = next(iter(modes.values()))
        if arch in TKSA_ARCHS:
            evaluation = 'fast' if fast else 'plain'
        else:
            evaluation = 'auto' if any_mode.get('convertible') else '-'
        cells = []
        for mode in ('inference', 'train'):
            row = modes.get(mode)
            cells += (['-'] * 3 if row is None else
                      [_fmt_count(row['flops'], 1e9, 1), f"{row['latency_ms']:,.0f}", f"{row['peak_mib']:,.0f}"])
        print(f"| {arch} | {evaluation} | {_fmt_count(any_mode['params'], 1e6, 3)} "
              f"| {_fmt_count(any_mode['trainable'], 1e6, 3)} | {' | '.join(cells)} |")
    ratios = [(arch, results[(arch, True)], results[(arch, False)]) for arch in TKSA_ARCHS
              if (arch, True) in results and (arch, False) in results and len(args.modes) == 2]
    if ratios:
        print('\nFast evaluation against the plain (reference) one, same network and run (plain / fast; > 1 means '
              'fast is better):\n')
        print('| network | inference speed-up | train-step speed-up | inference peak-memory ratio '
              '| train-step peak-memory ratio | inference FLOPs ratio |')
        print('|---|---:|---:|---:|---:|---:|')
        for arch, fast, plain in ratios:
            def ratio(mode: str, key: str, plain: dict = plain, fast: dict = fast) -> str:
                return f"{plain[mode][key] / max(fast[mode][key], 1e-9):.2f}x"

            print(f"| {arch} | {ratio('inference', 'latency_ms')} | {ratio('train', 'latency_ms')} "
                  f"| {ratio('inference', 'peak_mib')} | {ratio('train', 'peak_mib')} "
                  f"| {ratio('inference', 'flops')} |")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--size', type=int, default=128, help='input height and width')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads(), help='torch CPU threads')
    parser.add_argument('--archs', nargs='+', default=list(ARCHS), choices=ARCHS)
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--repeat', type=int, default=3, help='timed runs per measurement (fastest reported)')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    parser.add_argument('--no-plain', action='store_true', help='skip the plain (reference) evaluation rows')
    parser.add_argument('--modes', nargs='+', default=['inference', 'train'], choices=['inference', 'train'])
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    tune_malloc()  # as in basicsr train/test (docs/speed.md)
    if args.worker:
        print(json.dumps(run_worker_spec(args.worker, args)))
        return 0
    results = {}
    modes = tuple(args.modes)
    for arch in args.archs:
        if arch in TKSA_ARCHS and not args.no_plain:
            # memory and FLOPs of each variant alone, latency of both in one alternating run
            for fast in (True, False):
                results[(arch, fast)] = {mode: run_worker(f'{arch}:{int(fast)}:{mode}:0', args) for mode in modes}
            for mode in modes:
                pair = run_worker(f'pair:{arch}:{mode}', args)
                results[(arch, True)][mode]['latency_ms'] = pair['fast']
                results[(arch, False)][mode]['latency_ms'] = pair['plain']
        else:
            results[(arch, True)] = {mode: run_worker(f'{arch}:1:{mode}:1', args) for mode in modes}
        print(f'measured {arch}', file=sys.stderr, flush=True)
    print_tables(results, args)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
