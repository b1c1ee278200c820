"""deploy/ (compose, Dockerfile, systemd, nginx) says only what roomsync accepts.

Every ``roomsync`` command line in them is parsed by the real CLI parser and turned into
settings by the same function ``roomsync serve`` uses (with the environment the file
gives the process), so a renamed flag, a misspelt ``ROOMSYNC_*`` variable or a setting
combination the loader refuses (a Redis bus on SQLite, say) fails here, not at 3 a.m.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from roomsync.cli.main import build_parser
from roomsync.cli.serve_cmd import serve_settings
from roomsync.config import ENV_PREFIX, SECTIONS, Settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"

#: Every environment variable the settings loader reads.
KNOWN_VARS = {
    f"{ENV_PREFIX}{section.upper()}_{name.upper()}"
    for section, struct in SECTIONS.items()
    for name in struct.__struct_fields__
}


def env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments, blank lines skipped)."""
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            out[key] = value
    return out


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose interpolation: ``${X}``, ``${X:-default}``, ``${X:?error}``, ``$$``."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op == ":?":
            raise AssertionError(f"{name} is not set: {arg}")
        return arg or ""

    value = re.sub(r"\$\{([A-Z0-9_]+)(?:(:-|:\?)([^}]*))?\}", one, value)
    return value.replace("$$", "$")


def check_serve(argv: list[str], env: dict[str, str]) -> Settings:
    """The settings ``roomsync <argv>`` would serve with under ``env``; fails on an
    unknown flag, an unknown ``ROOMSYNC_*`` variable or a configuration the loader
    refuses."""
    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in KNOWN_VARS)
    assert not unknown, f"not settings: {unknown}"
    assert argv[:1] == ["serve"], argv
    try:
        args: argparse.Namespace = build_parser().parse_args(argv)
        return serve_settings(args, env=env)
    except SystemExit as exc:
        raise AssertionError(f"roomsync {' '.join(argv)}: refused (exit {exc.code})") from None


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    return data


def roomsync_services() -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose()["services"].items()
        if svc.get("image") == "roomsync:local"
    }


def compose_argv(svc: dict[str, Any], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    dotenv = env_file(DEPLOY / ".env.example")
    argv = [interpolate(str(a), dotenv) for a in svc["command"]]
    environment = {k: interpolate(str(v), dotenv) for k, v in svc["environment"].items()}
    return argv, {**environment, **env}


def test_the_compose_nodes_run_commands_the_cli_accepts() -> None:
    services = roomsync_services()
    assert sorted(services) == ["node-1", "node-2"]
    ids = set()
    for svc in services.values():
        argv, env = compose_argv(svc, {})
        settings = check_serve(argv, env)
        assert settings.storage.backend == "postgres"
        assert settings.bus.backend == "redis"
        assert settings.blobs.backend == "s3"
        assert settings.server.port == 8080 and settings.server.host == "0.0.0.0"
        ids.add(settings.server.node_id)
    assert ids == {"node-1", "node-2"}, "every node has its own id"


def test_the_proxy_upgrades_ws_and_reaches_every_node() -> None:
    conf = (DEPLOY / "nginx" / "roomsync.conf").read_text(encoding="utf-8")
    upstream = set(re.findall(r"^\s*server\s+([\w.-]+):(\d+)", conf, re.MULTILINE))
    nodes = {(name, "8080") for name in roomsync_services()}
    assert upstream == nodes
    ws = re.search(r"location /ws/ \{(.*?)\}", conf, re.DOTALL)
    assert ws is not None
    assert "proxy_set_header Upgrade $http_upgrade" in ws.group(1)
    assert "proxy_set_header Connection $connection_upgrade" in ws.group(1)
    mount = compose()["services"]["proxy"]["volumes"][0].split(":")[0]
    assert (DEPLOY / mount).resolve() == (DEPLOY / "nginx" / "roomsync.conf").resolve()


def test_the_image_serves_the_embedded_defaults() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    entry = yaml.safe_load(re.search(r"^ENTRYPOINT (.*)$", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
    cmd = yaml.safe_load(re.search(r"^CMD (.*)$", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert entry == ["roomsync"]
    settings = check_serve(cmd, {})
    assert settings.storage.backend == "sqlite" and settings.server.port == 8080


def test_the_systemd_unit_runs_a_command_the_cli_accepts() -> None:
    unit = (DEPLOY / "systemd" / "roomsync.service").read_text(encoding="utf-8")
    line = re.search(r"^ExecStart=(.*)$", unit, re.MULTILINE)
    assert line is not None
    exe, *argv = shlex.split(line.group(1))
    assert exe.endswith("/bin/roomsync")
    env = env_file(DEPLOY / "systemd" / "roomsync.env")
    settings = check_serve(argv, env)
    assert settings.bus.backend == "redis" and settings.storage.backend == "postgres"
    assert "EnvironmentFile=/etc/roomsync/roomsync.env" in unit


def test_every_variable_of_the_env_examples_is_a_setting_or_a_compose_variable() -> None:
    dotenv = env_file(DEPLOY / ".env.example")
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    assert set(dotenv) == used, "deploy/.env.example lists exactly what compose.yaml reads"
    for key in dotenv:
        assert key in KNOWN_VARS or not key.startswith(ENV_PREFIX), key


def without(argv: list[str], flag: str) -> list[str]:
    i = argv.index(flag)
    return argv[:i] + argv[i + 2 :]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda argv, env: ([*argv, "--nodes", "2"], env), "refused"),
        (lambda argv, env: (argv, {**env, "ROOMSYNC_BUS_URL": "redis://x"}), "not settings"),
        (lambda argv, env: (without(argv, "--store"), env), "refused"),
        (
            lambda argv, env: (argv, {**env, "ROOMSYNC_BLOBS_BACKEND": "filesystem"}),
            "refused",
        ),
    ],
)
def test_the_check_fails_on_what_roomsync_would_refuse(change: Any, why: str) -> None:
    """A flag the CLI does not have, a variable no setting reads, a Redis bus without a
    PostgreSQL store, and unshared filesystem blobs on several nodes all fail the check."""
    argv, env = compose_argv(roomsync_services()["node-1"], {})
    argv, env = change(argv, env)
    with pytest.raises(AssertionError, match=why):
        check_serve(argv, env)
