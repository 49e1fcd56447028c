"""Online accounts: platform names, handles and profile URLs to one normal form."""

from __future__ import annotations

import re

import pytest
from toex_kernel.accounts import (
    AccountError,
    OnlineAccount,
    account_from_url,
    normalise_handle,
    normalise_platform,
    parse_account,
)


@pytest.mark.parametrize(
    ("written", "platform"),
    [
        ("twitter", "x"),
        ("X", "x"),
        ("Twitter.com", "x"),
        ("fb", "facebook"),
        (" Facebook ", "facebook"),
        ("insta", "instagram"),
        ("IG", "instagram"),
        ("www.instagram.com", "instagram"),
        ("Tik Tok", "tiktok"),
        ("tik-tok", "tiktok"),
        ("Snap", "snapchat"),
        ("TG", "telegram"),
        ("OnlyFans", "onlyfans"),
        ("AdultWork", "adultwork"),
        ("Vivastreet.co.uk", "vivastreet.co.uk"),
        ("Some Forum", "some-forum"),
    ],
)
def test_platform_names_fold_to_one(written: str, platform: str) -> None:
    assert normalise_platform(written) == platform


@pytest.mark.parametrize(
    ("written", "says"),
    [("", "platform is empty"), ("   ", "platform is empty"), ("ex/ample", "is not a name")],
)
def test_bad_platform_names_are_refused(written: str, says: str) -> None:
    with pytest.raises(AccountError, match=re.escape(says)):
        normalise_platform(written)


@pytest.mark.parametrize(
    ("platform", "handle", "key"),
    [
        ("instagram", "@Some.Name", "instagram:some.name"),
        ("insta", " some.name ", "instagram:some.name"),
        ("twitter", "@Jack_99", "x:jack_99"),
        ("facebook", "John.Smith.5", "facebook:johnsmith5"),
        ("fb", "100004123456789", "facebook:100004123456789"),
        ("tiktok", "@Dancer.Girl_1", "tiktok:dancer.girl_1"),
        ("snapchat", "Kitty-Kat", "snapchat:kitty-kat"),
        ("telegram", "@Booking_Agent", "telegram:booking_agent"),
        ("whatsapp", "+44 7700 900123", "whatsapp:447700900123"),
        # unknown platforms keep the case: folding could join two accounts
        ("adultwork", "@LadyJane", "adultwork:LadyJane"),
        ("some forum", "User Name".replace(" ", "_"), "some-forum:User_Name"),
    ],
)
def test_handles_take_the_platform_rules(platform: str, handle: str, key: str) -> None:
    account = OnlineAccount.of(platform, handle)
    assert account.key == key
    assert str(account) == key


