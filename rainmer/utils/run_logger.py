"""The toolbox's logger, set up afresh for each pipeline run (so every run in one process writes its own log file)."""
import logging

from basicsr.utils import get_root_logger


def reset_toolbox_logger() -> None:
    """Forget basicsr's logger set-up: ``get_root_logger`` configures it (and its file) only once per process."""
    from basicsr.utils import logger as toolbox_logger

    logger = logging.getLogger('basicsr')
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    toolbox_logger.initialized_logger.pop('basicsr', None)


def run_logger(log_file: str) -> logging.Logger:
    """basicsr's logger writing to the console and to ``log_file`` (a new file for every run in this process)."""
    reset_toolbox_logger()
    return get_root_logger(logger_name='basicsr', log_level=logging.INFO, log_file=log_file)
