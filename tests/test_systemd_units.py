"""The systemd units shipped in asterisk_conf/systemd: checked by systemd's own parser, and held
to what the engine does (its data and cache directories, SIGHUP, its shutdown grace, its secrets)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rating_engine import number_cache
from rating_engine.config import AmiSection, EngineSection, PaymentsSection, WebSection
from rating_engine.ledger import data_dir

from .conftest import ROOT

UNITS = ROOT / "asterisk_conf" / "systemd"
CONFIG = "/etc/rating-engine/rating-engine.toml"


def read_unit(path: Path) -> dict[str, list[str]]:
    """`Section.Key` -> its values in order (a key such as Environment= may be given again)."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def environment(unit: dict[str, list[str]]) -> dict[str, str]:
    return dict(v.split("=", 1) for v in unit.get("Service.Environment", []))


UNIT_FILES = ["rating-engine.service", "rating-engine-web.service", "rating-engine-backup.service"]


@pytest.mark.parametrize("name", [*UNIT_FILES, "rating-engine-backup.timer"])
def test_systemd_reads_each_unit_without_a_word(tmp_path: Path, name: str) -> None:
    verify = shutil.which("systemd-analyze")
    if verify is None:
        pytest.skip("systemd-analyze is not installed (Debian's systemd package has it)")
    executable = Path(sys.executable).with_name("rating-engine")  # the unit's path, where it is here
    unit = tmp_path / name
    unit.write_text((UNITS / name).read_text().replace("/usr/local/bin/rating-engine", str(executable)))
    done = subprocess.run([verify, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_engines_unit_runs_it_where_its_data_and_secrets_are(monkeypatch: pytest.MonkeyPatch) -> None:
    unit = read_unit(UNITS / "rating-engine.service")
    assert unit["Service.ExecStart"] == [f"/usr/local/bin/rating-engine run --config {CONFIG}"]
    assert unit["Service.ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # the engine reloads its tariffs on it
    # SIGTERM lets live calls be followed for the grace: systemd must not SIGKILL it before.
    assert unit["Service.KillSignal"] == ["SIGTERM"]
    assert float(unit["Service.TimeoutStopSec"][0]) > EngineSection().shutdown_grace + 10
    env = environment(unit)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert data_dir() == Path("/var/lib") / unit["Service.StateDirectory"][0]  # the ledger and the spool
    assert number_cache.default_dir() == Path("/var/cache") / unit["Service.CacheDirectory"][0]
    text = (UNITS / "rating-engine.service").read_text()
    assert AmiSection().secret_env in text and unit["Service.EnvironmentFile"] == ["/etc/rating-engine/secrets.env"]
    assert not [k for k in env if "SECRET" in k]  # a secret never in the unit itself


def test_the_pages_unit_shares_the_engines_ledger_and_names_its_secrets() -> None:
    unit, engine = read_unit(UNITS / "rating-engine-web.service"), read_unit(UNITS / "rating-engine.service")
    assert unit["Service.ExecStart"] == [f"/usr/local/bin/rating-engine web --config {CONFIG}"]
    assert environment(unit)["RATING_ENGINE_DATA"] == environment(engine)["RATING_ENGINE_DATA"]
    assert unit["Service.User"] == engine["Service.User"]  # the SQLite file is the engine user's, 0600
    text = (UNITS / "rating-engine-web.service").read_text()
    payments = PaymentsSection()
    for name in (WebSection().secret_env, payments.stripe_key_env, payments.stripe_webhook_secret_env):
        assert f"{name}=" in text
    assert not [k for k in environment(unit) if "SECRET" in k]


def test_the_config_path_the_units_run_is_the_one_the_guides_tell() -> None:
    for guide in (ROOT / "README.md", ROOT / "asterisk_conf" / "README.md"):
        assert CONFIG in guide.read_text() and "asterisk_conf/systemd" in guide.read_text()


def test_the_daily_backup_copies_the_engines_ledger_and_keeps_two_weeks(tmp_path: Path) -> None:
    """The backup unit's own command lines, run as systemd would run them (its `%%` made `%`, the
    paths moved under tmp_path): a checked copy of the engine's ledger, and the old copies pruned."""
    unit, engine = read_unit(UNITS / "rating-engine-backup.service"), read_unit(UNITS / "rating-engine.service")
    timer = read_unit(UNITS / "rating-engine-backup.timer")
    assert unit["Service.User"] == engine["Service.User"] and unit["Service.Type"] == ["oneshot"]
    assert environment(unit)["RATING_ENGINE_DATA"] == environment(engine)["RATING_ENGINE_DATA"]
    assert engine["Service.StateDirectory"][0] in unit["Service.StateDirectory"][0].split()
    assert timer["Timer.Persistent"] == ["true"] and timer["Timer.OnCalendar"] == ["daily"]
    data, backups = tmp_path / "data", tmp_path / "backups"
    backups.mkdir()
    executable = str(Path(sys.executable).with_name("rating-engine"))
    env = {"PATH": "/usr/bin:/bin", "RATING_ENGINE_DATA": str(data)}
    plan = ROOT / "tariffs" / "office-fr.toml"
    made = subprocess.run([executable, "account", "create", "acme", "--plan", str(plan)], env=env, timeout=60)
    assert made.returncode == 0

    def as_run(line: str) -> list[str]:
        line = line.replace("%%", "%").replace("/usr/local/bin/rating-engine", executable)
        return shlex.split(line.replace("/var/lib/rating-engine-backups", str(backups)))

    old = backups / "ledger-20000101T000000.sqlite3"
    old.write_bytes(b"")
    os.utime(old, (0, 0))
    done = subprocess.run(as_run(unit["Service.ExecStart"][0]), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "check on the copy: ok" in done.stdout, done.stderr
    pruned = subprocess.run(as_run(unit["Service.ExecStartPost"][0]), env=env, timeout=60)
    [copy] = list(backups.iterdir())
    assert pruned.returncode == 0 and copy.name.startswith("ledger-") and copy.stat().st_size > 0
