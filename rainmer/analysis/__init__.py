"""Multi-view representation analysis (supplementary C): per-dataset embeddings, dataset relationship
matrices and UMAP on the sphere, for Rainmer or any encoder with ``encode(x) -> dict``. See docs/analysis.md."""
from rainmer.analysis.encoders import RepresentationEncoder, load_encoder, load_weights, resolve_encode
from rainmer.analysis.errors import AnalysisError, MissingExtraError
from rainmer.analysis.extract import Embeddings, extract_embeddings, sample_indices
from rainmer.analysis.outputs import read_embeddings, read_relationship_csv
from rainmer.analysis.pipeline import analyse_embeddings, build_datasets, run_analysis
from rainmer.analysis.relationship import relationship_matrix
from rainmer.analysis.sphere import project_to_sphere, spherical_to_lonlat

__all__ = [
    'AnalysisError', 'Embeddings', 'MissingExtraError', 'RepresentationEncoder', 'analyse_embeddings',
    'build_datasets', 'extract_embeddings', 'load_encoder', 'load_weights', 'project_to_sphere',
    'read_embeddings', 'read_relationship_csv', 'relationship_matrix', 'resolve_encode', 'run_analysis',
    'sample_indices', 'spherical_to_lonlat',
]