@pytest.mark.parametrize(
    ("platform", "handle", "says"),
    [
        ("instagram", "", "instagram handle is empty"),
        ("instagram", "@", "instagram handle is empty"),
        ("instagram", "some name", "is not a instagram handle"),
        ("instagram", "a" * 31, "1-30 letters"),
        ("x", "far_too_long_for_x", "1-15 letters"),
        ("x", "dash-ed", "is not a x handle"),
        ("tiktok", "a", "2-24"),
        ("snapchat", "1abc", "starting with a letter"),
        ("telegram", "abc", "4-32"),
        ("whatsapp", "call me", "phone number in digits"),
        ("adultwork", "two words", "no spaces"),
        ("adultwork", "what?", "is not a handle"),
    ],
)
def test_bad_handles_are_refused_saying_why(platform: str, handle: str, says: str) -> None:
    with pytest.raises(AccountError, match=re.escape(says)):
        OnlineAccount.of(platform, handle)


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("https://www.instagram.com/some.name/", "instagram:some.name"),
        ("http://instagram.com/Some.Name?igshid=abc123", "instagram:some.name"),
        ("https://instagr.am/some.name", "instagram:some.name"),
        ("https://www.instagram.com/stories/some.name/3141592/", "instagram:some.name"),
        ("https://www.facebook.com/profile.php?id=100004123456789", "facebook:100004123456789"),
        ("https://m.facebook.com/john.smith.5", "facebook:johnsmith5"),
        ("https://www.facebook.com/people/John-Smith/100004123456789/", "facebook:100004123456789"),
        ("https://www.tiktok.com/@dancer.girl_1?lang=en", "tiktok:dancer.girl_1"),
        ("https://www.tiktok.com/@Dancer.Girl_1/video/7212345678901234567", "tiktok:dancer.girl_1"),
        ("https://x.com/Jack_99", "x:jack_99"),
        ("https://twitter.com/jack_99/status/20", "x:jack_99"),
        ("https://mobile.twitter.com/JACK_99", "x:jack_99"),
        ("https://onlyfans.com/lady.jane", "onlyfans:lady.jane"),
        ("https://www.snapchat.com/add/kitty-kat", "snapchat:kitty-kat"),
        ("https://snapchat.com/add/Kitty-Kat?share_id=x", "snapchat:kitty-kat"),
        ("https://t.me/Booking_Agent", "telegram:booking_agent"),
        ("https://t.me/s/booking_agent", "telegram:booking_agent"),
        ("https://wa.me/447700900123", "whatsapp:447700900123"),
        ("https://www.youtube.com/@SomeChannel", "youtube:somechannel"),
        # unknown sites: the platform is the site's registrable name, the path the handle
        ("https://www.adultwork.com/LadyJane", "adultwork.com:LadyJane"),
        ("https://escorts.example.co.uk/profiles/4471", "example.co.uk:profiles/4471"),
        ("https://uk.forum.example.com/u/Kat/", "example.com:u/Kat"),
    ],
)
def test_profile_urls_give_platform_and_handle(url: str, key: str) -> None:
    assert account_from_url(url).key == key
    assert parse_account(url).key == key


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("instagram:some.name", "instagram:some.name"),
        ("Insta:@Some.Name", "instagram:some.name"),
        ("twitter: jack_99", "x:jack_99"),
        ("www.instagram.com/some.name", "instagram:some.name"),
        ("t.me/booking_agent", "telegram:booking_agent"),
        ("instagram.com/some.name", "instagram:some.name"),
        ("adultwork:LadyJane", "adultwork:LadyJane"),
    ],
)
def test_text_is_a_url_or_platform_colon_handle(text: str, key: str) -> None:
    assert parse_account(text).key == key
    assert OnlineAccount.parse(text) == parse_account(text)


def test_one_account_however_it_was_written() -> None:
    seen = {
        parse_account("https://www.instagram.com/Some.Name/"),
        parse_account("insta:@some.name"),
        OnlineAccount.of("IG", "SOME.NAME"),
    }
    assert seen == {OnlineAccount("instagram", "some.name")}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "account is empty"),
        ("just-a-word", "expected a profile URL or platform:handle"),
        (":handle", "expected a profile URL or platform:handle"),
        ("instagram:", "instagram handle is empty"),
        ("ftp://instagram.com/some.name", "is not a web address"),
        ("https://localhost/some.name", "has no host"),
        ("https://www.instagram.com/", "names instagram but no account"),
        ("https://www.instagram.com/p/CxYz123/", "is a instagram page ('p')"),
        ("https://twitter.com/i/web/status/1", "is a x page ('i')"),
        ("https://www.facebook.com/profile.php", "profile.php needs a numeric id="),
        ("https://www.facebook.com/profile.php?id=abc", "profile.php needs a numeric id="),
        ("https://www.facebook.com/groups/12345", "is a facebook page ('groups')"),
        ("https://www.tiktok.com/tag/fun", "expected /@name"),
        ("https://www.snapchat.com/discover/x", "expected /add/name"),
        ("https://t.me/joinchat/AbCdEf", "is a telegram page ('joinchat')"),
        ("https://t.me/+AbCdEf", "not an account"),
        ("https://www.example.com/", "names a site (example.com) but no account"),
        ("https://www.instagram.com/some name/", "is not a instagram handle"),
        ("https://[::1/x", "is not a URL"),
    ],
)
def test_bad_accounts_are_refused_saying_why(text: str, says: str) -> None:
    with pytest.raises(AccountError, match=re.escape(says)) as raised:
        parse_account(text)
    assert isinstance(raised.value, ValueError)


def test_handle_rules_need_a_normalised_platform() -> None:
    # known names only after normalise_platform: "insta" here is an unknown platform
    assert normalise_handle("insta", "Some.Name") == "Some.Name"
    assert normalise_handle("instagram", "Some.Name") == "some.name"
