"""Rainmer speed and memory: the reference-equivalent plain evaluation vs the fast one, same weights.

One network is built and converted in place between the two (:mod:`rainmer.archs.fast`):

* plain (``to_plain(net)``): the public implementation's computation, op for op (per-rate TKSA loop, one module
  per MoE expert, MSFN on concatenations, NCHW tensors); ``--topk chained`` (default) is the public code's TKSA.
* fast (``to_fast(net)``): the same parameters through the fast blocks (fused experts, fast MSFN, one-matmul
  TKSA, channels_last activations, 1x1 convs on oneDNN, the native depthwise weight gradient).

For every mode ('inference': a no-grad forward of ``--batch`` images; 'train': one optimisation step of
``forward_train`` with ``--n-neg`` negatives per view, loss and backward, AdamW) both variants are timed
alternately in one process (``--repeat`` times after a warm-up) so that they share the machine's load; the table
gives medians of wall time and of process CPU time (on a shared machine the CPU time is the steadier figure; with
several threads it also counts their spin-waits), throughput and the plain/fast ratios, the fastest run of each
variant and their ratio (the least disturbed runs, on a machine whose speed varies), and the maximum absolute
difference of their outputs. Peak memory (``--memory``) is measured in a fresh subprocess per variant and mode: the
resident-set high-water mark (VmHWM) minus the resident set before the step on CPU, ``max_memory_allocated`` on
CUDA. ``--amp`` also times the fast variant under autocast (fp16 with a GradScaler on CUDA, bf16 on CUDA or on
CPUs with bf16 instructions); its outputs differ from fp32 by bf16/fp16 rounding. ``--breakdown`` adds the
inference time of every component (MSFN, TKSA, MoE, SE projectors, LayerNorm, prompt injection) of both variants.

Example: ``python scripts/benchmark.py --sizes 128 256 --threads 2 --repeat 3 --memory``.
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import torch

from rainmer.archs.modules.moe import MixtureOfExperts
from rainmer.archs.modules.msfn import MSFN
from rainmer.archs.modules.projector import Projector
from rainmer.archs.modules.prompt import PromptInjection
from rainmer.archs.modules.tksa import DEFAULT_SPARSE_RATES, TopKSparseAttention
from rainmer.archs.modules.transformer import LayerNorm
from rainmer.archs.rainmer_arch import Rainmer
from rainmer.utils.allocator import tune_malloc
from rainmer.utils.benchmarking import (
    VARIANTS,
    component_timer,
    peak_memory_mib,
    proxy_training_loss,
    set_variant,
    synchronize,
)

VIEWS = ('chromatic', 'degradation', 'detail')


def build(arch: dict, device: torch.device, chained: bool = True) -> Rainmer:
    """One Rainmer (seed 0; chained top-k: the public code's TKSA), plain until :func:`set_variant` converts it."""
    torch.manual_seed(0)
    return Rainmer(**arch, chained_topk=chained, fast=False).to(device)


def make_batch(batch: int, size: int, prompt: int, n_neg: int, device: torch.device) -> dict:
    gen = torch.Generator().manual_seed(1)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen).to(device)

    return {'lq': rand(batch, 3, size, size), 'gt': rand(batch, 3, size, size),
            'lq_resize': rand(batch, 3, prompt, prompt),
            'keys': {v: rand(batch, 3, prompt, prompt) for v in ('chromatic', 'degradation')},
            'negatives': {v: rand(batch, n_neg, 3, prompt, prompt) for v in VIEWS}}


def train_loss(net: Rainmer, data: dict, amp: str | None) -> torch.Tensor:
    dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(amp)
    with torch.autocast(data['lq'].device.type, dtype=dtype, enabled=dtype is not None):
        restored, logits = net.forward_train(data['lq'], data['lq_resize'], data['keys'], data['negatives'])
        return proxy_training_loss(restored, logits, data['gt'])


def make_step(net: Rainmer, mode: str, data: dict, amp: str | None = None):
    """A closure running one inference or training step; returns the output used for the equality check."""
    dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(amp)
    device = data['lq'].device
    if mode == 'inference':
        net.eval()

        def step() -> torch.Tensor:
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                return net(data['lq'])
        return step
    net.train()
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=0.0)  # lr 0: same weights
    scaler = torch.amp.GradScaler('cuda') if amp == 'fp16' and device.type == 'cuda' else None

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = train_loss(net, data, amp)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return loss.detach()
    return step


