"""The `softswitch` command line: serve, check-config (more subcommands arrive with their issues)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from softswitch import __version__, config, logs
from softswitch.store import SchemaTooNew


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="softswitch",
        description="Self-hosted telephony platform: SIP B2BUA, embedded media engine, REST control API.",
    )
    p.add_argument("--version", action="version", version=f"softswitch {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the softswitch in the foreground",
        description="Run the softswitch in the foreground until SIGINT or SIGTERM (stops within 2 s).",
    )
    serve.add_argument(
        "-c",
        "--config",
        default="configs/softswitch.toml",
        metavar="FILE",
        help="TOML config file (default: %(default)s)",
    )
    serve.add_argument(
        "--log-format",
        choices=["plain", "json"],
        default=None,
        help="log line format: plain key=value text or JSON lines (default: [log] format)",
    )
    serve.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=None,
        help="lowest level logged (default: [log] level)",
    )

    check = sub.add_parser(
        "check-config",
        help="validate a config file and print a summary",
        description="Validate a config file. Prints a summary and exits 0, or prints one "
        "'FILE:LINE: field: problem' line per problem and exits 2.",
    )
    check.add_argument("file", metavar="FILE", help="TOML config file to check")
    return p


def _load_or_report(path: str) -> config.Config | None:
    try:
        return config.load(path)
    except config.ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load_or_report(args.file)
    if cfg is None:
        return 2
    print(f"{args.file}: ok")
    for line in config.summary(cfg):
        print(f"  {line}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = _load_or_report(args.config)
    if cfg is None:
        return 2
    logs.setup(args.log_format or cfg.log.format, args.log_level or cfg.log.level)
    from softswitch import server
    from softswitch.transport.sockets import BindError

    loop_name = server.install_loop_policy()
    logs.event(logging.getLogger("softswitch"), "softswitch.starting", config=args.config, loop=loop_name)
    try:
        asyncio.run(server.run(cfg))
    except BindError as exc:
        print(f"softswitch: {exc}", file=sys.stderr)
        return 1
    except SchemaTooNew as exc:
        print(f"softswitch: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {"serve": cmd_serve, "check-config": cmd_check_config}[args.command]
    return handler(args)
