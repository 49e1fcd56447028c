"""Online accounts: a normalised platform name and handle, from either or from a profile URL.

Two sightings of one account must compare equal however they were written: `@Some.Name` on
"Insta", `instagram:some.name` and `https://www.instagram.com/some.name/` are one account.
Platforms that ignore case in user names are case-folded; unknown platforms keep the handle's
case, since folding could join two different accounts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit


class AccountError(ValueError):
    """Text that is not an online account; the message says what is wrong."""


# Names people write for a platform, folded to one name each.
_ALIASES: dict[str, str] = {
    "x": "x",
    "twitter": "x",
    "tweeter": "x",
    "fb": "facebook",
    "facebook": "facebook",
    "insta": "instagram",
    "ig": "instagram",
    "instagram": "instagram",
    "tiktok": "tiktok",
    "tt": "tiktok",
    "snap": "snapchat",
    "snapchat": "snapchat",
    "sc": "snapchat",
    "telegram": "telegram",
    "tg": "telegram",
    "onlyfans": "onlyfans",
    "whatsapp": "whatsapp",
    "wa": "whatsapp",
    "youtube": "youtube",
    "yt": "youtube",
}

# Hosts of known platforms (after dropping www., m., mobile. and web.).
_HOSTS: dict[str, str] = {
    "instagram.com": "instagram",
    "instagr.am": "instagram",
    "facebook.com": "facebook",
    "fb.com": "facebook",
    "fb.me": "facebook",
    "tiktok.com": "tiktok",
    "x.com": "x",
    "twitter.com": "x",
    "onlyfans.com": "onlyfans",
    "snapchat.com": "snapchat",
    "t.me": "telegram",
    "telegram.me": "telegram",
    "telegram.dog": "telegram",
    "wa.me": "whatsapp",
    "youtube.com": "youtube",
}

# What a handle may be on each known platform (after folding); the platforms' own rules,
# loosened a little where a platform has changed them over time.
_HANDLE_RULES: dict[str, tuple[re.Pattern[str], str]] = {
    "instagram": (re.compile(r"[a-z0-9._]{1,30}"), "1-30 letters, digits, '.' or '_'"),
    "x": (re.compile(r"[a-z0-9_]{1,15}"), "1-15 letters, digits or '_'"),
    # a user name (dots and case do not count on Facebook) or a numeric profile id
    "facebook": (re.compile(r"[a-z0-9]{1,50}"), "letters and digits, or a numeric profile id"),
    "tiktok": (re.compile(r"[a-z0-9._]{2,24}"), "2-24 letters, digits, '.' or '_'"),
    "snapchat": (re.compile(r"[a-z][a-z0-9._-]{2,14}"), "3-15 characters starting with a letter"),
    "telegram": (re.compile(r"[a-z][a-z0-9_]{3,31}"), "4-32 letters, digits or '_'"),
    "onlyfans": (re.compile(r"[a-z0-9._-]{1,50}"), "letters, digits, '.', '_' or '-'"),
    "whatsapp": (re.compile(r"[0-9]{7,15}"), "an international phone number in digits"),
    "youtube": (re.compile(r"[a-z0-9._-]{3,30}"), "3-30 letters, digits, '.', '_' or '-'"),
}

# The platforms this module knows the rules of.
KNOWN_PLATFORMS = frozenset(_ALIASES.values())

# Platforms whose handles ignore case; unknown platforms are not folded.
_CASE_INSENSITIVE = frozenset(_HANDLE_RULES)

# Path segments that are pages of a platform, not accounts.
_NOT_ACCOUNTS: dict[str, frozenset[str]] = {
    "instagram": frozenset({"p", "reel", "reels", "explore", "accounts", "direct", "tv"}),
    "x": frozenset({"i", "home", "search", "intent", "share", "hashtag", "explore", "settings"}),
    "facebook": frozenset({"groups", "pages", "events", "watch", "marketplace", "share", "login"}),
    "telegram": frozenset({"joinchat", "addstickers", "share"}),
    "onlyfans": frozenset({"my", "login"}),
}

# Second-level labels under which registrations are made (example.co.uk -> example.co.uk).
_SECOND_LEVEL = frozenset({"co", "org", "me", "ltd", "plc", "net", "ac", "gov", "com", "nhs"})

_PLATFORM = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_GENERIC_HANDLE = re.compile(r"[^\s?#/][^\s?#]{0,199}")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class OnlineAccount:
    """One account: `platform` and `handle` in normal form; build with `of` or `parse`."""

    platform: str
    handle: str

    @classmethod
    def of(cls, platform: str, handle: str) -> OnlineAccount:
        name = normalise_platform(platform)
        return cls(name, normalise_handle(name, handle))

    @classmethod
    def parse(cls, text: str) -> OnlineAccount:
        """A profile URL or `platform:handle`."""
        return parse_account(text)

    @property
    def key(self) -> str:
        """`instagram:some.name`: the form stored, matched and shown."""
        return f"{self.platform}:{self.handle}"

    def __str__(self) -> str:
        return self.key


def normalise_platform(text: str) -> str:
    """`" Insta "` -> `instagram`; a platform's host also names it; unknown names kept, lower case."""
    raw = (text or "").strip().lower()
    if not raw:
        raise AccountError("platform is empty")
    squeezed = re.sub(r"[\s_-]+", "", raw)
    if squeezed in _ALIASES:
        return _ALIASES[squeezed]
    host = _bare_host(raw)
    if host in _HOSTS:
        return _HOSTS[host]
    name = re.sub(r"\s+", "-", raw)
    if not _PLATFORM.fullmatch(name):
        raise AccountError(f"platform {text!r} is not a name (letters, digits, '.', '_' or '-', up to 63)")
    return name


