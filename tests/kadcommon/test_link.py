"""Share links: what is formatted parses back, and malformed links are refused with a reason."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kadcommon.link import MAX_PEERS, Link, LinkError, format_link, is_link, parse_link

FID = "ab" * 32
GOOD = f"kadshare:file?id={FID}&name=Plage%20%C3%A0%20Nice.jpg&size=1234&peer=127.0.0.1:8468"

names = st.text(
    alphabet=st.characters(min_codepoint=32, blacklist_categories=("Cs",),
                           blacklist_characters="\x7f"),
    min_size=1, max_size=80)
hosts = st.one_of(
    st.from_regex(r"[a-z][a-z0-9.-]{0,30}", fullmatch=True),
    st.ip_addresses().map(str),
)
peers = st.tuples(hosts, st.integers(1, 65535))
links = st.builds(
    Link,
    file_id=st.binary(min_size=32, max_size=32).map(bytes.hex),
    name=names,
    size=st.integers(0, 2**63 - 1),
    peers=st.lists(peers, min_size=1, max_size=MAX_PEERS).map(tuple),
    kind=st.sampled_from(["file", "folder"]),
)


@settings(max_examples=300, deadline=None)
@given(links)
def test_round_trip(link: Link) -> None:
    text = format_link(link)
    assert is_link(text)
    assert " " not in text and "\n" not in text  # one pasteable token
    assert parse_link(text) == link


def test_known_link_parses() -> None:
    link = parse_link(GOOD)
    assert link == Link(FID, "Plage à Nice.jpg", 1234, (("127.0.0.1", 8468),))
    assert parse_link("KadShare:" + GOOD[len("kadshare:"):]).file_id == FID  # scheme: any case
    assert parse_link(GOOD.replace(FID, FID.upper())).file_id == FID


def test_ipv6_peer_and_several_peers() -> None:
    link = Link(FID, "a b&c=d?.txt", 0, (("::1", 9000), ("peer.example", 8468)), "folder")
    text = format_link(link)
    assert "peer=[::1]:9000" in text and text.startswith("kadshare:folder?")
    assert parse_link(text) == link


@pytest.mark.parametrize(("text", "reason"), [
    ("", "starts with kadshare:"),
    ("magnet:?xt=urn:btih:abc", "starts with kadshare:"),
    ("kadshare:disk?id=x", "kind"),
    ("kadshare:file", r"no \?id="),
    (GOOD.replace(FID, FID[:-1]), "link id"),
    (GOOD.replace(FID, "zz" * 32), "link id"),
    (GOOD.replace("size=1234", "size=-1"), "size"),
    (GOOD.replace("size=1234", "size=1e3"), "size"),
    (GOOD.replace("size=1234", "size=99999999999999999999"), "size"),
    (GOOD.replace("&size=1234", ""), "lacks its 'size'"),
    (GOOD.replace("name=Plage%20%C3%A0%20Nice.jpg", "name="), "name"),
    (GOOD.replace("name=Plage", "name=%0APlage"), "control character"),
    (GOOD.replace("%C3%A0", "%C3"), "malformed"),
    (GOOD + "&id=" + FID, "twice"),
    (GOOD + "&tracker=x", "unknown field"),
    (GOOD.replace("&peer=127.0.0.1:8468", ""), "peer addresses"),
    (GOOD.replace("8468", "0"), "peer"),
    (GOOD.replace("127.0.0.1:8468", "::1:8468"), "peer"),
    (GOOD.replace("127.0.0.1:8468", "[nothost]:1"), "peer"),
    (GOOD + "&peer=h:1" * MAX_PEERS, "1..8 peer addresses"),
    (GOOD + "&peer=h:1" * 50, "malformed"),
    (GOOD + "&name=" + "x" * 5000, "longer than"),
    (GOOD + "&&", "malformed"),
])
def test_malformed_links_are_refused(text: str, reason: str) -> None:
    with pytest.raises(LinkError, match=reason):
        parse_link(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_parses_or_gives_link_error(text: str) -> None:
    try:
        parse_link("kadshare:file?" + text)
    except LinkError:
        pass


def test_format_refuses_what_parse_would() -> None:
    with pytest.raises(LinkError, match="peer addresses"):
        format_link(Link(FID, "x", 1, ()))
    with pytest.raises(LinkError, match="link id"):
        format_link(Link("12", "x", 1, (("h", 1),)))
