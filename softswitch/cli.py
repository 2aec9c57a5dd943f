"""The `softswitch` command line: serve, check-config, keys, media dtmf, media amd (more arrive with their issues)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from softswitch import __version__, config, logs
from softswitch.priority import set_nice
from softswitch.store import SchemaTooNew

if TYPE_CHECKING:
    import numpy as np

    from media.amd import AmdParams
    from softswitch.store import Store


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

    media = sub.add_parser("media", help="offline media analysis tools", description="Offline media analysis.")
    media_sub = media.add_subparsers(dest="media_command", required=True, metavar="TOOL")
    dtmf = media_sub.add_parser(
        "dtmf",
        help="detect DTMF digits in WAV files",
        description="Detect DTMF digits in 8 kHz mono PCM16 or G.711 (mu-law/A-law) WAV files. Prints one JSON "
        'line per file: {"file", "digits", "events": [{"digit", "start_ms", "end_ms"}]}. A file that cannot be '
        "read is reported on stderr and the others are still processed (exit code 1).",
    )
    dtmf.add_argument("files", nargs="+", metavar="FILE", help="WAV file(s)")
    amd = media_sub.add_parser(
        "amd",
        help="answering machine detection on WAV files",
        description="Decide whether a person, a voicemail greeting or nobody answered, from a recording of what "
        "the far end sent from the moment it answered (8 kHz mono PCM16 or G.711 WAV), and when the greeting's "
        'beep ended. Prints one JSON line per file: {"file", "result": "human"|"machine"|"unknown", '
        '"decision_ms", "beep_end_ms"}. Unreadable files are reported on stderr (exit code 1). The parameters '
        "are the defaults, a config file's [amd] (-c) and --set, in that order; a bad one exits 2.",
    )
    amd.add_argument("files", nargs="+", metavar="FILE", help="WAV file(s)")
    amd.add_argument("-c", "--config", metavar="CONFIG", help="take the [amd] parameters of this config file")
    amd.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="one [amd] parameter, e.g. greeting_ms=3000 (repeatable)",
    )
    _keys_parser(sub)
    _bans_parser(sub)
    return p


def _seconds(text: str) -> float:
    """A non-negative number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _store_option(what: str) -> argparse.ArgumentParser:
    """The `-c FILE` of the commands working on the store a config names (while `serve` may be running)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        default="configs/softswitch.toml",
        metavar="FILE",
        help=f"TOML config file whose [store] path holds the {what} (default: %(default)s)",
    )
    return common


def _bans_parser(sub: argparse._SubParsersAction) -> None:
    """`softswitch bans ...`: source addresses the SIP edge banned (a running `serve` sees a lift within 2 s)."""
    common = _store_option("bans")
    bans = sub.add_parser(
        "bans",
        help="list and lift bans of SIP source addresses",
        description="Addresses banned for failed authentications ([security] fail_limit within fail_window_s). "
        "A running softswitch re-reads the bans every 2 s.",
    )
    bans_sub = bans.add_subparsers(dest="bans_command", required=True, metavar="ACTION")
    bans_sub.add_parser(
        "list",
        parents=[common],
        help="list the bans in force",
        description="One line per ban: ADDRESS, SINCE, UNTIL (UTC), FAILURES, REASON.",
    )
    lift = bans_sub.add_parser(
        "lift", parents=[common], help="lift a ban", description="Lift the ban of an address (exit 1 if none)."
    )
    lift.add_argument("address", metavar="ADDRESS", help="the banned source address")


def _keys_parser(sub: argparse._SubParsersAction) -> None:
    """`softswitch keys ...`: API keys in the store the config names (what `serve` with it would use)."""
    from api.auth import DEFAULT_GRACE_S, SCOPES

    common = _store_option("keys")
    keys = sub.add_parser(
        "keys",
        help="manage API keys",
        description="Create, list, revoke and rotate the control API's keys. Secrets are stored hashed: the "
        "secret is printed once, by create and rotate.",
    )
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = keys_sub.add_parser(
        "create",
        parents=[common],
        help="make a key and print its secret",
        description="Make a key. Prints 'id: key_...' and 'secret: sk_...'; the secret is not shown again.",
    )
    create.add_argument("--name", required=True, help="what the key is for")
    create.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        required=True,
        choices=SCOPES,
        metavar="SCOPE",
        help=f"a scope the key gets; repeat for more ({', '.join(SCOPES)}; admin implies all)",
    )
    create.add_argument("--test", action="store_true", help="a test-mode key (sk_test_...)")
    keys_sub.add_parser("list", parents=[common], help="list keys", description="List keys, newest first.")
    revoke = keys_sub.add_parser(
        "revoke", parents=[common], help="revoke a key", description="Revoke a key: it stops working at once."
    )
    revoke.add_argument("id", metavar="ID", help="key id (key_...)")
    rotate = keys_sub.add_parser(
        "rotate",
        parents=[common],
        help="give a key a new secret",
        description="Give a key a new secret and print it; the old secret keeps working for the grace period.",
    )
    rotate.add_argument("id", metavar="ID", help="key id (key_...)")
    rotate.add_argument(
        "--grace",
        type=_seconds,
        default=DEFAULT_GRACE_S,
        metavar="SECONDS",
        help="how long the old secret keeps working (default: %(default)g s, 24 h; 0 stops it now)",
    )


def _read_8k_wav(path: str) -> np.ndarray:
    """The file's samples as 8 kHz mono PCM16; ValueError naming the file and the reason otherwise.

    Strict on purpose: the detectors are specified on telephone audio, so a file at another rate or with two
    channels is refused rather than silently converted (media.audio.load_wav converts, for the player).
    """
    import numpy as np

    from media import audio, g711

    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    fmt, data = audio.parse_wav(blob, path)
    if fmt.tag == audio.WAVE_FORMAT_PCM and fmt.bits == 16:
        kind = "pcm"
    elif fmt.tag in (audio.WAVE_FORMAT_MULAW, audio.WAVE_FORMAT_ALAW):
        kind = "g711"
    else:
        raise ValueError(f"{path}: unsupported encoding (format tag {fmt.tag}, {fmt.bits} bits); need PCM16 or G.711")
    if fmt.channels != 1:
        raise ValueError(f"{path}: {fmt.channels} channels; need mono")
    if fmt.rate != 8000:
        raise ValueError(f"{path}: sample rate {fmt.rate} Hz; need 8000 Hz")
    if kind == "g711":
        decode = g711.ulaw_decode if fmt.tag == audio.WAVE_FORMAT_MULAW else g711.alaw_decode
        return np.frombuffer(decode(data), dtype=np.int16)
    return np.frombuffer(data, dtype="<i2").astype(np.int16)


def _each_file(paths: list[str], analyse: Callable[[np.ndarray], dict]) -> int:
    """One JSON line per readable file on stdout (`file` first, then what `analyse` says of its samples),
    one `softswitch: FILE: reason` line per other on stderr; 1 if any file failed."""
    status = 0
    for path in paths:
        try:
            pcm = _read_8k_wav(path)
        except ValueError as exc:
            print(f"softswitch: {exc}", file=sys.stderr)
            status = 1
            continue
        print(json.dumps({"file": path, **analyse(pcm)}), flush=True)
    return status


def cmd_media_dtmf(args: argparse.Namespace) -> int:
    from media import dtmf

    def digits(pcm: np.ndarray) -> dict:
        events = dtmf.detect(pcm)
        return {
            "digits": "".join(e.digit for e in events),
            "events": [{"digit": e.digit, "start_ms": e.start_ms, "end_ms": e.end_ms} for e in events],
        }

    return _each_file(args.files, digits)


def _amd_params(args: argparse.Namespace) -> AmdParams | None:
    """The parameters `media amd` runs with, or None once the problem is on stderr."""
    from media.amd import SPECS, AmdParamError, AmdParams

    params = AmdParams()
    if args.config:
        cfg = _load_or_report(args.config)
        if cfg is None:
            return None
        params = params.over(cfg.amd)  # checked as the config loaded
    for item in args.set:
        name, _, text = (part.strip() for part in item.partition("="))
        spec = SPECS.get(name)
        try:
            value = spec.kind(text) if spec is not None else 0
            params = params.over({name: value})
        except AmdParamError as exc:
            print(f"softswitch: --set {name}: {exc.reason}", file=sys.stderr)
            return None
        except ValueError:
            kind = "an integer" if spec is not None and spec.kind is int else "a number"
            print(f"softswitch: --set {name}: takes {kind}, not {text!r}", file=sys.stderr)
            return None
    return params


def cmd_media_amd(args: argparse.Namespace) -> int:
    from media import amd

    params = _amd_params(args)
    if params is None:
        return 2

    def verdict(pcm: np.ndarray) -> dict:
        r = amd.analyze(pcm, params, detect_beep=True)
        return {"result": r.result, "decision_ms": r.decision_ms, "beep_end_ms": r.beep_end_ms}

    return _each_file(args.files, verdict)


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
    for line in config.exposure_warnings(cfg, args.file):
        print(line, file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = _load_or_report(args.config)
    if cfg is None:
        return 2
    logs.setup(args.log_format or cfg.log.format, args.log_level or cfg.log.level)
    set_nice(cfg.process.nice)  # every thread now; those the imports and services below start inherit it
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


def _utc(unix: float | None) -> str:
    return "-" if unix is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def _open_store(config_path: str) -> Store | int:
    """The store the config names, or the exit status after saying why not (2: bad config, 1: store)."""
    from softswitch.store import Store

    cfg = _load_or_report(config_path)
    if cfg is None:
        return 2
    try:
        return Store.open(cfg.store.path)
    except SchemaTooNew as exc:
        print(f"softswitch: {exc}", file=sys.stderr)
        return 1


def cmd_bans(args: argparse.Namespace) -> int:
    """List or lift bans in the config's store; 1 when lifting an address that is not banned."""
    store = _open_store(args.config)
    if isinstance(store, int):
        return store
    try:
        if args.bans_command == "list":
            print("ADDRESS\tSINCE\tUNTIL\tFAILURES\tREASON")
            for ban in store.bans(time.time()):
                print(f"{ban.address}\t{_utc(ban.since)}\t{_utc(ban.until)}\t{ban.failures}\t{ban.reason}")
            return 0
        if not store.delete_ban(args.address):
            print(f"softswitch: {args.address} is not banned", file=sys.stderr)
            return 1
        print(f"lifted {args.address}")
        return 0
    finally:
        store.close()


