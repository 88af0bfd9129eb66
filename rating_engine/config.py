"""Every setting and its default, in one place; read from TOML.

The AMI secret comes from the file, from an environment variable (`secret_env`) or from a
file of its own (`secret_file`) — never from the command line — and is never printed.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .asterisk.agent import Sources
from .errors import ConfigError, InvalidAmount
from .ledger import default_url
from .money import parse_amount


def read_secret(env: str, file: str, key: str) -> str:
    """A secret from the file `key` names (if set), else from the environment variable `env`: never
    from the TOML itself or a command line."""
    if file:
        try:
            return Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read {key} {file}: {exc.strerror}") from None
    return os.environ.get(env, "") if env else ""


def _hostport(text: str, default_port: int) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host:
        if not text:
            raise ConfigError("an empty address: give HOST:PORT")
        return text, default_port
    if not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ConfigError(f"not HOST:PORT with a port from 0 to 65535: {text!r}")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class EngineSection:
    node: str = "pbx1"
    """This PBX's name; after a restart the engine reconciles only the reservations it made."""
    quota_seconds: int = 120
    renew_margin: int = 20
    ring_timeout: int = 60
    default_country: str = "FR"
    """Country used to recognise emergency numbers when the account cannot be read."""
    answer_timeout: float = 2.0
    shutdown_grace: float = 30.0
    cdr_tolerance: int = 1
    """Seconds the Cdr's BillableSeconds may differ from answer-to-hangup before it is logged."""
    warning_seconds: int = 30
    """When the next quota cannot be paid, the caller hears a warning this long before the end (0: none)."""
    final_warning_seconds: int = 10
    """… and again this long before the end (0: only one warning)."""
    cdr_file: str = ""
    """Asterisk's CDR file of the cdr_custom mapping (asterisk_conf/cdr_custom.conf): calls that ended
    while the engine was away are billed from it; "" = none, they are then billed up to their deadline."""
    warning_digit: str = "D"
    """The DTMF digit features.conf maps to the warning (`rating-warning => D,self,Playback,…`)."""
    spool_file: str = ""
    """Where settlements wait while the ledger cannot be reached; "" = beside a SQLite ledger, else
    `<node>.spool.jsonl` in the data directory. On the engine's own disk, one file per node."""


@dataclass(frozen=True)
class AgiSection:
    bind: str = "127.0.0.1:4573"
    reuse_port: bool = False
    account: str = "accountcode"
    """Where the account comes from: "accountcode", "arg:N", or "fixed:NAME"."""
    extension: str = "arg:1"
    """Where the calling extension comes from: "callerid", "arg:N" or "fixed:NAME"."""
    dialed: str = "arg:2"
    """Where the dialed number comes from: "extension", "arg:N" or "fixed:NUMBER"."""

    @property
    def sources(self) -> Sources:
        return Sources(self.account, self.extension, self.dialed)


@dataclass(frozen=True)
class AmiSection:
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "rating"
    secret: str = field(default="", repr=False)
    secret_env: str = "RATING_ENGINE_AMI_SECRET"
    secret_file: str = ""
    action_timeout: float = 5.0
    ping_interval: float = 10.0

    def resolved_secret(self) -> str:
        if self.secret:
            return self.secret
        value = read_secret(self.secret_env, self.secret_file, "ami.secret_file")
        if not value:
            raise ConfigError(f"no AMI secret: set ami.secret_file, or the environment variable {self.secret_env}")
        return value


@dataclass(frozen=True)
class LedgerSection:
    url: str = ""
    """Empty: sqlite:/// under the data directory."""

    def resolved_url(self) -> str:
        """The URL the ledger is opened at: the one set, else the default file under the data directory."""
        return self.url or default_url()


@dataclass(frozen=True)
class TariffsSection:
    plans: tuple[str, ...] = ("tariffs/office-fr.toml",)


@dataclass(frozen=True)
class MetricsSection:
    bind: str = "127.0.0.1:9573"
    """Empty disables the metrics endpoint."""


@dataclass(frozen=True)
class WebSection:
    bind: str = "127.0.0.1:8080"
    """The Prepaid Account page (`rating-engine web`); never 0.0.0.0 without a TLS proxy in front."""
    secret_env: str = "RATING_ENGINE_WEB_SECRET"
    """The environment variable holding the key that signs sessions and CSRF tokens."""
    secret_file: str = ""
    """…or a file holding it. With neither, a random key: every restart logs everybody out."""
    session_hours: float = 8.0
    amounts: tuple[str, ...] = ("10", "25", "50", "100")
    """What Add Funds offers, in each account's currency."""
    secure_cookies: bool = False
    """true behind HTTPS: cookies are sent over HTTPS only."""

    def resolved_secret(self) -> str | None:
        return read_secret(self.secret_env, self.secret_file, "web.secret_file") or None


