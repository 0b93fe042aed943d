"""GPU readiness of rainmer: run this once on a CUDA machine before training or testing there.

Checks (each one reported, a failure of one does not stop the others):

(a) ``equal``: the fast evaluation equals the plain one on CUDA (paper-default Rainmer, ``chained_topk`` false and
    true, inputs 1x3x128x128 and 1x3x241x177; TF32 off for this check): the max abs difference of the outputs,
    and of the same network with every sparse rate 1 (no top-k selection, see docs/speed.md). ``near-tie``: the
    outputs differ by more than the tolerance but the rates-1 networks agree, i.e. a top-k near-tie (two distinct
    scores within rounding at a boundary) was decided differently; ``FAIL``: they differ with rates 1 too.
(b) ``amp``: fp16 AMP training steps through ``RainmerModel.optimize_parameters`` (forward under autocast,
    ``GradScaler.scale(loss).backward()``, unscale, clip, ``scaler.step``): finite losses and a changed parameter.
    The scaler skips the steps whose fp16 gradients overflow (its first scale is 65536), so up to ``--amp-steps``
    steps are run until one updates the weights.
(c) ``ddp``: a one-process NCCL group (``tcp://127.0.0.1:<free port>``, rank 0, world size 1); the network wrapped in
    ``DistributedDataParallel``; two training forwards and backwards (the second would raise on parameters
    without gradients); finite gradients.
(d) ``timing``: inference of plain and fast at 256x256 (median of ``--repeat`` forwards after ``--warmup``, the
    device synchronised around each), and their ratio. ``fast: auto`` runs the plain evaluation on CUDA; this
    table says whether the fast one should be chosen there.

Without CUDA it prints one line saying so and exits 0 (1 with ``--require-cuda``). Otherwise the exit status is 1
when a check failed or raised. ``--out report.json`` also writes the results as JSON.

Example: ``python scripts/check_cuda.py --out cuda_report.json``.
"""
import argparse
import contextlib
import json
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence

import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from rainmer.archs.fast import is_fast, to_fast, to_plain
from rainmer.archs.modules.tksa import DEFAULT_SPARSE_RATES
from rainmer.archs.rainmer_arch import Rainmer
from rainmer.utils.benchmarking import proxy_training_loss, synchronize

EQUAL_SIZES = ((128, 128), (241, 177))
VIEWS = ('chromatic', 'degradation', 'detail')


# ---------------------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """TF32 off for cuDNN convs and matmuls: both evaluations in full fp32 (TF32 rounds the inputs to 10 bits)."""
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul


def build_rainmer(arch: dict, device: torch.device, **options: object) -> Rainmer:
    torch.manual_seed(0)
    return Rainmer(**{**arch, **options}).to(device)


def _rand(*shape: int, device: torch.device, seed: int = 1) -> Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)).to(device)


def training_batch(batch: int, crop: int, prompt: int, n_neg: int, device: torch.device) -> dict:
    """A ``forward_train`` batch of random images: crop, resized whole image, keys and negatives of every view."""
    gen = torch.Generator().manual_seed(2)

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=gen).to(device)

    return {'lq': rand(batch, 3, crop, crop), 'gt': rand(batch, 3, crop, crop),
            'lq_resize': rand(batch, 3, prompt, prompt),
            'keys': {view: rand(batch, 3, prompt, prompt) for view in ('chromatic', 'degradation')},
            'negatives': {view: rand(batch, n_neg, 3, prompt, prompt) for view in VIEWS}}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------------------- (a)
def check_equality(device: torch.device, arch: dict, sizes: Sequence[tuple[int, int]] = EQUAL_SIZES,
                   chained_values: Sequence[bool] = (False, True), tolerance: float = 1e-4) -> dict:
    """Max abs difference of fast and plain (one network converted in place), per ``chained_topk`` and size."""
    rows = []
    dense_arch = {**arch, 'sparse_rates': ('1',) * len(DEFAULT_SPARSE_RATES)}
    with no_tf32(), torch.no_grad():
        for chained in chained_values:
            nets = {'timed': build_rainmer(arch, device, chained_topk=chained, fast=False).eval(),
                    'rates 1': build_rainmer(dense_arch, device, chained_topk=chained, fast=False).eval()}
            for height, width in sizes:
                x = _rand(1, 3, height, width, device=device)
                diffs = {}
                for name, net in nets.items():
                    plain = to_plain(net)(x)
                    fast = to_fast(net)(x)
                    diffs[name] = (fast - plain).abs().max().item()
                    to_plain(net)
                if diffs['timed'] <= tolerance:
                    status = 'ok'
                elif diffs['rates 1'] <= tolerance:
                    status = 'near-tie'
                else:
                    status = 'FAIL'
                rows.append(dict(chained_topk=chained, size=[height, width], max_abs_diff=diffs['timed'],
                                 max_abs_diff_rates_1=diffs['rates 1'], status=status))
    failed = any(row['status'] == 'FAIL' for row in rows)
    return dict(ok=not failed, tolerance=tolerance, rows=rows)


