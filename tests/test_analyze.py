"""``rainmer analyze``: relationship scores, spherical UMAP and the files, on a tiny Rainmer trained on a bright and
a dark domain, plus another encoder through an adapter."""
import copy
import json
import os.path as osp
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml
from data_fixtures import clean_image, rainy_image, write
from rainmer_fixtures import TINY_RAINMER, tiny_rainmer_options
from toolbox_fixtures import REPO_ROOT, run_command, write_yaml

from rainmer.analysis import read_embeddings, read_relationship_csv, relationship_matrix, sample_indices
from rainmer.analysis.sphere import project_to_sphere, spherical_to_lonlat
from rainmer.archs.rainmer_arch import Rainmer
from rainmer.tools import analyze

DOMAINS = {'bright': (0.35, 150), 'dark': (0.2, 0)}  # clean image * scale + offset (uint8)
IMAGES_PER_DOMAIN = 8
SAMPLES = 6


def _make_domain(root: str, scale: float, offset: int, seed: int) -> str:
    for i in range(IMAGES_PER_DOMAIN):
        clean = np.clip(clean_image(seed + i, 32, 40) * scale + offset, 0, 255).astype(np.uint8)
        write(osp.join(root, 'target', f'{i:03d}.png'), clean)
        write(osp.join(root, 'input', f'{i:03d}.png'), rainy_image(clean, seed + i))
    return root


