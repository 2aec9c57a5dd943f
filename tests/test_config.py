"""Config: defaults, every refused case with its exact line, and the check-config command."""

import hashlib
import subprocess
import sys
import textwrap

import pytest
from helpers import make_cert

from softswitch import config

GOOD = textwrap.dedent(
    """\
    [sip]
    listen = ["udp:127.0.0.1:5060", "tcp:[::1]:5060"]
    domain = "example.test"

    [media]
    rtp_ports = "20000-29999"
    recordings_dir = "var/recordings"

    [api]
    listen = "127.0.0.1:8080"

    [store]
    path = "var/softswitch.db"

    [[users]]              # softphones
    name = "alice"
    password = "secret"

    [[trunks]]
    name = "carrier-a"
    address = "127.0.0.1:5070"
    transport = "udp"
    inbound_from = ["127.0.0.1/32"]
    username = ""
    password = ""

    [[routes]]
    match = "^\\\\+?[0-9]{6,15}$"
    to = "trunk:carrier-a"

    [[routes]]
    match = "^alice$"
    to = "user:alice"
    """
)


def problems(text: str) -> list[str]:
    with pytest.raises(config.ConfigError) as info:
        config.parse(text, "sw.toml")
    return [str(p) for p in info.value.problems]


def test_config_design_keys_all_parse():
    cfg = config.parse(GOOD)
    assert cfg.sip.listen == ["udp:127.0.0.1:5060", "tcp:[::1]:5060"]
    assert cfg.rtp_port_range() == (20000, 29999)
    assert cfg.trunks[0].inbound_from == ["127.0.0.1/32"]
    assert [r.to for r in cfg.routes] == ["trunk:carrier-a", "user:alice"]
    assert cfg.routes[0].match == r"^\+?[0-9]{6,15}$"


def test_config_empty_file_runs_on_defaults():
    cfg = config.parse("")
    assert cfg.sip.listen == ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
    assert cfg.api.listen == "127.0.0.1:8080"
    assert cfg.store.path == "var/softswitch.db"
    assert (cfg.sip.t1_ms, cfg.sip.t2_ms, cfg.sip.t4_ms) == (500, 4000, 5000)
    assert cfg.users == [] and cfg.routes == []