def run_as(net: Rainmer, variant: str, step: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """``step`` with ``net`` converted to ``variant`` ('plain' or 'fast') first."""
    def converted() -> torch.Tensor:
        set_variant(net, variant)
        return step()
    return converted


def time_modes(args: argparse.Namespace, size: int, device: torch.device, net: Rainmer) -> list[dict]:
    """Both evaluations of the one network, converted in place before each run (outside the timed region)."""
    rows = []
    for mode in args.modes:
        data = make_batch(args.batch, size, args.prompt_size, args.n_neg, device)
        variants = {name: (name, make_step(net, mode, data)) for name in VARIANTS}
        if args.amp:
            variants[f'fast+{args.amp}'] = ('fast', make_step(net, mode, data, args.amp))
        outputs = {name: run_as(net, *variant)() for name, variant in variants.items()}  # warm-up, equality check
        diff = (outputs['fast'].float() - outputs['plain'].float()).abs().max().item()
        times = {name: [] for name in variants}
        cpu_times = {name: [] for name in variants}
        for _ in range(args.repeat):
            for name, (variant, step) in variants.items():
                set_variant(net, variant)
                synchronize(device)
                start, start_cpu = time.perf_counter(), time.process_time()
                step()
                synchronize(device)
                times[name].append(time.perf_counter() - start)
                cpu_times[name].append(time.process_time() - start_cpu)
        dense_diff = dense_topk_diff(args, size, mode, device) if args.dense_check else None
        plain, plain_cpu = statistics.median(times['plain']), statistics.median(cpu_times['plain'])
        for name, values in times.items():
            median, cpu = statistics.median(values), statistics.median(cpu_times[name])
            rows.append(dict(mode=mode, size=size, variant=name, median_s=median, runs_s=values, cpu_s=cpu,
                             best_s=min(values), best_speedup=min(times['plain']) / min(values),
                             images_per_s=args.batch / median, speedup=plain / median, cpu_speedup=plain_cpu / cpu,
                             max_abs_diff=diff if name == 'fast' else None,
                             dense_topk_diff=dense_diff if name == 'fast' else None))
    return rows


COMPONENTS = {'MSFN': MSFN, 'TKSA': TopKSparseAttention, 'MoE / MEFC (with the encoder\'s)': MixtureOfExperts,
              'SE projectors': Projector, 'LayerNorm': LayerNorm, 'prompt injection': PromptInjection}


def breakdown(args: argparse.Namespace, size: int, device: torch.device, net: Rainmer) -> list[dict]:
    """Inference time per component (forward hooks, inclusive) of plain and fast, medians over ``--repeat`` runs
    taken alternately; the last row is the whole step, timed in the same runs."""
    data = make_batch(args.batch, size, args.prompt_size, args.n_neg, device)
    step = make_step(net, 'inference', data)
    runs = {name: [] for name in VARIANTS}
    calls = {}
    for _ in range(args.repeat + 1):  # the first run warms up
        for name in VARIANTS:
            set_variant(net, name)
            with component_timer(net, COMPONENTS, device) as totals:
                synchronize(device)
                start = time.perf_counter()
                step()
                synchronize(device)
                whole = time.perf_counter() - start
            runs[name].append({**{key: value[0] for key, value in totals.items()}, 'whole network': whole})
            calls = {key: value[1] for key, value in totals.items()}
    rows = []
    for component in [*COMPONENTS, 'whole network']:
        plain, fast = (statistics.median(run[component] for run in runs[name][1:]) for name in ('plain', 'fast'))
        rows.append(dict(size=size, component=component, calls=calls.get(component, 1), plain_s=plain,
                         fast_s=fast, speedup=plain / fast if fast else float('nan')))
    return rows


def print_breakdown(rows: list[dict]) -> None:
    print('| size | component | calls | plain s | fast s | speed-up |')
    print('|---|---|---|---|---|---|')
    for row in rows:
        print(f"| {row['size']} | {row['component']} | {row['calls']} | {row['plain_s']:.3f} | {row['fast_s']:.3f} | "
              f"{row['speedup']:.2f}x |")


def dense_topk_diff(args: argparse.Namespace, size: int, mode: str, device: torch.device) -> float:
    """Max abs difference of plain and fast with every sparse rate 1 (top-k keeps all: a continuous network).

    Top-k selection is discontinuous: where two attention scores of a row are within rounding of each other at a
    rank boundary, any change of rounding (a GEMM library, a thread count, a fused op) can keep the other one.
    A randomly initialised network has near-uniform attention and such near-ties in most rows, so the timed
    networks' difference can be that of one flipped choice (about 1e-2). With rates 1 nothing is selected, and
    the difference measures everything else.
    """
    arch = dict(_arch(args), sparse_rates=('1',) * len(DEFAULT_SPARSE_RATES))
    net = build(arch, device, args.topk == 'chained')
    data = make_batch(args.batch, size, args.prompt_size, args.n_neg, device)
    step = make_step(net, mode, data)
    outputs = {name: run_as(net, name, step)() for name in VARIANTS}
    return (outputs['fast'].float() - outputs['plain'].float()).abs().max().item()


def measure_memory(args: argparse.Namespace, size: int, mode: str, variant: str, device: torch.device) -> float:
    """Peak extra memory (MiB) of one step, in this (fresh) process."""
    net = set_variant(build(_arch(args), device, args.topk == 'chained'), variant)
    data = make_batch(args.batch, size, args.prompt_size, args.n_neg, device)
    return peak_memory_mib(make_step(net, mode, data), device)


def _arch(args: argparse.Namespace) -> dict:
    return json.loads(args.arch) if args.arch else {}


def memory_table(args: argparse.Namespace, argv: list[str]) -> dict:
    peaks = {}
    for size in args.sizes:
        for mode in args.modes:
            for variant in VARIANTS:
                cmd = [sys.executable, __file__, *argv, '--_memory-of', str(size), mode, variant]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                peaks[(size, mode, variant)] = float(out.strip().splitlines()[-1])
    return peaks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', type=int, nargs='+', default=[128])
    parser.add_argument('--modes', nargs='+', default=['inference', 'train'], choices=['inference', 'train'])
    parser.add_argument('--batch', type=int, default=1, help='images per inference / crops per training step')
    parser.add_argument('--n-neg', type=int, default=4)
    parser.add_argument('--prompt-size', type=int, default=128)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--amp', choices=['fp16', 'bf16'], default=None,
                        help='also time the fast net under autocast (CUDA: fp16/bf16; CPU: bf16 where supported)')
    parser.add_argument('--arch', default=None, help='Rainmer options as JSON (default: the paper sizes)')
    parser.add_argument('--memory', action='store_true', help='peak memory per variant, each in a subprocess')
    parser.add_argument('--json', default=None, help='write the rows here')
    parser.add_argument('--topk', choices=['chained', 'independent'], default='chained',
                        help="TKSA masks: 'chained' (the public code, the reference behaviour) or 'independent' "
                             '(the paper). Equal scores are kept lowest column first in both evaluations; '
                             'near-ties (distinct scores within rounding) can still be kept differently '
                             '(docs/speed.md)')
    parser.add_argument('--dense-check', action='store_true',
                        help='also compare plain and fast with every sparse rate 1 (no top-k selection; see '
                             'dense_topk_diff)')
    parser.add_argument('--malloc', choices=['tuned', 'default'], default='tuned',
                        help="glibc malloc: 'tuned' as the training/test pipelines run (rainmer/utils/allocator.py), "
                             "or glibc's defaults; both variants run under the same setting")
    parser.add_argument('--breakdown', action='store_true',
                        help='also time the inference of every component (MSFN, TKSA, MoE, ...) of both variants')
    parser.add_argument('--_memory-of', nargs=3, default=None, help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    malloc_tuned = args.malloc == 'tuned' and tune_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args._memory_of:
        size, mode, variant = args._memory_of
        print(measure_memory(args, int(size), mode, variant, device))
        return
    # peak memory first, each in a fresh subprocess, while this process is still small: with tuned malloc this
    # process keeps the memory of its timed steps for reuse, and both may not fit in RAM at once
    peaks = memory_table(args, [a for a in argv if a != '--memory']) if args.memory else {}
    net = build(_arch(args), device, args.topk == 'chained')  # training steps run at lr 0: weights stay
    rows = [row for size in args.sizes for row in time_modes(args, size, device, net)]
    print(f'device {device}, threads {torch.get_num_threads()}, batch {args.batch}, n_neg {args.n_neg}, '
          f'repeat {args.repeat} (medians), top-k {args.topk}, malloc {"tuned" if malloc_tuned else "default"}')
    print('| mode | size | variant | median s | images/s | speed-up vs plain | CPU s | CPU-time speed-up | best s '
          '| best-run speed-up | peak MiB | max abs diff | max abs diff, rates 1 |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    for row in rows:
        peak = peaks.get((row['size'], row['mode'], row['variant']))
        row['peak_mib'] = peak
        diff = '' if row['max_abs_diff'] is None else f"{row['max_abs_diff']:.1e}"
        dense = '' if row['dense_topk_diff'] is None else f"{row['dense_topk_diff']:.1e}"
        print(f"| {row['mode']} | {row['size']} | {row['variant']} | {row['median_s']:.3f} | "
              f"{row['images_per_s']:.2f} | {row['speedup']:.2f}x | {row['cpu_s']:.3f} | {row['cpu_speedup']:.2f}x | "
              f"{row['best_s']:.3f} | {row['best_speedup']:.2f}x | {'' if peak is None else f'{peak:.0f}'} | {diff} | "
              f"{dense} |")
    components = [row for size in args.sizes for row in breakdown(args, size, device, net)] if args.breakdown else []
    if components:
        print_breakdown(components)
    if args.json:
        with open(args.json, 'w') as handle:
            json.dump({'rows': rows, 'components': components} if components else rows, handle, indent=1)


if __name__ == '__main__':
    main()
