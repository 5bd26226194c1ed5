"""Notices: log lines about slow one-time work the user is waiting on (a model conversion).

They are ``logging`` INFO records marked with ``extra={NOTICE: True}``. The library never
prints; the CLI shows notices even without ``--verbose``, and other INFO lines only with it.
"""

from __future__ import annotations

import logging
from typing import Any

NOTICE = "idealagent_notice"  # the LogRecord attribute that marks a notice


def notice(logger: logging.Logger, message: str, *args: Any) -> None:
    """Log ``message`` at INFO as a notice, one the CLI shows whatever its verbosity."""
    logger.info(message, *args, extra={NOTICE: True})


def is_notice(record: logging.LogRecord) -> bool:
    """Whether ``record`` was logged through ``notice``."""
    return bool(getattr(record, NOTICE, False))
