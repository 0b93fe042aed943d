"""Helpers shared by the benchmark scripts (rainmer.utils.benchmarking)."""
import rainmer  # noqa: F401  (its compat shim must load before basicsr)

# isort: split
import pytest
import torch
import torch.nn.functional as F

from rainmer.utils.benchmarking import proc_status_kib, proxy_training_loss


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
