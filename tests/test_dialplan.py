"""The shipped dialplan, read as code: every jump lands, the contract's variables are cleared,
the emergency list is the engine's, and a walk through it does what each engine answer asks."""

from __future__ import annotations

from pathlib import Path

import pytest

from rating_engine import contract
from rating_engine.asterisk import dialplan
from rating_engine.cli import main
from rating_engine.config import load_config
from rating_engine.contract import Reason
from rating_engine.numbering import Kind, classify
from rating_engine.rating.plan import load_plan

from .conftest import OFFICE_FR, ROOT
from .dialplan_walk import substitute, walk

CONF = ROOT / "asterisk_conf" / "extensions.conf"
TEXT = CONF.read_text(encoding="utf-8")
GLOBALS = {"RATING_TRUNK_PREFIX": "PJSIP/", "RATING_TRUNK_SUFFIX": "@trunk", "RATING_RING": "60"}
COUNTRY = load_plan(OFFICE_FR).country


def shipped(text: str = TEXT) -> dialplan.Dialplan:
    return dialplan.parse(text, "extensions.conf")


def test_the_shipped_dialplan_has_no_problems() -> None:
    assert dialplan.check(shipped(), COUNTRY) == []


def test_the_shipped_engine_config_recognises_the_same_country_as_the_sample_plan() -> None:
    cfg = load_config(ROOT / "asterisk_conf" / "rating-engine.toml")
    assert cfg.engine.default_country == COUNTRY


def test_the_defect_seen_on_asterisk_22_is_reported_with_its_line() -> None:
    broken = TEXT.replace(" same => n,Goto(unreachable)\n", " same => n,Goto(unreachable,1)\n")
    assert broken != TEXT
    problems = dialplan.check(shipped(broken), COUNTRY)
    assert len(problems) == 1
    line = broken.splitlines().index(" same => n,Goto(unreachable,1)") + 1
    assert problems[0].line == line
    assert "no extension 'unreachable'" in problems[0].message and "Goto(unreachable)" in problems[0].message


@pytest.mark.parametrize("name", contract.VARIABLES)
def test_a_variable_not_cleared_before_the_agi_is_reported(name: str) -> None:
    broken = TEXT.replace(f" same => n,Set({name}=)\n", "")
    problems = dialplan.check(shipped(broken), COUNTRY)
    assert [p.message.split()[0] for p in problems] == [name]


def test_an_emergency_list_that_is_not_the_engines_is_reported() -> None:
    broken = TEXT.replace('"${EXTEN}" = "112"]?emergency', '"${EXTEN}" = "112" | "${EXTEN}" = "911"]?emergency')
    assert broken != TEXT
    (problem,) = dialplan.check(shipped(broken), COUNTRY)
    assert "not emergency there 911" in problem.message
    missing = TEXT.replace('"${EXTEN}" = "17" | ', "")
    (problem,) = dialplan.check(shipped(missing), COUNTRY)
    assert "missing 17" in problem.message


def test_the_emergency_list_is_what_the_engine_classifies_as_emergency() -> None:
    numbers = dialplan.emergency_numbers(COUNTRY)
    assert "112" in numbers
    for n in numbers:
        assert classify(n, COUNTRY).kind is Kind.EMERGENCY
    # and nothing else of those lengths is: every other 2- and 3-digit string is not emergency
    others = {str(i).zfill(k) for k in (2, 3) for i in range(10**k)} - set(numbers)
    assert not any(classify(n, COUNTRY).kind is Kind.EMERGENCY for n in others)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (" same => n,Dial(PJSIP/x,60,L(${RATING_MAXMS}))", "Dial option L("),
        (" same => n,Set(TIMEOUT(absolute)=${RATING_GUARDSEC})", "without checking it is not empty"),
        (" same => n,Goto(rating-nowhere,s,1)", "no context [rating-nowhere]"),
        (" same => n,GotoIf($[1]?allowed:nolabel)", "no label 'nolabel'"),
        (" same => n,Goto(T,5)", "has no priority 5"),
    ],
)
def test_other_mistakes_are_reported(line: str, message: str) -> None:
    broken = TEXT.replace(" same => n,Hangup(38)\n", f"{line}\n same => n,Hangup(38)\n")
    problems = dialplan.check(shipped(broken), COUNTRY)
    assert any(message in p.message for p in problems), problems


def test_reasons_the_dialplan_branches_on_are_the_contracts() -> None:
    import re

    named = set(re.findall(r'"\$\{RATING_REASON\}" = "([a-z_]+)"', TEXT))
    assert named == {r.value for r in contract.NO_FUNDS_REASONS | contract.LIMIT_REASONS}


@pytest.mark.parametrize(
    ("pattern", "exten", "matches"),
    [
        ("_X.", "112", True),
        ("_X.", "1", False),  # '.' is one or more
        ("_X!", "1", True),
        ("_X.", "unreachable", False),
        ("_0[1-9]XXXXXXXX", "0612345678", True),
        ("_0[1-9]XXXXXXXX", "0012345678", False),
        ("_NXX", "212", True),
        ("_NXX", "112", False),
        ("_Z", "0", False),
    ],
)
def test_extension_patterns(pattern: str, exten: str, matches: bool) -> None:
    assert dialplan.pattern_matches(pattern, exten) is matches