def _direct_scores(groups: list[np.ndarray]) -> np.ndarray:
    """Relationship scores by brute force: every pair's cosine, self-pairs left out on the diagonal."""
    scores = np.zeros((len(groups), len(groups)))
    for i, a in enumerate(groups):
        for j, b in enumerate(groups):
            cosines = [float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))
                       for p, u in enumerate(a.astype(np.float64)) for q, v in enumerate(b.astype(np.float64))
                       if i != j or p != q]
            scores[i, j] = np.mean(cosines)
    return scores


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A tiny Rainmer trained a few iterations through ``basicsr train`` on the two domains."""
    root = tmp_path_factory.mktemp('analyze')
    roots = {name: _make_domain(str(root / name), scale, offset, seed=10 * index)
             for index, (name, (scale, offset)) in enumerate(DOMAINS.items())}
    opt = tiny_rainmer_options('tiny_two_domains', {'syn': '', 'real': ''}, total_iter=6, save_freq=6)
    sources = [dict(name=name, type='rain13k', root=path, io_backend=dict(type='disk')) for name, path in roots.items()]
    opt['datasets']['train']['sources'] = sources
    opt['datasets']['val']['sources'] = copy.deepcopy(sources)
    result = run_command(['basicsr', 'train', '-opt', write_yaml(str(root / 'train.yml'), opt)], cwd=str(root))
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    checkpoint = root / 'experiments' / 'tiny_two_domains' / 'models' / 'net_g_latest.pth'
    analysis_opt = dict(
        name='tiny_analysis', num_gpu=0, network_g=dict(TINY_RAINMER),
        path=dict(pretrain_network_g=str(checkpoint), param_key_g='params', strict_load_g=True),
        analysis=dict(num_samples=SAMPLES, seed=0, batch_size=4, umap=dict(n_neighbors=4)),
        datasets={name: dict(type='PairedRainTestDataset', layout='rain13k', root=path, io_backend=dict(type='disk'))
                  for name, path in roots.items()})
    return root, write_yaml(str(root / 'analysis.yml'), analysis_opt), checkpoint


def test_relationship_matrix_is_the_mean_pairwise_cosine():
    rng = np.random.default_rng(0)
    groups = [rng.normal(size=(5, 7)), rng.normal(size=(3, 7)) + 2, rng.normal(size=(4, 7)) * 10]
    groups[1][0] = 0  # a zero vector: cosine 0 with everything
    matrix = relationship_matrix(groups)
    direct = _direct_scores([g + 0 for g in groups[:1]] + [groups[1][1:]] + groups[2:])
    np.testing.assert_allclose(matrix[np.ix_([0, 2], [0, 2])], direct[np.ix_([0, 2], [0, 2])], atol=1e-12)
    np.testing.assert_allclose(matrix, matrix.T)
    assert matrix[1, 1] == pytest.approx(direct[1, 1] * (2 * 1) / (3 * 2))  # the zero row's pairs count as 0
    assert np.isnan(relationship_matrix([np.ones((1, 3)), np.ones((2, 3))])[0, 0])  # one image: no distinct pair
    assert relationship_matrix([np.ones((2, 3)), -np.ones((2, 3))])[0, 1] == pytest.approx(-1)


def test_spherical_coordinates_and_sampling():
    rng = np.random.default_rng(1)
    inside = np.stack([rng.uniform(0.05, 3.09, 50), rng.uniform(-3.1, 3.1, 50)], axis=1)  # (polar angle, azimuth)
    expected = np.stack([np.degrees(inside[:, 1]), 90 - np.degrees(inside[:, 0])], axis=1)
    np.testing.assert_allclose(spherical_to_lonlat(inside), expected, atol=1e-9)
    wandered = spherical_to_lonlat(rng.normal(scale=50, size=(200, 2)))
    assert np.all(np.abs(wandered[:, 0]) <= 180) and np.all(np.abs(wandered[:, 1]) <= 90)
    # the same point however many turns away
    turned = spherical_to_lonlat(np.array([[0.3 + 4 * np.pi, 1.0 - 6 * np.pi]]))
    np.testing.assert_allclose(turned, [[np.degrees(1.0), 90 - np.degrees(0.3)]])

    first = sample_indices(100, 10, seed=0, position=1)
    assert first == sample_indices(100, 10, seed=0, position=1) and len(set(first)) == 10 and first == sorted(first)
    assert first != sample_indices(100, 10, seed=1, position=1) != sample_indices(100, 10, seed=0, position=0)
    assert sample_indices(5, 10, seed=0, position=0) == [0, 1, 2, 3, 4] == sample_indices(5, None, 0, 0)


def test_lonlat_follows_the_geometry_umap_optimises():
    """Great-circle angles between the plotted points are the distances UMAP's spherical gradient uses."""
    from umap.distances import haversine_grad

    rng = np.random.default_rng(2)
    coords = rng.uniform(-7, 7, size=(30, 2))
    lonlat = np.radians(spherical_to_lonlat(coords))
    xyz = np.stack([np.cos(lonlat[:, 1]) * np.cos(lonlat[:, 0]), np.cos(lonlat[:, 1]) * np.sin(lonlat[:, 0]),
                    np.sin(lonlat[:, 1])], axis=1)
    angles = np.arccos(np.clip(xyz @ xyz.T, -1, 1))
    expected = [[haversine_grad(a, b)[0] for b in coords] for a in coords]
    np.testing.assert_allclose(angles, expected, atol=1e-5)


def test_spherical_umap_keeps_clusters_together():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    features = np.concatenate([c + 0.3 * rng.normal(size=(25, 16)) for c in centres])
    labels = np.repeat(np.arange(3), 25)
    lonlat = np.radians(project_to_sphere(features, seed=0, options={'n_neighbors': 8}))
    assert lonlat.shape == (75, 2)
    xyz = np.stack([np.cos(lonlat[:, 1]) * np.cos(lonlat[:, 0]), np.cos(lonlat[:, 1]) * np.sin(lonlat[:, 0]),
                    np.sin(lonlat[:, 1])], axis=1)
    angles = np.arccos(np.clip(xyz @ xyz.T, -1, 1))
    same = labels[:, None] == labels[None, :]
    assert angles[same].mean() < 0.6 * angles[~same].mean()


