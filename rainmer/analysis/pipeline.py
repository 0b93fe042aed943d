"""The whole analysis: encoder + datasets from options -> embeddings, relationship matrices, spherical UMAP."""
import copy
import os
import os.path as osp
from collections.abc import Callable, Mapping

import rainmer.analysis.outputs as outputs
from rainmer.analysis.encoders import load_encoder
from rainmer.analysis.errors import AnalysisError, require
from rainmer.analysis.extract import Embeddings, extract_embeddings
from rainmer.analysis.relationship import relationship_matrix
from rainmer.analysis.settings import analysis_settings


def build_datasets(datasets_opt: Mapping) -> dict:
    """One dataset per ``datasets`` entry, named by its ``name`` (else its key), giving whole images."""
    from basicsr.data import build_dataset

    if not isinstance(datasets_opt, Mapping) or not datasets_opt:
        raise AnalysisError('datasets: expected a mapping of dataset entries (as in a test option file)')
    datasets = {}
    for key, entry in datasets_opt.items():
        if not isinstance(entry, Mapping) or 'type' not in entry:
            raise AnalysisError(f'datasets.{key}: expected a mapping with a type')
        entry = copy.deepcopy(dict(entry))
        entry['phase'] = 'test'  # whole images, no crops or flips
        entry.setdefault('name', str(key))
        if entry['name'] in datasets:
            raise AnalysisError(f"datasets.{key}: the name '{entry['name']}' is used twice")
        datasets[entry['name']] = build_dataset(entry)
    return datasets


def analyse_embeddings(embeddings: Embeddings, out_dir: str, *, umap: bool = True, seed: int = 0,
                       umap_options: Mapping | None = None, log: Callable[[str], None] = print) -> dict[str, str]:
    """Write every file of the analysis for already extracted embeddings; returns label -> path."""
    from rainmer.analysis.plots import plot_relationship_heatmap, plot_sphere_scatter
    from rainmer.analysis.sphere import project_to_sphere

    os.makedirs(out_dir, exist_ok=True)
    written = {'embeddings': osp.join(out_dir, outputs.EMBEDDINGS_FILE)}
    outputs.write_embeddings(written['embeddings'], embeddings)
    matrices = {}
    for space in embeddings.spaces:
        matrices[space] = matrix = relationship_matrix(embeddings.groups(space))
        written[f'{space}_relationship_csv'] = outputs.relationship_csv(out_dir, space)
        outputs.write_relationship_csv(written[f'{space}_relationship_csv'], matrix, embeddings.datasets)
        written[f'{space}_relationship_png'] = osp.join(out_dir, f'{space}_relationship.png')
        plot_relationship_heatmap(written[f'{space}_relationship_png'], matrix, embeddings.datasets,
                                  f'Relationship scores\n{outputs.space_title(space)} space')
        table = outputs.format_matrix(matrix, embeddings.datasets)
        log(f'Relationship scores, {outputs.space_title(space)} space:\n{table}')
    written['relationship_json'] = osp.join(out_dir, outputs.RELATIONSHIP_JSON)
    outputs.write_relationship_json(written['relationship_json'], matrices, embeddings)
    if umap:
        for space, features in embeddings.spaces.items():
            log(f'UMAP onto the sphere: {outputs.space_title(space)} space ({features.shape[0]} x {features.shape[1]})')
            lonlat = project_to_sphere(features, seed=seed, options=umap_options)
            written[f'{space}_umap_csv'] = osp.join(out_dir, f'{space}_umap.csv')
            outputs.write_projection_csv(written[f'{space}_umap_csv'], lonlat, embeddings)
            written[f'{space}_umap_png'] = osp.join(out_dir, f'{space}_umap.png')
            plot_sphere_scatter(written[f'{space}_umap_png'], lonlat, embeddings.labels, embeddings.datasets,
                                f'{outputs.space_title(space)} space: UMAP on the sphere')
    return written


def run_analysis(opt: Mapping, out_dir: str, *, device: str = 'cpu', umap: bool = True, progress: bool = True,
                 log: Callable[[str], None] = print) -> dict[str, str]:
    """Analyse the encoder of ``opt['network_g']`` (weights ``opt['path']['pretrain_network_g']``) on
    ``opt['datasets']`` with the ``opt['analysis']`` settings; returns the written files."""
    settings = analysis_settings(opt.get('analysis'))
    require('matplotlib', 'matplotlib', 'The PNG figures')  # fail before the long extraction
    if umap:
        require('umap', 'umap-learn', 'The UMAP projection (skip it with --no-umap)')
    if 'network_g' not in opt:
        raise AnalysisError('network_g: missing; give the arch options in the file or with --network-opt')
    path_opt = opt.get('path') or {}
    checkpoint = path_opt.get('pretrain_network_g')
    if not checkpoint:
        raise AnalysisError('path.pretrain_network_g: missing; give the trained weights or --checkpoint')
    encoder = load_encoder(opt['network_g'], osp.expanduser(str(checkpoint)),
                           param_key=path_opt.get('param_key_g', 'params'),
                           strict=bool(path_opt.get('strict_load_g', True)), adapter=settings.encode, device=device,
                           resize=settings.resize)
    datasets = build_datasets(opt.get('datasets'))
    embeddings = extract_embeddings(encoder, datasets, num_samples=settings.num_samples, seed=settings.seed,
                                    spaces=settings.spaces, image_key=settings.image_key,
                                    batch_size=settings.batch_size, num_workers=settings.num_worker,
                                    progress=progress, log=log)
    return analyse_embeddings(embeddings, out_dir, umap=umap, seed=settings.seed, umap_options=settings.umap,
                              log=log)