def replace(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            replace('domain = "example.test"', 'domain = "example.test"\ncolour = "blue"'),
            "sw.toml:4: sip.colour: unknown key `colour`",
        ),
        (replace("[store]", "[storage]"), "sw.toml:12: storage: unknown key `storage`"),
        (replace('password = "secret"', "password = 1234"), "sw.toml:17: users[0].password: Expected `str`, got `int`"),
        (replace('listen = "127.0.0.1:8080"', "listen = 8080"), "sw.toml:10: api.listen: Expected `str`, got `int`"),
        (replace('name = "alice"\n', ""), "sw.toml:15: users[0].name: missing required key `name`"),
        (
            replace('"tcp:[::1]:5060"', '"sctp:127.0.0.1:5060"'),
            "sw.toml:2: sip.listen[1]: bad listen address 'sctp:127.0.0.1:5060': expected TRANSPORT:HOST:PORT",
        ),
        (
            replace('"udp:127.0.0.1:5060"', '"udp:127.0.0.1:70000"'),
            "sw.toml:2: sip.listen[0]: bad listen address 'udp:127.0.0.1:70000': port 70000 is out of range",
        ),
        (
            replace('"udp:127.0.0.1:5060"', '"udp:pbx.example:5060"'),
            "sw.toml:2: sip.listen[0]: bad listen address 'udp:pbx.example:5060'",
        ),
        (
            replace('listen = "127.0.0.1:8080"', 'listen = "127.0.0.1"'),
            "sw.toml:10: api.listen: bad listen address '127.0.0.1'",
        ),
        (
            replace('rtp_ports = "20000-29999"', 'rtp_ports = "30000-20000"'),
            "sw.toml:6: media.rtp_ports: bad port range: need 1024 <= LOW < HIGH <= 65535, got 30000-20000",
        ),
        (
            replace('rtp_ports = "20000-29999"', 'rtp_ports = "20001-29999"'),
            "sw.toml:6: media.rtp_ports: bad port range: LOW must be even",
        ),
        (
            replace('rtp_ports = "20000-29999"', 'rtp_ports = "lots"'),
            "sw.toml:6: media.rtp_ports: bad port range: expected LOW-HIGH",
        ),
        (
            replace('match = "^alice$"', 'match = "^(alice$"'),
            "sw.toml:32: routes[1].match: bad regular expression '^(alice$'",
        ),
        (replace('to = "user:alice"', 'to = "user:carol"'), "sw.toml:33: routes[1].to: unknown user 'carol'"),
        (
            replace('to = "trunk:carrier-a"', 'to = "trunk:carrier-b"'),
            "sw.toml:29: routes[0].to: unknown trunk 'carrier-b'",
        ),
        (
            replace('to = "trunk:carrier-a"', 'to = "trunk:carrier-a"\nmachine_detection = "always"'),
            "sw.toml:30: routes[0].machine_detection: must be enable or detect_message_end",
        ),
        (
            replace('to = "trunk:carrier-a"', 'to = "trunk:carrier-a"\namd = { greeting_ms = 0 }'),
            "sw.toml:30: routes[0].amd.greeting_ms: must be between 1 and 120000",
        ),
        (
            replace('to = "trunk:carrier-a"', 'to = "trunk:carrier-a"\namd = { greetings_ms = 900 }'),
            "sw.toml:30: routes[0].amd.greetings_ms: unknown key",
        ),
        (
            replace('to = "user:alice"', 'to = "pstn:alice"'),
            "sw.toml:33: routes[1].to: expected user:NAME, trunk:NAME, app:URL or scenario:NAME",
        ),
        (
            replace('to = "user:alice"', 'to = "scenario:no spaces"'),
            "sw.toml:33: routes[1].to: scenario target must be a scenario's name",
        ),
        (
            GOOD + '\n[[users]]\nname = "alice"\npassword = "x"\n',
            "sw.toml:36: users[1].name: duplicate name 'alice' (first at users[0])",
        ),
        (
            GOOD + '\n[[trunks]]\nname = "carrier-a"\naddress = "127.0.0.1:5080"\n',
            "sw.toml:36: trunks[1].name: duplicate name 'carrier-a' (first at trunks[0])",
        ),
        (
            replace('address = "127.0.0.1:5070"', 'address = "127.0.0.1"'),
            "sw.toml:21: trunks[0].address: bad address '127.0.0.1'",
        ),
        (
            replace('inbound_from = ["127.0.0.1/32"]', 'inbound_from = ["127.0.0.1/33"]'),
            "sw.toml:23: trunks[0].inbound_from[0]: bad network '127.0.0.1/33'",
        ),
        (
            replace('transport = "udp"', 'transport = "carrier-pigeon"'),
            "sw.toml:22: trunks[0].transport: must be one of udp, tcp, tls",
        ),
        (
            replace("[api]", '[calls]\ninband_dtmf = "sometimes"\n[api]'),
            "sw.toml:10: calls.inband_dtmf: must be auto, always or never, not 'sometimes'",
        ),
        (
            replace("[api]", "[amd]\ngreeting_ms = 0\n[api]"),
            "sw.toml:10: amd.greeting_ms: must be between 1 and 120000",
        ),
        (
            replace("[api]", "[amd]\nbetween_words_ms = 100.5\n[api]"),
            "sw.toml:10: amd.between_words_ms: must be an integer",
        ),
        (
            replace("[api]", "[amd]\ngreetings_ms = 3000\n[api]"),
            "sw.toml:10: amd.greetings_ms: unknown key",
        ),
        (replace("[api]", "[api"), "sw.toml:9: (syntax): invalid TOML"),
    ],
)
def test_config_error_names_file_line_and_field(text, expected):
    got = problems(text)
    assert any(p.startswith(expected) for p in got), got


def test_config_reports_every_semantic_problem_at_once():
    text = replace('to = "user:alice"', 'to = "user:carol"').replace('"udp:127.0.0.1:5060"', '"udp:x"')
    got = problems(text)
    assert [p.split(": ")[0] for p in got] == ["sw.toml:2", "sw.toml:33"]


