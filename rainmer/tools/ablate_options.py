"""The variants of ``rainmer ablate``, their sizes and the option files of their ``basicsr train`` / ``test`` runs.

Every variant trains on the same data with the same crop, batch, iterations, optimiser and schedule (those of
``rainmer demo``); only the network, the model class, Rainmer's own training keys and, for the comparison roster
(:data:`ROSTER_VARIANTS`, selectable but not run by default), the loss differ.
"""
import math
from dataclasses import dataclass

from rainmer.demo import SMALL_RAINMER, test_options, train_options
from rainmer.errors import OptionError

# name -> what the variant is (what it removes from Rainmer), in report order: the default set
VARIANTS = {
    'rainmer': 'Rainmer: chromatic, degradation and detail views, prompts, local knowledge fusion',
    'no_chromatic': "Rainmer without the chromatic view and prompt (views: degradation, detail)",
    'no_degradation': "Rainmer without the degradation and detail views and the degradation prompt (views: chromatic)",
    'baseline': 'Rainmer without views, prompts and local fusion (views: [], local_fusion: false): its backbone',
    'drsformer': 'DRSformer of the same width and depth, trained by DerainModel',
    'swinir': "BasicSR's SwinIR of similar FLOPs, trained by DerainModel",
}
# the comparison roster (options/<name>_mixed.yml), only with --variants: name -> what it is
ROSTER_VARIANTS = {
    'restormer': "Restormer at the ablation's width with its public depth, L1 loss",
    'promptir': "PromptIR at the ablation's width with its public depth, prompts scaled alike, L1 loss",
    'prenet': 'PReNet (6 recurrent stages) of about the FLOPs of Rainmer, negative-SSIM loss',
    'brn': 'BRN (8 recurrent stages) of about the FLOPs of Rainmer, negative-SSIM loss',
    'rcdnet': 'RCDNet (17 stages) of about the FLOPs of Rainmer, its stage-wise loss, trained by RCDNetModel',
    'idt': 'IDT of about the FLOPs of Rainmer on the smallest img_size holding a crop, negative-SSIM loss',
}
ALL_VARIANTS = {**VARIANTS, **ROSTER_VARIANTS}
RAINMER_VIEWS = {'rainmer': ['chromatic', 'degradation', 'detail'], 'no_chromatic': ['degradation', 'detail'],
                 'no_degradation': ['chromatic'], 'baseline': []}
RAINMER_ONLY_TRAIN_KEYS = ('optim_encoder', 'chromatic_opt', 'degradation_detail_opt', 'n_neg', 'archive_size')
METRICS = {  # BasicSR's protocol (uint8, Y) and the paper's (float output, pooled SSIM), named as options/test/*.yml
    'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': True},
    'ssim': {'type': 'calculate_ssim', 'crop_border': 0, 'test_y_channel': True},
    'psnr_paper': {'type': 'calculate_psnr_rainmer'},
    'ssim_paper': {'type': 'calculate_ssim_rainmer'},
}

# each roster network's own objective, train.pixel_opt of options/<name>_mixed.yml (no ssim_opt)
L1 = {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}
NEGATIVE_SSIM = {'type': 'SSIMLoss', 'loss_weight': 1.0}  # 1 - SSIM: the gradient of -SSIM
ROSTER_LOSSES = {
    'restormer': L1, 'promptir': L1, 'prenet': NEGATIVE_SSIM, 'brn': NEGATIVE_SSIM, 'idt': NEGATIVE_SSIM,
    'rcdnet': {'type': 'RCDNetLoss', 'loss_weight': 1.0, 'stage_weight': 0.1, 'last_rain_weight': 0.9,
               'reduction': 'mean'},
}
ROSTER_MODEL_TYPES = {'rcdnet': 'RCDNetModel'}  # the others: DerainModel

