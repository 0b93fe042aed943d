"""Make BasicSR 1.4.2 work on today's torch/torchvision/numpy, without touching site-packages.

Every fix is applied once, when ``rainmer`` is imported, and leaves the toolbox's behaviour
unchanged where it already worked (see docs/compatibility.md). Before patching, every BasicSR object
that is patched or relied on (:data:`rainmer.compat.targets.TARGETS`) must exist: a missing one fails
with one line naming it and the supported BasicSR version (1.4.2); an untested version warns once.

- ``torchvision.transforms.functional_tensor`` (removed from torchvision) is provided;
- a torch/torchvision build mismatch fails with a message that says what to reinstall;
- an unknown ``type:`` in a config names the registered entries and the closest match;
- distributed init picks ``gloo`` without CUDA (``nccl`` otherwise; ``dist_params.backend`` wins)
  and DDP wraps CPU models;
- resume states load on CPU under ``torch.load(weights_only=True)``;
- networks and training states are written atomically;
- one LMDB can back several datasets (py-lmdb refuses a second open in a process);
- optimisers by any ``torch.optim`` name and schedulers from :data:`SCHEDULER_REGISTRY`.
"""
from rainmer.compat.targets import check_toolbox
from rainmer.compat.torchvision_shim import check_torchvision, install_functional_tensor_shim

_applied = False


def apply_toolbox_compat() -> None:
    """Apply every compatibility fix (idempotent)."""
    global _applied
    if _applied:
        return
    check_torchvision()
    install_functional_tensor_shim()  # BasicSR cannot be imported without it
    check_toolbox()

    from rainmer.compat import checkpoint, distributed, lmdb_backend, model, registry

    registry.patch_registry_errors()
    distributed.patch_distributed_init()
    model.patch_base_model()
    checkpoint.patch_checkpoint_io()
    lmdb_backend.patch_lmdb_backend()
    _applied = True
