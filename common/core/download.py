"""Paddle's downloader (``paddle.utils.download``: its URLs, cache and MD5 check), without its log lines.

Paddle logs every attempt at INFO on stderr (``md5check ...``, ``Downloading ... failed with exception ...``, once
per retry), so a failed download would print half a dozen lines before the one ``error:`` line that says what to
do. The progress bar of a download that works is not a log line and stays.
"""
import contextlib
import logging

PADDLE_DOWNLOAD_LOGGER = "paddle.utils.download"


@contextlib.contextmanager
def quiet_paddle_download():
    """Paddle's download logger at WARNING for the duration of the block."""
    logger = logging.getLogger(PADDLE_DOWNLOAD_LOGGER)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