def test_substitution_goes_from_the_inside_out() -> None:
    v = {"A": "", "B": "x"}
    assert substitute('${IF($["${A}" != ""]?${A}:${B})}', v) == "x"
    assert substitute('$["${B}" = "x" & "${A}" = ""]', v) == "1"
    assert substitute('$["${B}" = "y" | "${A}" != ""]', v) == "0"


# ---------------------------------------------------------------- walks through the shipped dialplan


def _walk(dialed: str, engine: dict[str, str] | None, **channel: str):  # type: ignore[no-untyped-def]
    return walk(shipped(), "rating-outbound", dialed, {**GLOBALS, "CALLERID(num)": "201", **channel}, lambda _v: engine)


@pytest.mark.parametrize("number", dialplan.emergency_numbers(COUNTRY))
@pytest.mark.parametrize("agi", [None, {}])  # connect failed; connected but answered nothing
def test_with_the_engine_down_emergency_calls_are_dialed(number: str, agi: dict[str, str] | None) -> None:
    w = _walk(number, agi)
    assert (w.outcome, w.detail) == ("dial", f"PJSIP/{number}@trunk,60")


def test_with_the_engine_down_the_old_dialplan_dropped_emergency_calls() -> None:
    old = TEXT.replace(" same => n,Goto(unreachable)\n", " same => n,Goto(unreachable,1)\n")
    w = walk(dialplan.parse(old), "rating-outbound", "112", {**GLOBALS}, lambda _v: None)
    assert w.outcome == "invalid"


@pytest.mark.parametrize("number", ["0899123456", "0612345678", "911"])
def test_with_the_engine_down_other_calls_are_refused(number: str) -> None:
    w = _walk(number, None)
    assert (w.outcome, w.detail) == ("hangup", "38")
    assert w.played == ["ss-noservice"]


def test_variables_left_on_the_channel_are_not_trusted_when_the_engine_says_nothing() -> None:
    stale = {"RATING_STATUS": "ALLOW", "RATING_REASON": "charged", "RATING_GUARDSEC": "999"}
    w = _walk("0899123456", {}, **stale)
    assert (w.outcome, w.detail) == ("hangup", "38")


@pytest.mark.parametrize(
    "answer",
    [
        contract.answer("ALLOW", Reason.CHARGED, "+33899123456", "180", "pbx1:1.1:1", "120"),
        contract.answer("ALLOW", Reason.INCLUDED, "+33612345678", "", "pbx1:1.1:1"),
        contract.answer("DENY", Reason.INSUFFICIENT_FUNDS, "+33899123456", "", "pbx1:1.1:1"),
    ],
)
def test_an_answer_cut_short_never_dials(answer: list[tuple[str, str]]) -> None:
    """The engine sets its variables one command at a time. Killed between two (a crash, a
    SIGKILL), it leaves Asterisk the first few: that must fail closed, never dial. With
    RATING_STATUS first, "ALLOW" and "charged" alone reached the free branch: a charged call
    dialed with no deadline. So RATING_STATUS goes last, and nothing before it lets a call through."""
    for n in range(len(answer)):  # every cut: the first n commands delivered
        w = _walk("0899123456", dict(answer[:n]))
        assert (w.outcome, w.detail) == ("hangup", "38"), (n, answer[:n])
    whole = _walk("0899123456", dict(answer))
    assert whole.outcome == ("dial" if answer[-1] == (contract.STATUS, "ALLOW") else "hangup")


def test_an_answer_without_a_reason_fails_closed() -> None:
    w = _walk("0899123456", {"RATING_STATUS": "ALLOW"})
    assert (w.outcome, w.detail) == ("hangup", "38")


def test_a_charged_call_gets_its_guard_deadline_and_the_warning_feature() -> None:
    answer = dict(contract.answer("ALLOW", Reason.CHARGED, "+33899123456", "180", "1.1", "120"))
    w = _walk("0899123456", answer, DYNAMIC_FEATURES="apprecord")
    assert (w.outcome, w.detail) == ("dial", "PJSIP/+33899123456@trunk,60,U(rating-paid-time^120)")
    assert w.variables["TIMEOUT(absolute)"] == "180"
    assert w.variables["DYNAMIC_FEATURES"] == "apprecord#rating-warning"
    alone = _walk("0899123456", answer)
    assert alone.variables["DYNAMIC_FEATURES"] == "rating-warning"


@pytest.mark.parametrize("reason", [Reason.INCLUDED, Reason.EMERGENCY])
def test_free_calls_get_no_deadline(reason: Reason) -> None:
    w = _walk("0612345678", dict(contract.answer("ALLOW", reason, "+33612345678", "", "1.1")))
    assert (w.outcome, w.detail) == ("dial", "PJSIP/+33612345678@trunk,60")
    assert "TIMEOUT(absolute)" not in w.variables and "DYNAMIC_FEATURES" not in w.variables