def test_analyze_writes_reloadable_files_whose_scores_separate_the_dark_domain(trained, capsys):
    root, yml, checkpoint = trained
    out = root / 'out'
    assert analyze.main(['-opt', yml, '--out', str(out)]) == 0
    assert 'Relationship scores, chromatic space' in capsys.readouterr().out

    embeddings = read_embeddings(str(out / 'embeddings.npz'))
    assert embeddings.datasets == ['bright', 'dark'] and embeddings.counts() == [SAMPLES, SAMPLES]
    assert list(embeddings.spaces) == ['chromatic', 'degradation']  # the vectors of Rainmer.encode
    assert all(features.shape == (2 * SAMPLES, 16) for features in embeddings.spaces.values())

    # the stored rows are the trained query encoder's representations of the named images
    network = Rainmer(**{k: v for k, v in TINY_RAINMER.items() if k != 'type'})
    network.load_state_dict(torch.load(checkpoint, weights_only=True)['params'])
    network.eval()
    for row in (0, 2 * SAMPLES - 1):
        image = cv2.imread(embeddings.paths[row])[:, :, ::-1].astype(np.float32) / 255
        with torch.no_grad():
            reps = network.encode(torch.from_numpy(image.copy()).permute(2, 0, 1)[None])
        for space in ('chromatic', 'degradation'):
            np.testing.assert_allclose(embeddings.spaces[space][row], reps[space][0].numpy(), rtol=1e-4, atol=1e-5)

    saved = json.loads((out / 'relationship.json').read_text())
    assert saved['datasets'] == ['bright', 'dark'] and saved['counts'] == [SAMPLES, SAMPLES]
    for space in ('chromatic', 'degradation'):
        names, matrix = read_relationship_csv(str(out / f'{space}_relationship.csv'))
        assert names == ['bright', 'dark']
        np.testing.assert_allclose(matrix, matrix.T)
        assert np.all(matrix >= -1) and np.all(matrix <= 1)
        np.testing.assert_allclose(matrix, _direct_scores(embeddings.groups(space)), atol=1e-5)
        np.testing.assert_allclose(saved['spaces'][space], matrix, atol=1e-5)
        for kind in ('relationship', 'umap'):
            png = cv2.imread(str(out / f'{space}_{kind}.png'))
            assert png is not None and min(png.shape[:2]) > 200 and png.std() > 0
        lines = (out / f'{space}_umap.csv').read_text().splitlines()
        assert lines[0] == 'dataset,path,longitude,latitude' and len(lines) == 1 + 2 * SAMPLES
        lonlat = np.array([[float(v) for v in line.split(',')[-2:]] for line in lines[1:]])
        assert np.all(np.abs(lonlat[:, 0]) <= 180) and np.all(np.abs(lonlat[:, 1]) <= 90)
        assert np.ptp(lonlat, axis=0).min() > 0

    _, chromatic = read_relationship_csv(str(out / 'chromatic_relationship.csv'))
    assert chromatic[0, 1] < min(chromatic[0, 0], chromatic[1, 1])


def test_sampling_is_seeded_umap_optional_and_the_network_can_come_from_the_training_options(trained, tmp_path,
                                                                                                 capsys):
    root, yml, checkpoint = trained
    datasets_only = {key: value for key, value in yaml.safe_load(open(yml)).items() if key not in ('network_g', 'path')}
    datasets_yml = write_yaml(str(tmp_path / 'datasets.yml'), datasets_only)
    runs = {'a': ['-opt', yml, '--seed', '3'],
            'b': ['-opt', datasets_yml, '--network-opt', str(root / 'train.yml'), '--checkpoint', str(checkpoint),
                  '--seed', '3'],
            'c': ['-opt', yml, '--seed', '4']}
    embeddings = {}
    for name, args in runs.items():
        assert analyze.main([*args, '--out', str(tmp_path / name), '--no-umap', '--quiet', '--num-samples', '3']) == 0
        embeddings[name] = read_embeddings(str(tmp_path / name / 'embeddings.npz'))
        assert not (tmp_path / name / 'chromatic_umap.png').exists()
        assert (tmp_path / name / 'degradation_relationship.png').exists()
    assert len(embeddings['a'].paths) == 6 and embeddings['a'].paths == embeddings['b'].paths != embeddings['c'].paths
    np.testing.assert_array_equal(embeddings['a'].spaces['chromatic'], embeddings['b'].spaces['chromatic'])
    assert 'bright: 3 of 8 images' in capsys.readouterr().out