# default size (scale 1): calibrated so that 6 variants x 3 seeds take about an hour on a 2-core CPU (docs/ablation.md)
BASE_ITERS = 600
BASE_CROP = 48
BASE_DIM = SMALL_RAINMER['dim']
BASE_PROMPT = SMALL_RAINMER['prompt_size']
SWINIR_WINDOW = 8
MIN_BASE_DIM = 16  # the projectors' squeeze-excitation divides base_dim by 16
# the roster at the ablation's width (docs/ablation.md): Restormer and PromptIR keep their public depth (at --scale 4,
# width 48, Restormer is the public network); the others' widths are set for about the FLOPs of the small Rainmer
PUBLIC_DIM = 48  # Restormer's / PromptIR's public width
RESTORMER_DEPTH = dict(num_blocks=[4, 6, 6, 8], num_refinement_blocks=4, heads=[1, 2, 4, 8])
PROMPTIR_PROMPT_DIMS = (64, 128, 320)  # public prompt channels at width 48 (rainmer.archs.promptir_arch.PROMPT_DIMS)
PRENET_WIDTH = 1.0  # channels per unit of width: 12 at scale 1 (public 32)
BRN_WIDTH = 2 / 3  # 8 at scale 1, the public 32 at scale 4
RCDNET_WIDTH = 1 / 2  # rain maps and Z channels: 6 at scale 1 (public 32 each)
RCDNET_MAX_MAPS = 32  # one shipped initial kernel per rain map
IDT_WIDTH = 2 / 3  # embed_dim: 8 at scale 1, the public 32 at scale 4


@dataclass(frozen=True)
class Sizes:
    """Iterations (batches of 4), training crop, backbone width, prompt size and photograph size of one ablation."""

    iters: int
    crop: int
    dim: int
    prompt_size: int
    max_side: int

    @property
    def window_size(self) -> int:
        """SwinIR's window: 8, or the largest divisor of the crop below it."""
        return max(w for w in range(1, SWINIR_WINDOW + 1) if self.crop % w == 0)

    @property
    def idt_img_size(self) -> int:
        """IDT's network side: the smallest it accepts (64 or a multiple of 128) that holds a training crop, so
        each crop is one pass of the network (``IDT.forward`` pads it)."""
        return 64 if self.crop <= 64 else 128 * math.ceil(self.crop / 128)


def _multiple_of_8(value: float) -> int:
    return max(16, 8 * round(value / 8))


def sizes_for(scale: float, iters: int | None = None, max_side: int | None = None) -> Sizes:
    """The sizes at ``scale`` (iterations, crop, width and prompt size multiplied by it); ``iters`` and ``max_side``
    override (photographs default to four training crops on their longer side)."""
    if not scale > 0 or not math.isfinite(scale):
        raise OptionError(f'--scale: {scale} must be a positive number (1: about an hour on a 2-core CPU)')
    if iters is not None and iters < 1:
        raise OptionError(f'--iters: {iters} must be at least 1')
    crop = _multiple_of_8(BASE_CROP * scale)
    sizes = Sizes(iters=iters or max(1, round(BASE_ITERS * scale)), crop=crop, dim=max(2, round(BASE_DIM * scale)),
                  prompt_size=_multiple_of_8(BASE_PROMPT * scale), max_side=max_side or 4 * crop)
    if sizes.max_side < sizes.crop:
        raise OptionError(f'--max-side: {sizes.max_side} is smaller than the training crop {sizes.crop}; '
                          f'give at least {sizes.crop}')
    return sizes


def parse_variants(text: str) -> list[str]:
    """``--variants a,b``: known names (:data:`ALL_VARIANTS`), in the order given, each once."""
    names = list(dict.fromkeys(name.strip() for name in text.split(',') if name.strip()))
    unknown = [name for name in names if name not in ALL_VARIANTS]
    if unknown or not names:
        raise OptionError(f"--variants: {', '.join(unknown) or 'none given'}: choose among "
                          f"{', '.join(ALL_VARIANTS)} (comma-separated)")
    return names


def _width(dim: int, ratio: float) -> int:
    return max(2, round(dim * ratio))


