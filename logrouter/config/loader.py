"""Reading a config: the file's bytes, TOML, then the validator (``parse_config`` /
``load_config``)."""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from logrouter.config.model import TOP_KEYS, ConfigError, ConfigIssue, RoutingConfig
from logrouter.config.positions import toml_issue
from logrouter.config.validate import Validator
from logrouter.connection import URL_ENV


def parse_config(
    text: str,
    path: Path | str = "<string>",
    *,
    env: Mapping[str, str] | None = None,
) -> RoutingConfig:
    """Validate the TOML ``text`` read from ``path``; raises ``ConfigError`` with every issue.

    Relative paths in sinks resolve against the directory of ``path`` (the current
    directory for ``"<string>"``). ``$LOGROUTER_URL`` in ``env`` (default
    ``os.environ``) overrides ``[broker].url``.
    """
    file = str(path)
    environment = os.environ if env is None else env
    config_dir = os.path.dirname(os.path.abspath(file)) if file != "<string>" else os.getcwd()
    validator = Validator(file, text, config_dir)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([toml_issue(file, exc, validator.index)]) from None
    for key in data:
        if key not in TOP_KEYS:
            validator.issue(
                None,
                key,
                "unknown top-level key (allowed: [broker], [control] and [sinks.NAME] tables)",
                key,
            )
    broker = validator.broker(data, environment)
    control = validator.control(data)
    sinks = validator.sinks(data)
    if validator.issues or broker is None:
        issues = sorted(validator.issues, key=lambda issue: (issue.line is not None, issue.line))
        raise ConfigError(issues)
    return RoutingConfig(
        path=Path(path),
        broker=broker,
        sinks=sinks,
        digest=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        control=control,
    )


def load_config(
    path: Path | str, *, env: Mapping[str, str] | None = None, url: str | None = None
) -> RoutingConfig:
    """Read and validate the config file at ``path`` (see ``parse_config``).

    ``url`` (a command's ``--url``) takes the place of ``$LOGROUTER_URL``.
    """
    if url:
        env = {**(os.environ if env is None else env), URL_ENV: url}
    file = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        issue = ConfigIssue(file, None, None, None, f"cannot read config: {reason}")
        raise ConfigError([issue]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            [
                ConfigIssue(
                    file, line, None, None, f"not UTF-8 text (byte {exc.start}): not a TOML file"
                )
            ]
        ) from None
    return parse_config(text, path, env=env)