# ---------------------------------------------------------------------------------------------------- (b)
def rainmer_model_options(arch: dict, device: torch.device, dtype: str, workdir: str, n_neg: int) -> dict:
    """Options of a RainmerModel that trains ``arch`` under AMP (no datasets: batches are fed directly)."""
    return dict(
        name='check_cuda', model_type='RainmerModel', scale=1, manual_seed=0,
        num_gpu=1 if device.type == 'cuda' else 0, is_train=True, dist=False, rank=0, world_size=1,
        network_g=dict(type='Rainmer', **arch),
        path=dict(pretrain_network_g=None, strict_load_g=True, resume_state=None, models=workdir,
                  training_states=workdir, visualization=workdir),
        train=dict(
            optim_g=dict(type='AdamW', lr=3e-4, weight_decay=0, betas=[0.9, 0.999]),
            optim_encoder=dict(type='AdamW', lr=3e-4, weight_decay=0.01, betas=[0.9, 0.999]),
            scheduler=dict(type='CosineAnnealingRestartCyclicLR', periods=[100], restart_weights=[1], eta_mins=[1e-6]),
            total_iter=100, warmup_iter=-1, accumulate_grad_step=1, grad_clip_norm=0.01, n_neg=n_neg,
            archive_size=2 * n_neg, use_amp=True, amp_dtype=dtype,
            pixel_opt=dict(type='CharbonnierLoss', loss_weight=1.0, reduction='mean', eps=1e-6),
            ssim_opt=dict(type='SSIMLoss', loss_weight=0.1),
            chromatic_opt=dict(type='InfoNCELoss', loss_weight=0.1),
            degradation_detail_opt=dict(type='InfoNCELoss', loss_weight=0.1)),
        val=dict(val_freq=100, save_img=False),
        logger=dict(print_freq=1, save_checkpoint_freq=100, use_tb_logger=False),
    )


def check_amp_step(device: torch.device, arch: dict, dtype: str = 'fp16', crop: int = 128, batch: int = 2,
                   n_neg: int = 4, max_steps: int = 8) -> dict:
    """AMP training steps of RainmerModel until one changes the weights (fp16 on CUDA: with its GradScaler)."""
    from basicsr.models import build_model

    with tempfile.TemporaryDirectory() as workdir:
        torch.manual_seed(0)
        model = build_model(rainmer_model_options(arch, device, dtype, workdir, n_neg))
        scaler = model.grad_scaler
        data = training_batch(batch, crop, arch.get('prompt_size', 128), n_neg, model.device)
        feed = {'lq': data['lq'], 'gt': data['gt'], 'lq_resize': data['lq_resize'],
                'gt_resize': data['keys']['chromatic']}
        while len(model.archive) < n_neg:  # as the training pipeline's before_training
            model.archive.prefill(feed['lq_resize'], feed['gt_resize'])
        trainable = {name: p for name, p in model.net_g.named_parameters() if p.requires_grad}
        before = {name: p.detach().clone() for name, p in trainable.items()}
        losses, scales, changed = [], [], []
        for step in range(1, max_steps + 1):
            model.feed_data(feed)
            model.optimize_parameters(step)
            losses.append(float(model.log_dict['l_total']))
            scales.append(None if scaler is None else float(scaler.get_scale()))
            changed = [name for name, p in trainable.items() if not torch.equal(p.detach(), before[name])]
            if changed or not all(map(_finite, losses)):
                break
        finite = all(map(_finite, losses))
        return dict(ok=finite and bool(changed), dtype=dtype, grad_scaler=scaler is not None, steps=len(losses),
                    losses=losses, scales=scales, finite_losses=finite, changed_tensors=len(changed),
                    trainable_tensors=len(trainable),
                    output_dtype=str(model.output.dtype))