def normalise_handle(platform: str, text: str) -> str:
    """The handle in the platform's normal form; `platform` must already be normalised."""
    raw = unquote((text or "").strip())
    if raw.startswith("@"):
        raw = raw[1:].strip()
    if not raw:
        raise AccountError(f"{platform} handle is empty")
    if platform in _CASE_INSENSITIVE:
        raw = raw.lower()
    if platform == "facebook":
        raw = raw.replace(".", "")
    if platform == "whatsapp":
        raw = re.sub(r"[\s()+-]", "", raw)
    rule = _HANDLE_RULES.get(platform)
    if rule is not None:
        pattern, says = rule
        if not pattern.fullmatch(raw):
            raise AccountError(f"{text!r} is not a {platform} handle (expected {says})")
    elif not _GENERIC_HANDLE.fullmatch(raw):
        raise AccountError(f"{text!r} is not a handle (up to 200 characters, no spaces, '?' or '#')")
    return raw


def parse_account(text: str) -> OnlineAccount:
    """A profile URL (`https://www.instagram.com/some.name/`, `t.me/name`) or `platform:handle`."""
    raw = (text or "").strip()
    if not raw:
        raise AccountError("account is empty: expected a profile URL or platform:handle")
    if _SCHEME.match(raw):
        return account_from_url(raw)
    colon, slash = raw.find(":"), raw.find("/")
    if slash != -1 and (colon == -1 or slash < colon):
        return account_from_url("https://" + raw)
    if colon > 0:
        return OnlineAccount.of(raw[:colon], raw[colon + 1 :])
    raise AccountError(f"{text!r} is not an account: expected a profile URL or platform:handle")


def account_from_url(url: str) -> OnlineAccount:
    """The platform and handle a profile URL names."""
    raw = (url or "").strip()
    if not _SCHEME.match(raw):
        raw = "https://" + raw
    try:
        parts = urlsplit(raw)
        host = (parts.hostname or "").lower()
    except ValueError as exc:
        raise AccountError(f"{url!r} is not a URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise AccountError(f"{url!r} is not a web address (scheme {parts.scheme!r})")
    if not host or "." not in host:
        raise AccountError(f"{url!r} has no host")
    bare = _bare_host(host)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    platform = _HOSTS.get(bare)
    if platform is None:
        platform = _registrable(bare, url)
        if not segments:
            raise AccountError(f"{url!r} names a site ({platform}) but no account on it")
        # an unknown site's profile path is its handle; its case is kept
        return OnlineAccount.of(platform, "/".join(segments))
    handle = _handle_in_path(platform, segments, parse_qs(parts.query), url)
    return OnlineAccount.of(platform, handle)


def _handle_in_path(platform: str, segments: list[str], query: dict[str, list[str]], url: str) -> str:
    first = segments[0] if segments else ""
    if platform == "facebook":
        if first == "profile.php":
            ids = query.get("id", [])
            if not ids or not ids[0].isdigit():
                raise AccountError(f"{url!r}: profile.php needs a numeric id=")
            return ids[0]
        if first == "people" and len(segments) >= 3:
            return segments[2]
    if platform == "tiktok":
        if not first.startswith("@"):
            raise AccountError(f"{url!r} is not a TikTok profile (expected /@name)")
        return first
    if platform == "snapchat":
        if first == "add" and len(segments) >= 2:
            return segments[1]
        if first.startswith("@"):
            return first
        raise AccountError(f"{url!r} is not a Snapchat profile (expected /add/name)")
    if platform == "telegram" and first == "s" and len(segments) >= 2:
        return segments[1]
    if platform == "instagram" and first == "stories" and len(segments) >= 2:
        return segments[1]
    if platform == "youtube":
        if first.startswith("@"):
            return first
        raise AccountError(f"{url!r} is not a YouTube handle (expected /@name)")
    if not first:
        raise AccountError(f"{url!r} names {platform} but no account on it")
    if first.lower() in _NOT_ACCOUNTS.get(platform, frozenset()) or first.startswith("+"):
        raise AccountError(f"{url!r} is a {platform} page ({first!r}), not an account")
    return first


def _bare_host(host: str) -> str:
    host = host.strip().strip(".").lower()
    for prefix in ("www.", "m.", "mobile.", "web."):
        if host.startswith(prefix):
            return host[len(prefix) :]
    return host


def _registrable(host: str, url: str) -> str:
    """`escorts.example.co.uk` -> `example.co.uk`; `sub.example.com` -> `example.com`."""
    labels = host.split(".")
    if any(not label for label in labels):
        raise AccountError(f"{url!r} has a malformed host {host!r}")
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])