@pytest.mark.parametrize('name', ['rainmer_mixed_analysis.yml', 'rainmer_allweather_analysis.yml'])
def test_example_option_files_are_complete(name):
    from basicsr.archs import build_network

    from rainmer.analysis.settings import analysis_settings
    from rainmer.options import load_yaml

    opt = load_yaml(osp.join(REPO_ROOT, 'options', 'analyze', name))
    settings = analysis_settings(opt['analysis'])
    assert settings.num_samples == 500 and settings.spaces == ['chromatic', 'degradation']
    network = build_network(dict(opt['network_g']))
    assert callable(network.encode) and network.prompt_size == 128
    assert opt['path']['pretrain_network_g'] and all('type' in entry for entry in opt['datasets'].values())


def colour_statistics(network: torch.nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """An adapter for a network without ``encode``: its patch embedding, averaged, and a spatial map."""
    features = network.patch_embed(images)
    return {'embedding': features.mean(dim=(2, 3)), 'map': torch.nn.functional.avg_pool2d(features, 8)}


def test_another_encoder_through_an_adapter_and_clear_errors(trained, tmp_path, capsys, monkeypatch):
    root, yml, _ = trained
    drsformer = dict(type='DRSformer', dim=8, num_blocks=[1, 1, 1, 1], heads=[1, 1, 1, 1])
    weights = tmp_path / 'drsformer.pth'
    from basicsr.archs import build_network
    torch.save({'params': build_network(dict(drsformer)).state_dict()}, weights)
    base = dict(yaml.safe_load(open(yml)), network_g=drsformer, path=dict(pretrain_network_g=str(weights)))

    base['analysis'] = dict(base['analysis'], encode='test_analyze:colour_statistics', spaces=['embedding', 'map'])
    code = analyze.main(['-opt', write_yaml(str(tmp_path / 'adapter.yml'), base), '--out', str(tmp_path / 'adapter'),
                         '--no-umap', '--quiet'])
    assert code == 0
    embeddings = read_embeddings(str(tmp_path / 'adapter' / 'embeddings.npz'))
    assert embeddings.spaces['embedding'].shape == (2 * SAMPLES, 8)
    assert embeddings.spaces['map'].shape == (2 * SAMPLES, 8 * 4 * 5)  # 32x40 inputs, not resized
    capsys.readouterr()

    def fails(opt: dict, *extra: str) -> str:
        assert analyze.main(['-opt', write_yaml(str(tmp_path / 'bad.yml'), opt), '--out', str(tmp_path / 'bad'),
                             '--quiet', *extra]) == 2
        message = capsys.readouterr().err.strip()
        assert message.startswith('error: ') and '\n' not in message
        return message

    no_adapter = dict(base, analysis=dict(num_samples=2))
    assert 'DRSformer has no encode(x) -> dict method' in fails(no_adapter, '--no-umap')
    assert 'no file at' in fails(dict(base, path=dict(pretrain_network_g=str(tmp_path / 'missing.pth'))))
    assert 'unknown option(s) samples' in fails(dict(base, analysis=dict(samples=3)))
    assert 'gives no chromatic' in fails(dict(base, analysis=dict(base['analysis'], spaces=['chromatic'])),
                                         '--no-umap')
    monkeypatch.setitem(sys.modules, 'umap', None)  # umap-learn not installed
    assert "pip install -e '.[analysis]'" in fails(base)
    assert analyze.main(['-opt', str(tmp_path / 'nothing.yml')]) == 2
    assert 'no option file' in capsys.readouterr().err