def _finite(value: float) -> bool:
    return value == value and abs(value) != float('inf')


# ---------------------------------------------------------------------------------------------------- (c)
def check_ddp(device: torch.device, arch: dict, backend: str = 'nccl', crop: int = 128, batch: int = 2,
              n_neg: int = 4, iterations: int = 2) -> dict:
    """One process group of one rank, the network in DDP, ``iterations`` training forwards and backwards."""
    port = free_port()
    dist.init_process_group(backend, init_method=f'tcp://127.0.0.1:{port}', rank=0, world_size=1)
    try:
        net = build_rainmer(arch, device).train()
        device_ids = [torch.cuda.current_device()] if device.type == 'cuda' else None
        ddp = DistributedDataParallel(net, device_ids=device_ids)
        data = training_batch(batch, crop, arch.get('prompt_size', 128), n_neg, device)
        losses, finite_grads = [], True
        for _ in range(iterations):
            ddp.zero_grad(set_to_none=True)
            restored, logits = ddp(data['lq'], lq_resize=data['lq_resize'], keys=data['keys'],
                                   negatives=data['negatives'])
            loss = proxy_training_loss(restored, logits, data['gt'])
            loss.backward()
            losses.append(loss.item())
            grads = [p.grad for p in net.parameters() if p.requires_grad]
            finite_grads &= all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
        synchronize(device)
        return dict(ok=finite_grads and all(map(_finite, losses)), backend=backend, port=port,
                    iterations=iterations, losses=losses, finite_grads=finite_grads,
                    evaluation='fast' if is_fast(net) else 'plain')
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------------- (d)
def median_forward_seconds(step: Callable[[], object], device: torch.device, warmup: int, repeat: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeat):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def check_timing(device: torch.device, arch: dict, size: int = 256, warmup: int = 3, repeat: int = 10) -> dict:
    """Median inference time of the plain and the fast evaluation of one network (default TF32 settings)."""
    net = build_rainmer(arch, device, fast=False).eval()
    x = _rand(1, 3, size, size, device=device)

    def step() -> None:
        with torch.no_grad():
            net(x)

    seconds = {}
    for variant, convert in (('plain', to_plain), ('fast', to_fast)):
        convert(net)
        seconds[variant] = median_forward_seconds(step, device, warmup, repeat)
    return dict(ok=True, size=size, warmup=warmup, repeat=repeat, plain_s=seconds['plain'], fast_s=seconds['fast'],
                speedup=seconds['plain'] / seconds['fast'], tf32_convs=torch.backends.cudnn.allow_tf32,
                tf32_matmul=torch.backends.cuda.matmul.allow_tf32)


# ---------------------------------------------------------------------------------------------------- report
def _run(name: str, check: Callable[[], dict]) -> dict:
    start = time.perf_counter()
    try:
        result = check()
    except Exception as error:  # noqa: BLE001 (report every check, whatever fails)
        result = dict(ok=False, error=f'{type(error).__name__}: {error}')
    result['seconds'] = round(time.perf_counter() - start, 1)
    print(format_result(name, result), flush=True)
    return result


def format_result(name: str, result: dict) -> str:
    head = f"({name}) {'ok' if result['ok'] else 'FAILED'} in {result['seconds']} s"
    if 'error' in result:
        return f"{head}: {result['error']}"
    if name == 'a':
        lines = [f"{head}: fast vs plain, max abs difference (tolerance {result['tolerance']:.0e}; TF32 off)"]
        lines += [f"    chained_topk={str(row['chained_topk']).lower():5} {row['size'][0]}x{row['size'][1]}: "
                  f"{row['max_abs_diff']:.2e} (rates 1: {row['max_abs_diff_rates_1']:.2e}) {row['status']}"
                  for row in result['rows']]
        return '\n'.join(lines)
    if name == 'b':
        return (f"{head}: {result['dtype']} AMP step{'s' if result['steps'] > 1 else ''} of RainmerModel, grad scaler "
                f"{'on' if result['grad_scaler'] else 'off'}, {result['steps']} step(s), losses "
                f"{', '.join(f'{v:.4f}' for v in result['losses'])}, scales {result['scales']}, "
                f"{result['changed_tensors']} of {result['trainable_tensors']} trainable tensors changed")
    if name == 'c':
        return (f"{head}: {result['backend']} process group (1 rank), DDP, {result['iterations']} forward/backward, "
                f"losses {', '.join(f'{v:.4f}' for v in result['losses'])}, finite gradients "
                f"{result['finite_grads']}, {result['evaluation']} evaluation (fast: auto)")
    return (f"{head}: {result['size']}x{result['size']} inference, median of {result['repeat']}: plain "
            f"{1000 * result['plain_s']:.1f} ms, fast {1000 * result['fast_s']:.1f} ms, plain/fast "
            f"{result['speedup']:.2f}x (TF32 convs {result['tf32_convs']}, matmul {result['tf32_matmul']})")


