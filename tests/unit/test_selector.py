"""Selector language: DESIGN.md table, errors, and property tests against a reference."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logrouter.selector import Selector, SelectorError, compile_selector
from logrouter.severity import split_routing_key

SEVERITIES = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]
ALIASES = {
    "error": "err",
    "critical": "crit",
    "warn": "warning",
    "fatal": "crit",
    "panic": "emerg",
    "emergency": "emerg",
}
FACILITIES = ["auth", "authpriv", "mail", "kern", "local0", "billing", "web-1", "x_y"]


# --- an independent reference reading of the rules ----------------------------------


def matches_key(sel: Selector, routing_key: str) -> bool:
    """Whether the routing key ``facility.severity`` (aliases accepted) is selected."""
    parts = split_routing_key(routing_key)
    return parts is not None and sel.matches(*parts)


def _rank(word: str) -> int:
    return SEVERITIES.index(ALIASES.get(word.lower(), word.lower()))


def _part_selects(sev_text: str, severity: str) -> tuple[bool, bool]:
    """For one part's severity text: (is the part negative?, does it name ``severity``?)."""
    if sev_text == "*":
        return False, True
    if sev_text == "none":
        return True, True
    negative = sev_text.startswith("!")
    body = sev_text[1:] if negative else sev_text
    if body.startswith("="):
        return negative, _rank(body[1:]) == SEVERITIES.index(severity)
    # "err" names err and everything more severe (lower rank)
    return negative, SEVERITIES.index(severity) <= _rank(body)