@dataclass(frozen=True)
class PaymentsSection:
    provider: str = "manual"
    """Who pays top-ups: "manual" (pending until an operator confirms the transfer) or "stripe"."""
    timeout: float = 30.0
    """Seconds a charge may take before it is asked again later (with the same key: safe)."""
    public_url: str = "http://127.0.0.1:8080"
    """The page's address as browsers reach it: where Stripe's pages send the customer back."""
    stripe_key_env: str = "STRIPE_SECRET_KEY"
    """The environment variable holding Stripe's secret key (never in this file or a command line)."""
    stripe_key_file: str = ""
    """…or a file holding it."""
    stripe_webhook_secret_env: str = "STRIPE_WEBHOOK_SECRET"
    stripe_webhook_secret_file: str = ""
    stripe_api_base: str = ""
    """Empty: Stripe's API. Only a test or a proxy sets it."""

    def stripe_key(self) -> str:
        """Stripe's secret key; without it the Stripe provider cannot start (one clear line)."""
        key = read_secret(self.stripe_key_env, self.stripe_key_file, "payments.stripe_key_file")
        if not key:
            raise ConfigError(f"payments.provider = stripe needs its secret key in ${self.stripe_key_env}")
        return key

    def stripe_webhook_secret(self) -> str:
        return read_secret(
            self.stripe_webhook_secret_env, self.stripe_webhook_secret_file, "payments.stripe_webhook_secret_file"
        )


@dataclass(frozen=True)
class MailSection:
    """Notices to administrators by email, sent by `rating-engine web`; off by default."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 587
    tls: str = "starttls"
    """starttls, tls (implicit, usually port 465) or none (a relay on this machine)."""
    username: str = ""
    password_env: str = "RATING_ENGINE_SMTP_PASSWORD"
    password_file: str = ""
    sender: str = "billing@localhost"

    def password(self) -> str:
        return read_secret(self.password_env, self.password_file, "mail.password_file")


@dataclass(frozen=True)
class LogSection:
    level: str = "info"
    format: str = "json"


@dataclass(frozen=True)
class Config:
    engine: EngineSection = EngineSection()
    agi: AgiSection = AgiSection()
    ami: AmiSection = AmiSection()
    ledger: LedgerSection = LedgerSection()
    tariffs: TariffsSection = TariffsSection()
    metrics: MetricsSection = MetricsSection()
    payments: PaymentsSection = PaymentsSection()
    mail: MailSection = MailSection()
    web: WebSection = WebSection()
    log: LogSection = LogSection()
    base: Path = Path(".")
    """Directory that relative paths in the file are read against."""

    def plan_paths(self) -> list[Path]:
        return [p if p.is_absolute() else self.base / p for p in map(Path, self.tariffs.plans)]

    @property
    def agi_address(self) -> tuple[str, int]:
        return _hostport(self.agi.bind, 4573)

    @property
    def web_amounts(self) -> tuple[int, ...]:
        """Add Funds' amounts in micro-units: positive, each once, in the order given."""
        try:
            found = tuple(parse_amount(a) for a in self.web.amounts)
        except InvalidAmount as exc:
            raise ConfigError(f"web.amounts: {exc}") from None
        if not found or min(found) <= 0 or len(set(found)) != len(found):
            raise ConfigError('web.amounts: give one or more different positive amounts, e.g. ["10", "25"]')
        return found

    @property
    def web_address(self) -> tuple[str, int]:
        return _hostport(self.web.bind, 8080)

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        return _hostport(self.metrics.bind, 9573) if self.metrics.bind else None


SECTIONS = {f.name: f.type for f in fields(Config) if f.name != "base"}


MOVED = {("engine", "account"): "agi", ("engine", "extension"): "agi", ("engine", "dialed"): "agi"}
"""Keys that lived in another section before; still read there, so an older file keeps working."""


