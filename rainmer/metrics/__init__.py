"""Metrics registered in BasicSR's METRIC_REGISTRY: the Rainmer paper's evaluation protocol (docs/metrics.md)."""
from rainmer.metrics.paper_protocol import calculate_psnr_rainmer, calculate_ssim_rainmer

__all__ = ['calculate_psnr_rainmer', 'calculate_ssim_rainmer']