def _roster_network(variant: str, sizes: Sizes) -> dict:
    """``network_g`` of a roster variant (:data:`ROSTER_VARIANTS`) at these sizes."""
    dim = sizes.dim
    if variant == 'restormer':
        return dict(type='Restormer', dim=dim, **RESTORMER_DEPTH, ffn_expansion_factor=2.66)
    if variant == 'promptir':  # prompt widths a multiple of the heads of the blocks that read them (level 3)
        heads = RESTORMER_DEPTH['heads'][2]
        prompt_dims = [heads * max(1, round(p * dim / PUBLIC_DIM / heads)) for p in PROMPTIR_PROMPT_DIMS]
        prompt_sizes = [sizes.crop // 2 ** level for level in (1, 2, 3)]  # public (64, 32, 16): crop 128
        return dict(type='PromptIR', dim=dim, **RESTORMER_DEPTH, ffn_expansion_factor=2.66,
                    prompt_dims=prompt_dims, prompt_sizes=prompt_sizes)
    if variant == 'prenet':
        return dict(type='PReNet', recurrent_iter=6, channels=_width(dim, PRENET_WIDTH))
    if variant == 'brn':
        return dict(type='BRN', recurrent_iter=8, channels=_width(dim, BRN_WIDTH))
    if variant == 'rcdnet':
        width = _width(dim, RCDNET_WIDTH)
        return dict(type='RCDNet', num_map=min(width, RCDNET_MAX_MAPS), num_channel=width, num_block=4,
                    inter_iter=17, img_range=255)
    if variant == 'idt':  # the public crop overlap, 32 of 128, for test images
        size = sizes.idt_img_size
        return dict(type='IDT', img_size=size, embed_dim=_width(dim, IDT_WIDTH), tile_overlap=size // 4)
    raise OptionError(f"--variants: unknown variant '{variant}'; choose among {', '.join(ALL_VARIANTS)}")


def network_options(variant: str, sizes: Sizes) -> dict:
    """``network_g`` of a variant at these sizes."""
    dim = sizes.dim
    if variant in RAINMER_VIEWS:
        opt = dict(SMALL_RAINMER, dim=dim, base_dim=max(MIN_BASE_DIM, 2 * dim), prompt_size=sizes.prompt_size,
                   views=RAINMER_VIEWS[variant])
        if variant == 'baseline':
            opt['local_fusion'] = False
        return opt
    if variant == 'drsformer':
        return dict(type='DRSformer', dim=dim, num_blocks=SMALL_RAINMER['num_blocks'], heads=SMALL_RAINMER['heads'],
                    ffn_expansion_factor=SMALL_RAINMER['ffn_expansion_factor'])
    if variant == 'swinir':  # about the FLOPs of the Rainmer backbone at this width (docs/ablation.md)
        return dict(type='SwinIR', upscale=1, in_chans=3, img_size=sizes.crop, window_size=sizes.window_size,
                    img_range=1.0, depths=[2, 2, 2], embed_dim=3 * dim, num_heads=[3, 3, 3], mlp_ratio=2,
                    upsampler='', resi_connection='1conv')
    return _roster_network(variant, sizes)


def model_type(variant: str) -> str:
    """The model class that trains and tests a variant."""
    return 'RainmerModel' if variant in RAINMER_VIEWS else ROSTER_MODEL_TYPES.get(variant, 'DerainModel')


def run_name(variant: str, seed: int) -> str:
    """The experiment name of one (variant, seed): ``experiments/<name>``, ``results/<name>_test``."""
    return f'ablate_{variant}_seed{seed}'


def weights_path(variant: str, seed: int) -> str:
    """The trained network, relative to the ablation folder."""
    return f'experiments/{run_name(variant, seed)}/models/net_g_latest.pth'


def ablation_train_options(variant: str, seed: int, data: str, sizes: Sizes) -> dict:
    """The ``basicsr train`` options of one (variant, seed): ``rainmer demo``'s recipe at these sizes, a roster
    variant's own loss (:data:`ROSTER_LOSSES`) instead of its pixel and SSIM losses."""
    opt = train_options(data, sizes.iters, sizes.crop)
    opt.update(name=run_name(variant, seed), model_type=model_type(variant), num_gpu='auto', manual_seed=seed,
               network_g=network_options(variant, sizes))
    opt['datasets']['train']['resize_size'] = sizes.prompt_size
    if opt['model_type'] != 'RainmerModel':
        for key in RAINMER_ONLY_TRAIN_KEYS:
            opt['train'].pop(key, None)
    if variant in ROSTER_LOSSES:
        del opt['train']['ssim_opt']
        opt['train']['pixel_opt'] = dict(ROSTER_LOSSES[variant])
    opt['logger'].update(print_freq=max(1, sizes.iters // 20), save_checkpoint_freq=max(1, sizes.iters // 2))
    return opt


def ablation_test_options(variant: str, seed: int, data: str, sizes: Sizes) -> dict:
    """The ``basicsr test`` options of one (variant, seed): every domain's held-out pairs, both metric protocols,
    the restored images saved (``<name>_derained.png``)."""
    opt = test_options(data, weights_path(variant, seed))
    opt.update(name=f'{run_name(variant, seed)}_test', model_type=model_type(variant), num_gpu='auto',
               manual_seed=seed, network_g=network_options(variant, sizes))
    opt['val'] = dict(save_img=True, suffix='derained', pbar=False, metrics={k: dict(v) for k, v in METRICS.items()})
    return opt
