"""Console scripts: ``basicsr train|test`` (the toolbox's pipelines) and ``rainmer <tool>``."""
import argparse
import importlib
import sys
import textwrap

from rainmer.errors import run_guarded

# ``rainmer <tool> ...`` -> module whose ``main(argv)`` runs it
RAINMER_TOOLS = {
    'data': ('rainmer.data.cli', 'prepare, inspect, balance and synthesise deraining datasets'),
    'convert': ('rainmer.tools.convert_checkpoint', 'convert a checkpoint of the public Rainmer code'),
    'analyze': ('rainmer.tools.analyze', 'multi-view representation analysis: embeddings, UMAP on the sphere, '
                'dataset relationships'),
    'compare': ('rainmer.tools.compare', 'every model on every test set: one table (PSNR/SSIM, params, FLOPs, '
                'latency) and a bar chart'),
    'derain': ('rainmer.tools.derain', 'derain your own photographs with a trained or converted checkpoint'),
    'demo': ('rainmer.demo', 'Rainmer derains photographs: synthetic rain, training, test, report (make demo)'),
    'ablate': ('rainmer.tools.ablate', "the paper's ablation at CPU scale with seeds: variants, DRSformer, SwinIR; "
               'table, chart, grid'),
}


def registered_names() -> dict[str, list[str]]:
    """Registered names per registry, after importing every plugin."""
    from rainmer.plugins import load_plugins

    load_plugins()
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY

    from rainmer.utils.registry import SCHEDULER_REGISTRY

    registries = {'archs': ARCH_REGISTRY, 'models': MODEL_REGISTRY, 'datasets': DATASET_REGISTRY,
                  'losses': LOSS_REGISTRY, 'schedulers': SCHEDULER_REGISTRY}
    return {label: sorted(registry.keys()) for label, registry in registries.items()}


def _registry_epilog() -> str:
    blocks = []
    for label, names in registered_names().items():
        wrapped = textwrap.fill(', '.join(names), width=100, initial_indent='    ', subsequent_indent='    ')
        blocks.append(f'registered {label}:\n{wrapped}')
    return '\n\n'.join(blocks) + ("\n\nOther packages add names through the 'basicsr.plugins' entry-point group "
                                   '(see README).')


def build_basicsr_parser() -> argparse.ArgumentParser:
    """``basicsr`` with ``train`` and ``test`` subcommands taking the toolbox's flags."""
    from rainmer.options import add_toolbox_flags

    parser = argparse.ArgumentParser(
        prog='basicsr', formatter_class=argparse.RawDescriptionHelpFormatter,
        description='Train and test BasicSR models (with the rainmer plugin and every installed plugin).',
        epilog=_registry_epilog())
    sub = parser.add_subparsers(dest='command', required=True, metavar='{train,test}')
    add_toolbox_flags(sub.add_parser('train', help='train from an option YAML (experiments/<name>/ in this folder)'))
    add_toolbox_flags(sub.add_parser('test', help='test from an option YAML (results/<name>/ in this folder)'))
    return parser


def basicsr_main(argv: list[str] | None = None) -> int:
    """Entry point of the ``basicsr`` command."""
    args = build_basicsr_parser().parse_args(argv)
    if args.command == 'train':
        from rainmer.train import train_pipeline

        return run_guarded(train_pipeline, args)
    from rainmer.test import test_pipeline

    return run_guarded(test_pipeline, args, returns_code=False)


def rainmer_main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rainmer`` command: dispatch to a tool's own ``main(argv)``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    tools = '\n'.join(f'  {name:<10} {help_}' for name, (_, help_) in RAINMER_TOOLS.items())
    usage = f'usage: rainmer <tool> [args]\n\ntools:\n{tools}\n\n`rainmer <tool> --help` for a tool\'s options.'
    if not argv or argv[0] in ('-h', '--help'):
        print(usage)
        return 0
    if argv[0] not in RAINMER_TOOLS:
        print(f"error: unknown tool '{argv[0]}'\n\n{usage}", file=sys.stderr)
        return 2
    from rainmer.utils.allocator import tune_malloc

    tune_malloc()
    module = importlib.import_module(RAINMER_TOOLS[argv[0]][0])
    return run_guarded(module.main, argv[1:])  # a tool's user error is one line, whatever the tool


if __name__ == '__main__':
    sys.exit(basicsr_main())