def _version(query: Callable[[], object]) -> object:
    """A library version, or 'unavailable' (a build without it: the checks that need it report the error)."""
    try:
        return query()
    except Exception:  # noqa: BLE001 (any failure means the same here)
        return 'unavailable'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda', help="a CUDA device, e.g. 'cuda' or 'cuda:1'")
    parser.add_argument('--require-cuda', action='store_true', help='exit 1 (not 0) when CUDA is not available')
    parser.add_argument('--out', default=None, help='write the results here as JSON')
    parser.add_argument('--arch', default=None, help='Rainmer options as JSON (default: the paper sizes)')
    parser.add_argument('--checks', nargs='+', default=['a', 'b', 'c', 'd'], choices=['a', 'b', 'c', 'd'])
    parser.add_argument('--tolerance', type=float, default=1e-4, help='(a) largest max abs difference accepted')
    parser.add_argument('--crop', type=int, default=128, help='(b, c) training crop')
    parser.add_argument('--batch', type=int, default=2, help='(b, c) crops per step')
    parser.add_argument('--n-neg', type=int, default=4, help='(b, c) negatives per view')
    parser.add_argument('--amp-steps', type=int, default=8, help='(b) most steps until one updates the weights')
    parser.add_argument('--time-size', type=int, default=256, help='(d) image side')
    parser.add_argument('--warmup', type=int, default=3, help='(d) untimed forwards first')
    parser.add_argument('--repeat', type=int, default=10, help='(d) timed forwards (median)')
    args = parser.parse_args(argv)

    if not torch.cuda.is_available():
        print(f'CUDA is not available (torch {torch.__version__}, built for CUDA {torch.version.cuda}): '
              'nothing checked.')
        if args.out:
            with open(args.out, 'w') as handle:
                json.dump({'cuda_available': False, 'torch': torch.__version__}, handle, indent=1)
        return 1 if args.require_cuda else 0

    device = torch.device(args.device)
    if device.type != 'cuda':
        parser.error('--device must be a CUDA device')
    if device.index is None:  # set_device and DDP's device_ids need the index
        device = torch.device('cuda', torch.cuda.current_device())
    torch.cuda.set_device(device)
    arch = json.loads(args.arch) if args.arch else {}
    props = torch.cuda.get_device_properties(device)
    environment = dict(cuda_available=True, device=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                       capability=f'{props.major}.{props.minor}', torch=torch.__version__, cuda=torch.version.cuda,
                       cudnn=_version(torch.backends.cudnn.version),
                       nccl=_version(lambda: '.'.join(map(str, torch.cuda.nccl.version()))),
                       arch=arch or 'paper defaults')
    print(f"CUDA {environment['cuda']} on {environment['device']} ({environment['memory_gib']} GiB, capability "
          f"{environment['capability']}), torch {environment['torch']}, cuDNN {environment['cudnn']}, NCCL "
          f"{environment['nccl']}; Rainmer {environment['arch']}", flush=True)
    checks = {
        'a': lambda: check_equality(device, arch, tolerance=args.tolerance),
        'b': lambda: check_amp_step(device, arch, 'fp16', args.crop, args.batch, args.n_neg, args.amp_steps),
        'c': lambda: check_ddp(device, arch, 'nccl', args.crop, args.batch, args.n_neg),
        'd': lambda: check_timing(device, arch, args.time_size, args.warmup, args.repeat),
    }
    results = {}
    for name in args.checks:
        results[name] = _run(name, checks[name])
        torch.cuda.empty_cache()
    ok = all(result['ok'] for result in results.values())
    failed = [name for name, result in results.items() if not result['ok']]
    print('all checks passed' if ok else f"some checks FAILED: {', '.join(failed)}")
    if args.out:
        with open(args.out, 'w') as handle:
            json.dump({**environment, 'ok': ok, 'checks': results}, handle, indent=1)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