def cmd_keys(args: argparse.Namespace) -> int:
    """Run one `keys` action on the config's store; 1 for an unknown or revoked key, 2 for a bad config."""
    from api import auth

    store = _open_store(args.config)
    if isinstance(store, int):
        return store
    now = time.time()
    try:
        if args.keys_command == "create":
            key, secret = auth.create_key(store, args.name, args.scopes, args.test, now)
            print(f"id: {key.id}\nsecret: {secret}")
            print("Store the secret now: it is not shown again.", file=sys.stderr)
        elif args.keys_command == "list":
            print("ID\tNAME\tSCOPES\tMODE\tPREFIX\tCREATED\tSTATUS")
            for key in store.list_api_keys(limit=1_000_000):
                if key.revoked_at is not None:
                    status = f"revoked {_utc(key.revoked_at)}"
                elif key.previous_expires_at is not None and key.previous_expires_at > now:
                    status = f"active (old secret until {_utc(key.previous_expires_at)})"
                else:
                    status = "active"
                mode = "test" if key.test else "live"
                print(
                    f"{key.id}\t{key.name}\t{','.join(key.scopes)}\t{mode}\t{key.prefix}\t{_utc(key.created_at)}\t{status}"
                )
        elif args.keys_command == "revoke":
            key = auth.revoke_key(store, args.id, now)
            print(f"revoked {key.id} ({_utc(key.revoked_at)})")
        else:
            key, secret = auth.rotate_key(store, args.id, args.grace, now)
            print(f"id: {key.id}\nsecret: {secret}")
            print(f"The previous secret works until {_utc(now + args.grace)}.", file=sys.stderr)
    except auth.KeyNotFound:
        print(f"softswitch: no API key {args.id}", file=sys.stderr)
        return 1
    except auth.KeyRevoked:
        print(f"softswitch: API key {args.id} is revoked; create a new one", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"softswitch: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "keys":
        return cmd_keys(args)
    if args.command == "bans":
        return cmd_bans(args)
    if args.command == "media":
        return {"dtmf": cmd_media_dtmf, "amd": cmd_media_amd}[args.media_command](args)
    handler = {"serve": cmd_serve, "check-config": cmd_check_config}[args.command]
    return handler(args)