@pytest.mark.parametrize("reason", [r for r in Reason if r not in (Reason.CHARGED, Reason.INCLUDED, Reason.EMERGENCY)])
def test_every_refusal_hangs_up_with_a_prompt(reason: Reason) -> None:
    w = _walk("0899123456", dict(contract.answer("DENY", reason, "+33899123456")))
    assert (w.outcome, w.detail) == ("hangup", "21")
    expected = (
        "vm-nobodyavail&beep"
        if reason in contract.NO_FUNDS_REASONS
        else "all-circuits-busy-now"
        if reason in contract.LIMIT_REASONS
        else "ss-noservice"
    )
    assert w.played == [expected]


def test_the_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dialplan", "check", str(CONF), "--country", "fr"]) == 0
    bad = tmp_path / "extensions.conf"
    bad.write_text(TEXT.replace(" same => n,Goto(unreachable)\n", " same => n,Goto(unreachable,1)\n"))
    assert main(["dialplan", "check", str(bad), "--country", "FR"]) == 1
    assert f"{bad}:" in capsys.readouterr().err
    assert main(["dialplan", "check", str(tmp_path / "missing.conf")]) == 2
    assert main(["dialplan", "emergency", "--country", "ZZ"]) == 2


def test_the_emergency_command_prints_the_shipped_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dialplan", "emergency", "--country", COUNTRY]) == 0
    line = capsys.readouterr().out.strip()
    assert line in TEXT


def test_the_warning_sound_is_8khz_mono_signed_linear_and_matches_its_generator() -> None:
    import importlib.util
    import wave

    path = ROOT / "asterisk_conf" / "sounds" / "rating-warning.wav"
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getcomptype()) == (1, 2, 8000, "NONE")
        frames = w.readframes(w.getnframes())
        assert 0.5 <= w.getnframes() / 8000 <= 3.0
    spec = importlib.util.spec_from_file_location("make_warning", path.with_name("make_warning.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shipped = [int.from_bytes(frames[i : i + 2], "little", signed=True) for i in range(0, len(frames), 2)]
    expected = module.samples()
    assert len(shipped) == len(expected) and max(abs(a - b) for a, b in zip(shipped, expected, strict=True)) <= 1
    assert max(map(abs, shipped)) > 5000  # audible


def test_the_warning_feature_matches_the_engine_and_the_dialplan() -> None:
    from rating_engine.config import EngineSection

    features = (ROOT / "asterisk_conf" / "features.conf").read_text()
    line = next(x for x in features.splitlines() if x.startswith("rating-warning =>"))
    digit, activate_on, app, sound = (p.strip() for p in line.split("=>", 1)[1].split(","))
    assert (digit, activate_on, app) == (EngineSection().warning_digit, "self", "Playback")
    assert (ROOT / "asterisk_conf" / "sounds" / f"{sound.rsplit('/', 1)[-1]}.wav").is_file()
    assert "rating-warning))" in TEXT  # the dialplan enables it by that name
    modules = (ROOT / "asterisk_conf" / "modules.conf").read_text()
    assert "app_senddtmf.so" in modules and "format_wav.so" in modules


@pytest.mark.parametrize(("quota", "timeout", "result"), [("120", "120", None), ("", None, "ABORT")])
def test_the_paid_time_starts_at_the_answer_on_the_called_channel_and_never_without_a_limit(
    quota: str, timeout: str | None, result: str | None
) -> None:
    w = walk(shipped(), "rating-paid-time", "s", {"ARG1": quota}, lambda _v: None)
    assert w.outcome == "return"
    assert w.variables.get("TIMEOUT(absolute)") == timeout and w.variables.get("GOSUB_RESULT") == result


def test_a_u_routine_that_does_not_exist_is_reported() -> None:
    broken = TEXT.replace("U(rating-paid-time^", "U(rating-paid-tme^")
    (problem,) = dialplan.check(shipped(broken), COUNTRY)
    assert "U(rating-paid-tme" in problem.message and "no context" in problem.message


def test_the_cdr_mapping_writes_the_columns_the_engine_reads() -> None:
    import csv
    import re

    from rating_engine.asterisk.cdr import COLUMNS, CdrRecords, format_row, parse_row

    text = (ROOT / "asterisk_conf" / "cdr_custom.conf").read_text()
    mapping = next(x for x in text.splitlines() if x.startswith("rating-engine.csv =>"))
    fields = re.findall(r"CSV_QUOTE\(\$\{CDR\((\w+)", mapping)
    assert tuple(fields) == COLUMNS
    assert "CDR(answer,u)" in mapping and "CDR(end,u)" in mapping  # Unix times, not local text
    line = '"1795535109.42","1795535112.250000","1795535140.750000","28","ANSWERED","PJSIP/trunk-00000007"'
    record = parse_row(next(csv.reader([line])))
    assert record is not None and (record.answer, record.billsec) == (1795535112.25, 28)
    assert format_row(record) == line + "\n"  # what the simulator and the tests write, read back
    assert CdrRecords(ROOT / "no-such.csv").find(["x"]) == {}
