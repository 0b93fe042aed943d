"""Rainmer (ACM MM 2024): multi-view representation encoder + prompted sparse-transformer backbone."""
import copy
from collections.abc import Mapping, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor

from rainmer.archs.fast import set_fast
from rainmer.archs.modules.backbone import SparseTransformerBackbone, pad_to_multiple
from rainmer.archs.modules.contrastive import JOINT_VIEW, contrastive_logits, merge_logits
from rainmer.archs.modules.encoder import PROMPT_VIEWS, VIEW_PROJECTOR, VIEWS, RepresentationEncoder
from rainmer.archs.modules.fusion import LocalKnowledgeFusion
from rainmer.archs.modules.prompt import check_prompt_fusion
from rainmer.archs.modules.tksa import DEFAULT_SPARSE_RATES


def _canonical_views(views: Sequence[str]) -> tuple[str, ...]:
    unknown = set(views) - set(VIEWS)
    if unknown:
        raise ValueError(f'Unknown views {sorted(unknown)}; choose among {VIEWS}.')
    return tuple(view for view in VIEWS if view in views)


@ARCH_REGISTRY.register()
class Rainmer(SparseTransformerBackbone):
    """Rainmer: DRSformer-like backbone guided by chromatic/degradation prompts and a location feature.

    * ``forward(x)``: image-to-image for any H x W (drop-in ``network_g`` for ``SRModel``): prompts come from
      the query encoder on x resized to ``prompt_size`` (bilinear); the backbone runs on x padded to a
      multiple of 8 and is cropped back.
    * ``forward_train(...)`` (or ``forward(lq, lq_resize=..., keys=..., negatives=...)``, which goes through a
      DDP wrapper): momentum update, restored image and contrastive logits per view.

    Args:
        inp_channels, out_channels, dim, num_blocks, heads, ffn_expansion_factor, bias, LayerNorm_type:
            backbone options as DRSformer.
        base_dim: Width of the representations and prompts.
        sparse_rates: TKSA top-k rates (stored as the vector ``attns``).
        views: Contrastive views, among 'chromatic', 'degradation', 'detail'. The chromatic and degradation
            views also give the decoder prompts. Ablations: no 'chromatic' (w/o chromatic prompt), no
            'degradation'/'detail' (w/o degradation prompt), ``[]`` with ``local_fusion=False`` (baseline).
        local_fusion: Fuse the encoder's location feature into the shallow feature.
        momentum: EMA factor m of the key encoder (``k = m k + (1 - m) q``).
        prompt_size: Side of the resized image the query encoder sees at inference.
        temperature: Temperature of the contrastive logits.
        chained_topk: Reproduce the public Rainmer code's TKSA (each rate selects its top-k from the previous
            rate's probabilities); needed for checkpoints trained with that code. Default: independent masks.
        prompt_fusion: ``sum`` (the paper: every decoder block adds ``P_chr + P_deg``) or ``chralpha`` (the public
            code's ``Rainmer_SA_chralpha``, trained by its mixed config: ``a P_chr + (1 - a) P_deg`` with
            ``a = (1 + <normalize(chr_z), stopgrad(z_chr)>) / 2`` and a learnable ``chr_z`` [1, base_dim, 1, 1]
            per decoder block, +base_dim parameters each). ``chralpha`` needs the chromatic and degradation views.
        fast: ``auto`` | True | False: the fast evaluation of the same parameters (:mod:`rainmer.archs.fast`);
            ``auto`` uses it for fp32 on the CPU and the plain (reference) evaluation elsewhere.
    """

    def __init__(self, inp_channels: int = 3, out_channels: int = 3, dim: int = 48, base_dim: int = 128,
                 num_blocks: Sequence[int] = (4, 6, 6, 8), heads: Sequence[int] = (1, 2, 4, 8),
                 ffn_expansion_factor: float = 2.66, bias: bool = False,
                 LayerNorm_type: str = 'WithBias',  # noqa: N803 (public option name)
                 sparse_rates: Sequence = DEFAULT_SPARSE_RATES, views: Sequence[str] = VIEWS,
                 local_fusion: bool = True, momentum: float = 0.999, prompt_size: int = 128,
                 temperature: float = 1.0, chained_topk: bool = False, prompt_fusion: str = 'sum',
                 fast: bool | str = 'auto') -> None:
        views = _canonical_views(views)
        prompt_views = tuple(view for view in PROMPT_VIEWS if view in views)
        check_prompt_fusion(prompt_fusion, prompt_views)
        attention = dict(sparse_rates=tuple(sparse_rates), scalar_rate_weights=False, chained_topk=chained_topk)
        super().__init__(inp_channels, out_channels, dim, num_blocks, heads, ffn_expansion_factor, bias,
                         LayerNorm_type, attention, prompt_views=prompt_views, prompt_dim=base_dim,
                         prompt_fusion=prompt_fusion)
        self.views = views
        self.prompt_views = prompt_views
        self.prompt_fusion = prompt_fusion
        self.momentum = momentum
        self.prompt_size = prompt_size
        self.temperature = temperature
        self.use_local_fusion = local_fusion
        projectors = {VIEW_PROJECTOR[view] for view in views}
        if views or local_fusion:
            self.query_encoder = RepresentationEncoder(inp_channels, dim, base_dim, projectors)
        else:
            self.query_encoder = None
        if views:
            self.key_encoder = copy.deepcopy(self.query_encoder).requires_grad_(False)
        else:
            self.key_encoder = None
        self.local_fusion = LocalKnowledgeFusion(dim) if local_fusion else None
        set_fast(self, fast)

    # ------------------------------------------------------------------ encoder
    @torch.no_grad()
    def momentum_update(self) -> None:
        """``k <- k + (1 - m) (q - k)`` for every key-encoder parameter (no-op without views)."""
        if self.key_encoder is None:
            return
        for query, key in zip(self.query_encoder.parameters(), self.key_encoder.parameters()):
            key.lerp_(query, 1.0 - self.momentum)

    def resize_query(self, x: Tensor) -> Tensor:
        """The query encoder's input: x resized to ``prompt_size`` (bilinear, no antialias, like cv2.resize)."""
        if tuple(x.shape[-2:]) == (self.prompt_size, self.prompt_size):
            return x
        return F.interpolate(x, size=(self.prompt_size, self.prompt_size), mode='bilinear', align_corners=False)

    def encode(self, x: Tensor, resize: bool = True) -> dict[str, Tensor]:
        """Unnormalised query representations: 'chromatic' and 'degradation' [B, base_dim], 'detail'
        [B, base_dim, h/8, w/8] (those this network has projectors for), from x resized to ``prompt_size``."""
        if self.query_encoder is None:
            return {}
        if resize:
            x = self.resize_query(x)
        available = [view for view in VIEWS
                     if getattr(self.query_encoder, f'{VIEW_PROJECTOR[view]}_projector') is not None]
        reps = self.query_encoder.represent(self.query_encoder.features(x), available)
        return {view: rep.flatten(1) if view != 'detail' else rep for view, rep in reps.items()}

    def _prompts(self, reps: Mapping[str, Tensor]) -> dict[str, Tensor] | None:
        """L2-normalised chromatic/degradation vectors [B, base_dim, 1, 1] for the decoder."""
        if not self.prompt_views:
            return None
        return {view: F.normalize(reps[view], dim=1) for view in self.prompt_views}

    def _fusion(self, location: Tensor | None):
        if self.local_fusion is None:
            return None
        return partial(self.local_fusion, location)

    # ------------------------------------------------------------------ inference
    def forward(self, x: Tensor, lq_resize: Tensor | None = None, keys: Mapping[str, Tensor] | None = None,
                negatives: Mapping[str, Tensor] | None = None) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Restore x [B, C, H, W]; with ``keys``/``negatives`` given, run :meth:`forward_train` instead."""
        if keys is not None or negatives is not None:
            return self.forward_train(x, lq_resize, keys, negatives)
        h, w = x.shape[-2:]
        padded = pad_to_multiple(x)
        prompts = query_input = None
        if self.prompt_views:
            query_input = self.resize_query(x if lq_resize is None else lq_resize)
            query_feat = self.query_encoder.features(query_input)
            prompts = self._prompts(self.query_encoder.represent(query_feat, self.prompt_views))
        location = None
        if self.local_fusion is not None:  # an input of the prompt size needs no resize nor padding: same features
            location = query_feat if query_input is padded else self.query_encoder.features(padded)
        return self.restore(padded, prompts, self._fusion(location))[..., :h, :w]

    # ------------------------------------------------------------------ training
    def _key_representations(self, keys: Mapping[str, Tensor], negatives: Mapping[str, Tensor],
                             batch: int) -> dict[str, tuple[Tensor, Tensor]]:
        """Key encoder on every key and negative in one batched call: view -> (key [B, ...], negs [B, n, ...])."""
        images, sizes = [], []
        for view in self.views:
            images.append(keys[view])
            sizes.append(keys[view].shape[0])
        for view in self.views:
            images.append(negatives[view].flatten(0, 1))
            sizes.append(images[-1].shape[0])
        feats = self.key_encoder.features(torch.cat(images, dim=0)).split(sizes, dim=0)
        num_views = len(self.views)
        out = {}
        for index, view in enumerate(self.views):
            key_rep = self.key_encoder.project(feats[index], view)
            neg_rep = self.key_encoder.project(feats[num_views + index], view)
            out[view] = key_rep, neg_rep.unflatten(0, (batch, -1))
        return out

    def forward_train(self, lq: Tensor, lq_resize: Tensor, keys: Mapping[str, Tensor],
                      negatives: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """One training forward (docs/method.md, multi-view contrastive learning).

        1. momentum update of the key encoder (first, as the public code);
        2. query encoder on ``lq_resize`` (representations + prompts) and on ``lq`` (location feature);
        3. key encoder, without gradients, on all keys and negatives batched into one call;
        4. the prompted backbone on ``lq``.

        Args:
            lq: Training crop [B, C, H, W]. lq_resize: Whole rainy image resized [B, C, s, s].
            keys: view -> positive [B, C, s, s]; 'detail' defaults to ``lq_resize``.
            negatives: view -> [B, n_neg, C, s, s].

        Returns:
            The restored crop and the logits (positive at index 0): 'chromatic', 'degradation', 'detail'
            [B, 1 + n_neg] for every view of this network, plus 'degradation_detail' [B, 1 + 2 n_neg] =
            ``[pos_deg + pos_det, negs_deg, negs_det]`` when both share one softmax. A loss uses either the
            joint entry or the two per-view entries, not both.
        """
        if not self.views:
            raise RuntimeError('forward_train needs contrastive views; this network has none (baseline).')
        keys = dict(keys)
        keys.setdefault('detail', lq_resize)
        missing = [view for view in self.views if view not in keys or view not in negatives]
        if missing:
            raise KeyError(f'Missing keys/negatives for views {missing}.')
        self.momentum_update()

        batch = lq.shape[0]
        h, w = lq.shape[-2:]
        padded = pad_to_multiple(lq)
        if self.local_fusion is not None and padded.shape[-2:] == lq_resize.shape[-2:]:
            both = torch.cat([lq_resize, padded])
            query_feat, location = self.query_encoder.features(both).split(batch)
        else:
            query_feat = self.query_encoder.features(lq_resize)
            location = self.query_encoder.features(padded) if self.local_fusion is not None else None
        query_reps = self.query_encoder.represent(query_feat, self.views)

        with torch.no_grad():
            key_reps = self._key_representations(keys, negatives, batch)
        logits = {view: contrastive_logits(query_reps[view], *key_reps[view], temperature=self.temperature)
                  for view in self.views}
        if 'degradation' in logits and 'detail' in logits:
            logits[JOINT_VIEW] = merge_logits(logits['degradation'], logits['detail'])

        restored = self.restore(padded, self._prompts(query_reps), self._fusion(location))[..., :h, :w]
        return restored, logits