def test_config_dotted_keys_and_sub_tables_are_located():
    text = 'sip.listen = ["udp:1.2.3.4:99999"]\n'
    assert problems(text) == [
        "sw.toml:1: sip.listen[0]: bad listen address 'udp:1.2.3.4:99999': port 99999 is out of range 1-65535"
    ]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "softswitch", *args], capture_output=True, text=True, timeout=30)


def test_config_check_config_command_ok(tmp_path):
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    res = run_cli("check-config", str(path))
    assert res.returncode == 0, res.stderr
    assert "ok" in res.stdout.splitlines()[0]
    assert "route 0: /^\\+?[0-9]{6,15}$/ -> trunk:carrier-a" in res.stdout


def test_config_check_config_command_errors_exit_2(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(replace('to = "user:alice"', 'to = "user:carol"'))
    res = run_cli("check-config", str(path))
    assert res.returncode == 2
    assert res.stderr.strip() == f"{path}:33: routes[1].to: unknown user 'carol'"
    assert "Traceback" not in res.stderr


def test_config_missing_file_is_an_error(tmp_path):
    res = run_cli("check-config", str(tmp_path / "nope.toml"))
    assert res.returncode == 2
    assert res.stderr.startswith(f"{tmp_path / 'nope.toml'}:0: (file): cannot read")


def test_config_shipped_file_is_valid():
    config.load("configs/softswitch.toml")


@pytest.fixture(scope="module")
def pems(tmp_path_factory) -> dict[str, str]:
    """Two real self-signed certificate/key pairs (openssl CLI) and a file that is neither."""
    where = tmp_path_factory.mktemp("pems")
    out = {}
    for name in ("a", "b"):
        out[f"{name}_cert"], out[f"{name}_key"] = make_cert(where, name)
    (where / "junk.pem").write_text("not pem\n")
    out["junk"], out["missing"] = str(where / "junk.pem"), str(where / "missing.pem")
    return out


def tls_sip(cert: str | None, key: str | None, listen: str = "tls:127.0.0.1:5061") -> str:
    """[sip] on line 1, listen on 2, then tls_cert and tls_key (when given) on 3 and 4."""
    text = f'[sip]\nlisten = ["udp:127.0.0.1:5060", "{listen}"]\n'
    text += "" if cert is None else f'tls_cert = "{cert}"\n'
    return text + ("" if key is None else f'tls_key = "{key}"\n')


def test_config_tls_listener_with_certificate_and_key(pems):
    cfg = config.parse(tls_sip(pems["a_cert"], pems["a_key"]))
    assert (cfg.sip.tls_cert, cfg.sip.tls_key) == (pems["a_cert"], pems["a_key"])
    assert config.parse("").sip.tls_cert == "" and config.parse("").sip.tls_key == ""  # no TLS, nothing needed


@pytest.mark.parametrize(
    ("cert", "key", "listen", "expected"),
    [
        (
            None,
            None,
            "tls:127.0.0.1:5061",
            [
                "sw.toml:1: sip.tls_cert: required with a tls: listen address",
                "sw.toml:1: sip.tls_key: required with a tls: listen address",
            ],
        ),
        ("a_cert", None, "tls:127.0.0.1:5061", ["sw.toml:1: sip.tls_key: required with a tls: listen address"]),
        ("a_cert", None, "tcp:127.0.0.1:5060", ["sw.toml:1: sip.tls_key: required with sip.tls_cert"]),
        ("missing", "a_key", "tls:127.0.0.1:5061", ["sw.toml:3: sip.tls_cert: file '{missing}' does not exist"]),
        ("a_key", "a_key", "tls:127.0.0.1:5061", ["sw.toml:3: sip.tls_cert: no PEM certificate found in '{a_key}'"]),
        ("a_cert", "junk", "tls:127.0.0.1:5061", ["sw.toml:4: sip.tls_key: no PEM private key found in '{junk}'"]),
        ("a_cert", "missing", "tls:127.0.0.1:5061", ["sw.toml:4: sip.tls_key: file '{missing}' does not exist"]),
        (
            "a_cert",
            "b_key",
            "tls:127.0.0.1:5061",
            ["sw.toml:4: sip.tls_key: private key '{b_key}' does not match certificate '{a_cert}'"],
        ),
    ],
)
def test_config_tls_certificate_and_key_problems(pems, cert, key, listen, expected):
    text = tls_sip(cert and pems[cert], key and pems[key], listen)
    assert problems(text) == [e.format(**pems) for e in expected]


def test_config_check_config_names_a_missing_certificate(tmp_path, pems):
    path = tmp_path / "tls.toml"
    path.write_text(tls_sip(pems["missing"], pems["a_key"]))
    res = run_cli("check-config", str(path))
    assert res.returncode == 2
    assert res.stderr.strip() == f"{path}:3: sip.tls_cert: file '{pems['missing']}' does not exist"


def test_config_api_rate_limit_defaults_and_values():
    cfg = config.parse("")
    assert (cfg.api.rate_limit_per_s, cfg.api.rate_limit_burst) == (20.0, 40)
    cfg = config.parse("[api]\nrate_limit_per_s = 5\nrate_limit_burst = 10\n")
    assert (cfg.api.rate_limit_per_s, cfg.api.rate_limit_burst) == (5.0, 10)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("rate_limit_per_s = 0", "sw.toml:3: api.rate_limit_per_s: must be positive"),
        ("rate_limit_per_s = -1.5", "sw.toml:3: api.rate_limit_per_s: must be positive"),
        ("rate_limit_burst = 0", "sw.toml:3: api.rate_limit_burst: must be at least 1"),
        ('rate_limit_burst = "many"', "sw.toml:3: api.rate_limit_burst: Expected `int`, got `str`"),
        ("rate_limit = 5", "sw.toml:3: api.rate_limit: unknown key `rate_limit`"),
    ],
)
def test_config_api_rate_limit_problems_name_file_line_and_field(line, expected):
    assert problems(f'[api]\nlisten = "127.0.0.1:8080"\n{line}\n') == [expected]


