"""User errors: one leaf module, one base class, one line on stderr and exit status 2."""
import subprocess
import sys

import pytest
from toolbox_fixtures import REPO_ROOT

from rainmer.analysis.errors import AnalysisError, MissingExtraError
from rainmer.compat.registry import UnknownNameError
from rainmer.compat.targets import ToolboxVersionError
from rainmer.compat.torchvision_shim import TorchvisionMismatchError
from rainmer.data.errors import DataError
from rainmer.errors import OptionError, UserError, run_guarded
from rainmer.options import OptionError as OptionsOptionError

USER_ERROR_CLASSES = {OptionError: ValueError, UnknownNameError: KeyError, TorchvisionMismatchError: ImportError,
                      ToolboxVersionError: ImportError, DataError: ValueError, AnalysisError: ValueError,
                      MissingExtraError: AnalysisError}


def test_errors_module_imports_no_rainmer_module():
    # Executed from its file: ``import rainmer.errors`` would run the package's __init__ (the compat layer) first.
    code = ('import importlib.util, sys\n'
            "spec = importlib.util.spec_from_file_location('standalone_errors', 'rainmer/errors.py')\n"
            'module = importlib.util.module_from_spec(spec)\n'
            'spec.loader.exec_module(module)\n'
            "print(sorted(name for name in sys.modules if name.split('.')[0] == 'rainmer'))\n"
            "print(module.run_guarded(lambda args: args, 3))")
    result = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.split('\n')[:2] == ['[]', '3']


@pytest.mark.parametrize('error_class', USER_ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_user_error_class_is_a_user_error_and_keeps_its_base(error_class):
    assert issubclass(error_class, UserError)
    assert issubclass(error_class, USER_ERROR_CLASSES[error_class])  # callers catching the old base still work


def test_option_error_is_still_importable_from_options():
    assert OptionsOptionError is OptionError


@pytest.mark.parametrize('error', [
    OptionError('x.yml: train.total_iterz: unknown option'), DataError('a.png: not an image'),
    UnknownNameError("Unknown arch type 'SwinIr'."), MissingExtraError('umap-learn', 'UMAP'),
    FileNotFoundError('path.resume_state: no training state at x.state'),
    UserError('first line\n  second line'),
], ids=lambda e: type(e).__name__)
def test_run_guarded_prints_one_line_and_returns_2(error, capsys):
    def pipeline(args):
        raise error

    assert run_guarded(pipeline, None) == 2
    captured = capsys.readouterr()
    assert captured.out == ''
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ')
    assert lines[0] == 'error: ' + ' '.join(part.strip() for part in str(error).splitlines())


def test_a_user_error_in_a_loader_worker_is_still_one_line(capsys):
    """num_worker_per_gpu > 0: PyTorch re-raises the worker's error with its traceback inside the message."""
    from torch.utils.data import DataLoader, Dataset

    class SmallImages(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            raise DataError(f'x/{index}.png: 24x20 is smaller than the 32x32 crop')

    def pipeline(args):
        for _ in DataLoader(SmallImages(), num_workers=1):
            pass

    assert run_guarded(pipeline, None) == 2
    assert capsys.readouterr().err == 'error: x/0.png: 24x20 is smaller than the 32x32 crop\n'


def test_rainmer_traceback_lets_a_user_error_propagate_for_bug_reports(monkeypatch):
    def pipeline(args):
        raise DataError('a.png: not an image')

    monkeypatch.setenv('RAINMER_TRACEBACK', '1')
    with pytest.raises(DataError, match='a.png'):
        run_guarded(pipeline, None)
    monkeypatch.setenv('RAINMER_TRACEBACK', '0')
    assert run_guarded(pipeline, None) == 2


def test_run_guarded_passes_results_and_other_errors_through():
    assert run_guarded(lambda args: args, 5) == 5
    assert run_guarded(lambda args: {'set': {'psnr': 30.0}}, None, returns_code=False) == 0
    with pytest.raises(RuntimeError):
        run_guarded(lambda args: (_ for _ in ()).throw(RuntimeError('a bug')), None)


@pytest.mark.parametrize('module', ['rainmer.train', 'rainmer.test'])
def test_pipeline_mains_are_guarded_without_importing_the_cli(module, tmp_path):
    code = (f'import sys, {module} as m\n'
            "code = m.main(['-opt', 'nope.yml'])\n"
            "print(code, 'rainmer.cli' in sys.modules)")
    result = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True, text=True)
    assert result.stdout.split() == ['2', 'False'], result.stderr[-2000:]
    assert result.stderr.splitlines() == ['error: -opt: no option file at nope.yml']


@pytest.mark.parametrize('command', ['basicsr', 'rainmer'])
def test_a_stack_that_cannot_work_is_one_line_from_the_console_scripts(command, tmp_path):
    """The check runs while `import rainmer` runs, before any command's guard: a torchvision of another build."""
    import os

    fake = tmp_path / 'torchvision'
    fake.mkdir()
    (fake / '__init__.py').write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    executable = os.path.join(os.path.dirname(sys.executable), command)
    result = subprocess.run([executable, '--help'], capture_output=True, text=True, cwd=str(tmp_path),
                            env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert result.returncode == 1 and result.stdout == ''
    assert result.stderr.startswith('error: torch ') and result.stderr.count('\n') == 1, result.stderr
    assert 'different builds' in result.stderr