def parse_config(data: dict[str, Any], source: str = "<config>", base: Path | None = None) -> Config:
    cfg = Config(base=base or Path("."))
    data = {name: dict(body) if isinstance(body, dict) else body for name, body in data.items()}
    for (old, key), new in MOVED.items():
        body = data.get(old)
        if isinstance(body, dict) and key in body:
            target = data.setdefault(new, {})
            if isinstance(target, dict):
                if key in target:
                    raise ConfigError(f"{source}: {key} is given in [{old}] and in [{new}]: keep [{new}] only")
                target[key] = body.pop(key)
    for name, body in data.items():
        if name not in SECTIONS:
            raise ConfigError(f"{source}: unknown section [{name}]; known: {', '.join(SECTIONS)}")
        if not isinstance(body, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        section = getattr(cfg, name)
        known = {f.name: f for f in fields(section)}
        values: dict[str, Any] = {}
        for key, value in body.items():
            if key not in known:
                raise ConfigError(f"{source}: unknown key {name}.{key}; known: {', '.join(known)}")
            default = getattr(section, key)
            if isinstance(default, tuple):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ConfigError(f"{source}: {name}.{key} must be a list of strings")
                value = tuple(value)
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ConfigError(f"{source}: {name}.{key} must be true or false")
            elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            elif not isinstance(value, type(default)) or isinstance(value, bool) != isinstance(default, bool):
                raise ConfigError(f"{source}: {name}.{key} must be a {type(default).__name__}")
            values[key] = value
        cfg = replace(cfg, **{name: replace(section, **values)})
    _check(cfg, source)
    return cfg


_NODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
"""A node names this PBX's calls in the ledger and its spool file: a plain name, never a path."""


def _check(cfg: Config, source: str) -> None:
    if _NODE.fullmatch(cfg.engine.node) is None:
        raise ConfigError(
            f"{source}: engine.node = {cfg.engine.node!r}: a name of up to 63 letters, digits, '.', '_' or '-',"
            " starting with a letter or a digit"
        )
    if not 1 <= cfg.ami.port <= 65535:
        raise ConfigError(f"{source}: ami.port must be from 1 to 65535")
    e = cfg.engine
    if e.quota_seconds < 10 or e.renew_margin < 1 or e.renew_margin >= e.quota_seconds:
        raise ConfigError(f"{source}: engine.quota_seconds must be ≥ 10 and renew_margin between 1 and the quota")
    if not 0 <= e.warning_seconds < e.quota_seconds or not 0 <= e.final_warning_seconds < e.quota_seconds:
        raise ConfigError(f"{source}: engine.warning_seconds and final_warning_seconds must be between 0 and the quota")
    if e.warning_seconds and e.final_warning_seconds >= e.warning_seconds:
        raise ConfigError(f"{source}: engine.final_warning_seconds must be less than warning_seconds")
    if len(e.warning_digit) != 1 or e.warning_digit not in "0123456789*#ABCD":
        raise ConfigError(f"{source}: engine.warning_digit must be one DTMF digit: 0-9, *, #, A-D")
    if e.ring_timeout < 1:
        raise ConfigError(f"{source}: engine.ring_timeout must be positive")
    for key in ("account", "extension", "dialed"):
        spec = getattr(cfg.agi, key)
        kind, _, value = spec.partition(":")
        ok = (
            (kind == "arg" and value.isdigit() and int(value) > 0)
            or (kind == "fixed" and value)
            or (kind in ("accountcode", "callerid", "extension") and not value)
        )
        if not ok:
            raise ConfigError(f"{source}: agi.{key} = {spec!r}: use accountcode, callerid, arg:N or fixed:NAME")
    try:
        cfg.agi_address  # noqa: B018 - validates
        cfg.web_address  # noqa: B018
        if cfg.metrics.bind:
            cfg.metrics_address  # noqa: B018
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if cfg.web.session_hours <= 0:
        raise ConfigError(f"{source}: web.session_hours must be positive")
    try:
        cfg.web_amounts  # noqa: B018 - validates
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if cfg.payments.provider not in ("manual", "stripe"):
        raise ConfigError(f"{source}: payments.provider must be manual or stripe")
    if cfg.mail.tls not in ("starttls", "tls", "none") or not 1 <= cfg.mail.port <= 65535:
        raise ConfigError(f"{source}: mail.tls must be starttls, tls or none, and mail.port from 1 to 65535")
    if cfg.payments.timeout <= 0:
        raise ConfigError(f"{source}: payments.timeout must be positive")
    if cfg.log.level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"{source}: log.level must be debug, info, warning or error")
    if cfg.log.format not in ("json", "text"):
        raise ConfigError(f"{source}: log.format must be json or text")


def load_config(path: str | Path) -> Config:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    return parse_config(data, str(p), p.resolve().parent)