def test_config_api_metrics_listen_default_and_value():
    assert config.parse("").api.metrics_listen == ""
    cfg = config.parse('[api]\nmetrics_listen = "127.0.0.1:9100"\n')
    assert cfg.api.metrics_listen == "127.0.0.1:9100"
    assert "metrics listen: 127.0.0.1:9100 (GET /metrics, no key)" in config.summary(cfg)
    assert not any(line.startswith("metrics") for line in config.summary(config.parse("")))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('metrics_listen = "9100"', "sw.toml:3: api.metrics_listen: bad listen address '9100': expected host:port"),
        ('metrics_listen = "metrics.example:9100"', "sw.toml:3: api.metrics_listen: bad listen address"),
        ('metrics_listen = "127.0.0.1:70000"', "sw.toml:3: api.metrics_listen: bad listen address"),
        ('metrics_listen = "127.0.0.1:8080"', "sw.toml:3: api.metrics_listen: must differ from api.listen"),
        ("metrics_listen = 9100", "sw.toml:3: api.metrics_listen: Expected `str`, got `int`"),
    ],
)
def test_config_api_metrics_listen_problems_name_file_line_and_field(line, expected):
    [problem] = problems(f'[api]\nlisten = "127.0.0.1:8080"\n{line}\n')
    assert problem.startswith(expected), problem


def test_config_webhooks_defaults_and_values():
    cfg = config.parse("")
    assert (cfg.webhooks.allow_private, cfg.webhooks.timeout_s, cfg.webhooks.concurrency) == (False, 15.0, 4)
    cfg = config.parse("[webhooks]\nallow_private = true\ntimeout_s = 5\nconcurrency = 2\n")
    assert (cfg.webhooks.allow_private, cfg.webhooks.timeout_s, cfg.webhooks.concurrency) == (True, 5.0, 2)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('allow_private = "yes"', "sw.toml:3: webhooks.allow_private: Expected `bool`, got `str`"),
        ("timeout_s = 0", "sw.toml:3: webhooks.timeout_s: must be positive and at most 60"),
        ("timeout_s = 61", "sw.toml:3: webhooks.timeout_s: must be positive and at most 60"),
        ("concurrency = 0", "sw.toml:3: webhooks.concurrency: must be 1-64"),
        ("retries = 3", "sw.toml:3: webhooks.retries: unknown key `retries`"),
    ],
)
def test_config_webhooks_problems_name_file_line_and_field(line, expected):
    assert problems(f"[webhooks]\n# delivery\n{line}\n") == [expected]


