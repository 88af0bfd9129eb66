from dataclasses import replace
from pathlib import Path

import pytest

from rating_engine.cli import main
from rating_engine.config import Config, TariffsSection, load_config, parse_config
from rating_engine.errors import ConfigError

from .conftest import ROOT

EXAMPLE = ROOT / "asterisk_conf" / "rating-engine.toml"


def test_the_commented_example_is_exactly_the_defaults() -> None:
    cfg = load_config(EXAMPLE)
    assert replace(cfg, base=Path(".")) == Config()
    assert cfg.plan_paths() == [EXAMPLE.parent / "tariffs" / "office-fr.toml"]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"engine": {"quota": 60}}, "unknown key engine.quota"),
        ({"engin": {}}, "unknown section [engin]"),
        ({"engine": {"quota_seconds": "60"}}, "must be a int"),
        ({"engine": {"quota_seconds": 60, "renew_margin": 60}}, "renew_margin"),
        ({"agi": {"account": "header:X"}}, "agi.account"),
        ({"engine": {"dialed": "header:X"}}, "agi.dialed"),  # the key's place in 0.1, still read
        ({"engine": {"account": "arg:3"}, "agi": {"account": "arg:3"}}, "keep [agi] only"),
        ({"agi": {"bind": "127.0.0.1:port"}}, "HOST:PORT"),
        ({"agi": {"reuse_port": "yes"}}, "true or false"),
        ({"log": {"level": "loud"}}, "log.level"),
        ({"tariffs": {"plans": "one.toml"}}, "list of strings"),
        ({"engine": {"node": ""}}, "engine.node = ''"),
        ({"engine": {"node": "a/b"}}, "engine.node = 'a/b'"),  # its spool file was made in a directory a
        ({"engine": {"node": "../pbx1"}}, "engine.node"),
        ({"engine": {"node": "pbx 1"}}, "engine.node"),
        ({"engine": {"node": ".hidden"}}, "engine.node"),
        ({"engine": {"node": "p" * 64}}, "engine.node"),
    ],
)
def test_bad_settings_are_named(data: dict[str, dict[str, object]], words: str) -> None:
    with pytest.raises(ConfigError, match=r"cfg\.toml") as info:
        parse_config(data, "cfg.toml")
    assert words in str(info.value)


@pytest.mark.parametrize("node", ["pbx1", "PBX-paris.2", "a", "x_y", "9" * 63])
def test_a_node_is_a_plain_name(node: str) -> None:
    assert parse_config({"engine": {"node": node}}, "cfg.toml").engine.node == node


def test_the_ami_secret_comes_from_the_environment_or_a_file(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cfg = parse_config({"ami": {"secret_env": "TEST_AMI_SECRET"}})
    monkeypatch.delenv("TEST_AMI_SECRET", raising=False)
    with pytest.raises(ConfigError, match="TEST_AMI_SECRET"):
        cfg.ami.resolved_secret()
    monkeypatch.setenv("TEST_AMI_SECRET", "s3cret")
    assert cfg.ami.resolved_secret() == "s3cret"
    (tmp_path / "secret").write_text("from-file\n")
    assert parse_config({"ami": {"secret_file": str(tmp_path / "secret")}}).ami.resolved_secret() == "from-file"
    assert "s3cret" not in repr(parse_config({"ami": {"secret": "s3cret"}}))


def test_run_without_a_secret_fails_with_one_line(capsys, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("RATING_ENGINE_AMI_SECRET", raising=False)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[tariffs]\nplans = ["%s"]\n' % (ROOT / "tariffs/office-fr.toml"))
    assert main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rating-engine: no AMI secret") and err.count("\n") == 1


def test_plans_are_read_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = replace(Config(), tariffs=TariffsSection(plans=("p.toml", "/abs/q.toml")), base=tmp_path)
    assert cfg.plan_paths() == [tmp_path / "p.toml", Path("/abs/q.toml")]


def test_a_config_of_0_1_with_the_sources_under_engine_still_reads_them() -> None:
    cfg = parse_config({"engine": {"account": "fixed:acme", "quota_seconds": 60}, "agi": {"bind": "127.0.0.1:0"}})
    assert (cfg.agi.account, cfg.agi.bind, cfg.engine.quota_seconds) == ("fixed:acme", "127.0.0.1:0", 60)