def reference_matches(selector: str, facility: str, severity: str) -> bool:
    """Walk the parts left to right for one key, as rsyslog does per facility/priority."""
    if selector.strip() == "#":
        return True
    parts = [p.strip() for p in selector.split(";")]
    selected = False
    for index, part in enumerate(parts):
        fac_text, _, sev_text = part.rpartition(".")
        facilities = [f.strip() for f in fac_text.split(",")]
        applies = fac_text.strip() == "*" or facility in facilities
        negative, named = _part_selects(sev_text.strip(), severity)
        if index == 0 and negative and applies:
            selected = True  # a leading negative part starts from everything
        if not applies:
            continue
        if negative and named:
            selected = False
        elif not negative and named:
            selected = True
    return selected


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: '*' is exactly one word, '#' zero or more words."""

    def walk(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(walk(p[1:], k[i:]) for i in range(len(k) + 1))
        if not k:
            return False
        return (p[0] == "*" or p[0] == k[0]) and walk(p[1:], k[1:])

    return walk(pattern.split("."), key.split("."))


def accepted_keys(sel: Selector, facilities: list[str]) -> set[str]:
    return {f"{f}.{s}" for f in facilities for s in SEVERITIES if sel.matches(f, s)}


# --- strategies -------------------------------------------------------------------------

severity_words = st.sampled_from(SEVERITIES + list(ALIASES) + ["ERR", "Info"])
severity_texts = st.one_of(
    st.just("*"),
    st.just("none"),
    st.builds(lambda p, w: p + w, st.sampled_from(["", "=", "!", "!="]), severity_words),
)
facility_texts = st.one_of(
    st.just("*"),
    st.lists(st.sampled_from(FACILITIES[:5]), min_size=1, max_size=3).map(",".join),
)
parts = st.builds(lambda f, s: f"{f}.{s}", facility_texts, severity_texts)
selectors = st.one_of(st.just("#"), st.lists(parts, min_size=1, max_size=5).map(";".join))
# keys over named facilities plus some never named in selectors ("billing", ...)
keys = st.tuples(st.sampled_from(FACILITIES), st.sampled_from(SEVERITIES))


def compile_or_none(text: str) -> Selector | None:
    """The compiled selector, or None when it selects nothing (an error by design)."""
    try:
        return compile_selector(text)
    except SelectorError as exc:
        assert "selects nothing" in str(exc)
        assert not any(reference_matches(text, f, s) for f in FACILITIES for s in SEVERITIES)
        return None


PROPS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(selectors, st.lists(keys, min_size=1, max_size=20))
def test_matches_agrees_with_reference(text: str, sample: list[tuple[str, str]]) -> None:
    """matches() gives the same answer as the brute-force reading of the rules."""
    sel = compile_or_none(text)
    if sel is None:
        return
    for facility, severity in sample:
        assert sel.matches(facility, severity) == reference_matches(text, facility, severity), (
            text,
            facility,
            severity,
        )
        assert matches_key(sel, f"{facility}.{severity}") == sel.matches(facility, severity)


@PROPS
@given(selectors)
def test_bindings_never_miss_an_accepted_key(text: str) -> None:
    """Every key matches() accepts is routed to the queue by at least one binding."""
    sel = compile_or_none(text)
    if sel is None:
        return
    for key in accepted_keys(sel, FACILITIES):
        assert any(topic_matches(b, key) for b in sel.bindings), (text, key, sel.bindings)


@PROPS
@given(selectors)
def test_bindings_exact_and_minimal_when_expressible(text: str) -> None:
    """Exact selectors bind nothing extra, and no binding of any selector is redundant."""
    sel = compile_or_none(text)
    if sel is None:
        return
    universe = FACILITIES
    accepted = accepted_keys(sel, universe)
    bound = {
        f"{f}.{s}"
        for f in universe
        for s in SEVERITIES
        if any(topic_matches(b, f"{f}.{s}") for b in sel.bindings)
    }
    if sel.exact:
        assert bound == accepted, (text, sel.bindings)
    # each binding is needed: dropping it loses an accepted key (checked on a universe
    # that includes facilities no selector names, standing for "any other facility")
    for binding in sel.bindings:
        rest = [b for b in sel.bindings if b != binding]
        lost = {k for k in accepted if not any(topic_matches(b, k) for b in rest)}
        assert lost, (text, binding, sel.bindings)
    assert list(sel.bindings) == sorted(set(sel.bindings))


def lower_bound(text: str) -> int:
    """Fewest topic patterns that can select exactly what the reference accepts.

    Only '*.s' (or '#') reaches the facilities a selector never names, one per
    severity; keys of a named facility F beyond those need 'F.s' each, or one 'F.*'
    when F takes every severity.
    """
    other = "zz-never-named"
    wildcard = {s for s in SEVERITIES if reference_matches(text, other, s)}
    if len(wildcard) == len(SEVERITIES):
        return 1
    bound = len(wildcard)
    for facility in FACILITIES[:5]:
        own = {s for s in SEVERITIES if reference_matches(text, facility, s)}
        extra = own - wildcard
        if extra:
            bound += 1 if len(own) == len(SEVERITIES) else len(extra)
    return bound


@PROPS
@given(selectors)
def test_exact_bindings_reach_the_lower_bound(text: str) -> None:
    """An expressible selector compiles to as few bindings as any exact binding set can have."""
    sel = compile_or_none(text)
    if sel is None or not sel.exact:
        return
    assert len(sel.bindings) == lower_bound(text), (text, sel.bindings)


@PROPS
@given(selectors)
def test_inexact_only_when_a_facility_is_cut_from_the_wildcard(text: str) -> None:
    """exact is False only when some facility gets less than '*' selected for all others."""
    sel = compile_or_none(text)
    if sel is None:
        return
    other = "zz-never-named"
    wildcard = {s for s in SEVERITIES if sel.matches(other, s)}
    cut = any(not wildcard <= {s for s in SEVERITIES if sel.matches(f, s)} for f in FACILITIES[:5])
    assert sel.exact == (not cut)


# --- the DESIGN.md table ----------------------------------------------------------------

DESIGN_TABLE = [
    ("*.err", ["*.alert", "*.crit", "*.emerg", "*.err"]),
    ("auth,authpriv.*", ["auth.*", "authpriv.*"]),
    ("*.=info", ["*.info"]),
    ("*.!err", ["*.debug", "*.info", "*.notice", "*.warning"]),
    ("*.!=debug", ["*.alert", "*.crit", "*.emerg", "*.err", "*.info", "*.notice", "*.warning"]),
    ("*.*", ["#"]),
    ("#", ["#"]),
    (
        "*.info;mail.none",
        ["*.alert", "*.crit", "*.emerg", "*.err", "*.info", "*.notice", "*.warning"],
    ),
]


@pytest.mark.parametrize(("text", "expected"), DESIGN_TABLE)
def test_design_table_bindings(text: str, expected: list[str]) -> None:
    """Each row of the DESIGN.md selector table compiles to the documented bindings."""
    assert list(compile_selector(text).bindings) == expected


def test_err_means_err_and_more_severe() -> None:
    """'*.err' accepts err, crit, alert, emerg of any facility and nothing less severe."""
    sel = compile_selector("*.err")
    assert [s for s in SEVERITIES if sel.matches("billing", s)] == SEVERITIES[:4]


def test_facility_list_selects_only_those_facilities() -> None:
    """'auth,authpriv.*' accepts every severity of auth and authpriv, nothing of mail."""
    sel = compile_selector("auth,authpriv.*")
    assert all(sel.matches("auth", s) and sel.matches("authpriv", s) for s in SEVERITIES)
    assert not any(sel.matches("mail", s) for s in SEVERITIES)


def test_exact_severity() -> None:
    """'*.=info' accepts info only."""
    sel = compile_selector("*.=info")
    assert [s for s in SEVERITIES if sel.matches("kern", s)] == ["info"]


def test_bang_is_less_severe_than() -> None:
    """'*.!err' accepts warning, notice, info, debug only."""
    sel = compile_selector("*.!err")
    assert [s for s in SEVERITIES if sel.matches("kern", s)] == SEVERITIES[4:]


def test_bang_equals_is_all_but() -> None:
    """'*.!=debug' accepts the seven other severities."""
    sel = compile_selector("*.!=debug")
    assert [s for s in SEVERITIES if sel.matches("kern", s)] == SEVERITIES[:7]


@pytest.mark.parametrize("text", ["*.*", "#", "*.debug", " # "])
def test_everything(text: str) -> None:
    """'*.*', '#' and '*.debug' select every key and bind '#'."""
    sel = compile_selector(text)
    assert sel.bindings == ("#",) and sel.exact
    assert all(sel.matches(f, s) for f in FACILITIES for s in SEVERITIES)


def test_none_removes_a_facility_and_the_sink_filters() -> None:
    """'*.info;mail.none' binds a superset; matches() drops mail, keeps the rest."""
    sel = compile_selector("*.info;mail.none")
    assert not sel.exact
    assert not sel.matches("mail", "err")
    assert sel.matches("auth", "err") and sel.matches("auth", "info")
    assert not sel.matches("auth", "debug")
    assert any(topic_matches(b, "mail.err") for b in sel.bindings)  # superset on the broker


def test_later_positive_part_adds() -> None:
    """'*.err;mail.*' adds every mail severity with one extra binding."""
    sel = compile_selector("*.err;mail.*")
    assert sel.bindings == ("*.alert", "*.crit", "*.emerg", "*.err", "mail.*")
    assert sel.matches("mail", "debug") and not sel.matches("auth", "debug")


def test_later_negative_part_removes_from_earlier() -> None:
    """'mail.*;mail.!err' keeps mail below err only, as exact bindings."""
    sel = compile_selector("mail.*;mail.!err")
    assert sel.bindings == ("mail.debug", "mail.info", "mail.notice", "mail.warning")
    assert sel.exact


def test_negative_part_only_touches_its_facilities() -> None:
    """'*.info;mail.!=info' drops mail.info but keeps mail.err and auth.info."""
    sel = compile_selector("*.info;mail.!=info")
    assert not sel.matches("mail", "info")
    assert sel.matches("mail", "err") and sel.matches("auth", "info")


@pytest.mark.parametrize(
    ("text", "word"),
    [("*.error", "err"), ("*.warn", "warning"), ("*.critical", "crit"), ("*.fatal", "crit")],
)
def test_aliases(text: str, word: str) -> None:
    """Severity aliases mean their keyword (error=err, warn=warning, ...)."""
    alias, keyword = compile_selector(text), compile_selector(f"*.{word}")
    assert alias.bindings == keyword.bindings
    assert all(alias.matches("x", s) == keyword.matches("x", s) for s in SEVERITIES)


def test_matches_key_accepts_alias_severity_in_foreign_keys() -> None:
    """A foreign key 'mail.error' is read as mail.err (split_routing_key, then matches)."""
    assert matches_key(compile_selector("mail.*"), "mail.error")
    assert not matches_key(compile_selector("mail.*"), "mail.bogus")
    assert not matches_key(compile_selector("#"), "nodot")


@pytest.mark.parametrize(
    ("text", "word", "says"),
    [
        ("*.eror", "eror", "allowed: emerg alert crit err"),
        ("Mail.err", "Mail", "did you mean 'mail'"),
        ("ma:il.err", "ma:il", "[a-z0-9_-]"),
        ("mail.err.x", "mail.err", "[a-z0-9_-]"),
        ("mail", "mail", "FACILITY.SEVERITY"),
        (".err", ".err", "FACILITY.SEVERITY"),
        ("mail,*.err", "*", "'*' alone"),
        ("*.=*", "=*", "no prefix"),
        ("*.!none", "!none", "no prefix"),
        ("*.!", "!", "severity missing"),
        ("*.err;;mail.*", None, "stray ';'"),
        ("", None, "empty selector"),
        ("mail.none", None, "selects nothing"),
        ("*.err;*.none", None, "selects nothing"),
        ("mail,,auth.err", None, "empty facility"),
    ],
)
def test_errors_name_the_word(text: str, word: str | None, says: str) -> None:
    """Bad selectors raise SelectorError naming the offending word and what is allowed."""
    with pytest.raises(SelectorError) as info:
        compile_selector(text)
    assert info.value.word == word
    assert says in str(info.value)