def test_config_users_by_ha1_and_the_warning_for_clear_passwords_others_can_read(tmp_path):
    ha1 = hashlib.md5(b"alice:example.test:secret").hexdigest()
    hashed = replace('password = "secret"', f'ha1_md5 = "{ha1}"')
    path = tmp_path / "sw.toml"
    path.write_text(GOOD)
    path.chmod(0o644)
    res = run_cli("check-config", str(path))
    assert res.returncode == 0 and "readable by other users and holds clear-text passwords (users.alice" in res.stderr
    path.chmod(0o600)
    assert run_cli("check-config", str(path)).stderr == ""  # only its owner reads it
    path.write_text(hashed)
    path.chmod(0o644)
    assert "users.alice" not in run_cli("check-config", str(path)).stderr  # HA1 only: nothing in clear
    for text, why in (
        (replace('password = "secret"', 'ha1_md5 = "xyz"'), "users[0].ha1_md5: must be 32 hex digits"),
        (replace('password = "secret"', 'comment = ""'), "users[0].comment: unknown key"),
        (replace('password = "secret"', ""), "users[0].password: needs a password, or ha1_md5 / ha1_sha256"),
    ):
        path.write_text(text)
        res = run_cli("check-config", str(path))
        assert res.returncode == 2 and why in res.stderr, res.stderr


def test_config_api_over_https_needs_both_files_that_load(pems):
    cfg = config.parse(f'[api]\ntls_cert = "{pems["a_cert"]}"\ntls_key = "{pems["a_key"]}"\n')
    assert (cfg.api.tls_cert, cfg.api.tls_key) == (pems["a_cert"], pems["a_key"])
    assert problems(f'[api]\ntls_cert = "{pems["a_cert"]}"\n') == ["sw.toml:1: api.tls_key: required with api.tls_cert"]
    assert problems(f'[api]\ntls_cert = "{pems["a_cert"]}"\ntls_key = "{pems["b_key"]}"\n') == [
        f"sw.toml:3: api.tls_key: private key '{pems['b_key']}' does not match certificate '{pems['a_cert']}'"
    ]


def test_config_trunk_client_certificates_need_a_ca_and_a_tls_listener(pems):
    trunk = '[[trunks]]\nname = "c"\naddress = "127.0.0.1:5070"\ntls_client_cert = "carrier.example"\n'
    assert problems(trunk) == [
        "sw.toml:4: trunks[0].tls_client_cert: needs sip.tls_client_ca (the CAs of client certificates)"
    ]
    assert problems(f'[sip]\ntls_client_ca = "{pems["a_cert"]}"\n') == [
        "sw.toml:2: sip.tls_client_ca: needs a tls: listen address"
    ]
    good = tls_sip(pems["a_cert"], pems["a_key"]) + f'tls_client_ca = "{pems["b_cert"]}"\n' + trunk
    assert config.parse(good).trunks[0].tls_client_cert == "carrier.example"
    bad = tls_sip(pems["a_cert"], pems["a_key"]) + f'tls_client_ca = "{pems["junk"]}"\n'
    assert problems(bad) == [f"sw.toml:5: sip.tls_client_ca: no PEM certificate found in '{pems['junk']}'"]


def test_config_webhooks_ca_file_must_load(pems, tmp_path):
    assert config.parse(f'[webhooks]\nca_file = "{pems["a_cert"]}"\n').webhooks.ca_file == pems["a_cert"]
    assert problems(f'[webhooks]\n# private CA\nca_file = "{pems["junk"]}"\n') == [
        f"sw.toml:3: webhooks.ca_file: no PEM certificate found in '{pems['junk']}'"
    ]
    missing = tmp_path / "none.pem"
    assert problems(f'[webhooks]\nca_file = "{missing}"\n') == [
        f"sw.toml:2: webhooks.ca_file: file '{missing}' does not exist"
    ]


def test_config_process_nice_is_a_niceness():
    assert config.parse("").process.nice == 0
    assert config.parse("[process]\nnice = -10\n").process.nice == -10
    assert problems('[log]\nlevel = "info"\n[process]\nnice = -21\n') == ["sw.toml:4: process.nice: must be -20..19"]
