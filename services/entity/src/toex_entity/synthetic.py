"""Generated person records for the default model and the benchmark: UK-style names, dates
of birth, addresses and postcodes, with duplicates carrying the errors real systems make
(typos, phonetic spellings, transposed or swapped date digits, missing values, a moved
address). Deterministic for a seed."""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from dataclasses import dataclass

from toex_entity.domain.records import Address, PersonData

GIVEN = (
    "oliver george harry jack jacob noah charlie thomas oscar william james leo alfie henry joshua freddie "
    "archie ethan isaac alexander joseph edward samuel max daniel arthur lucas mohammed logan theo harrison "
    "benjamin mason sebastian finley adam dylan zachary riley teddy theodore david elijah jaxon toby muhammad "
    "olivia amelia isla ava emily isabella mia poppy ella lily sophia grace evie scarlett ruby chloe "
    "isabelle daisy freya phoebe florence alice charlotte sienna matilda evelyn eva millie sofia lucy elsie "
    "imogen layla rosie maya esme elizabeth lola willow ivy erin holly emilia molly ellie jessica katie "
    "sarah laura rebecca hannah amy gemma kelly lisa michelle nicola claire joanne david paul mark andrew "
    "stephen richard christopher michael peter anthony kevin gary darren craig lee wayne dean jason shaun"
).split()
SURNAMES = (
    "smith jones williams taylor brown davies evans wilson thomas johnson roberts robinson thompson wright "
    "walker white edwards hughes green hall lewis harris clarke patel jackson wood turner martin cooper hill "
    "ward morris moore clark lee king baker harrison morgan allen james scott phillips watson davis parker "
    "price bennett young griffiths mitchell kelly cook carter richardson bailey collins bell shaw murphy "
    "miller cox richards khan marshall anderson simpson ellis adams singh begum wilkinson foster chapman "
    "powell webb rogers gray mason ali hunt hussain campbell matthews owen palmer holmes mills barnes knight "
    "lloyd butler russell barker fisher stevens jenkins murray dixon harvey graham pearson ahmed fletcher "
    "walsh kaur gibson howard andrews stewart elliott reynolds saunders payne fox ford pearce day brooks "
    "west lawrence cole atkinson bradley spencer gill dawson ball burton obrien watts rose booth perry ryan "
    "grant wells armstrong francis rees hayes hart hudson newman barrett webster hunter gregory carr lowe "
    "page marsh riley dunn woods parsons berry stone reid holland hawkins harding porter robertson newton "
    "oconnor kennedy mistry nowak kowalski popescu ionescu silva santos ferreira oliveira rossi bianchi"
).split()
TOWNS = (
    "derby nottingham leicester lincoln northampton chesterfield mansfield loughborough birmingham coventry "
    "wolverhampton walsall dudley solihull cambridge peterborough norwich ipswich luton chelmsford london "
    "croydon cardiff swansea newport brighton reading oxford bristol plymouth exeter newcastle sunderland "
    "manchester liverpool preston bolton leeds sheffield bradford york hull"
).split()
STREETS = "mill church station high park victoria green manor kings queens school chapel north south".split()
KINDS = "street road lane avenue close drive way crescent".split()
_SYLLABLES = "ka ri mo ten sa lo vi na de ru bo shi ta ve no la mi ro zu be ha ko".split()


def _rare_surname(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))


def _postcode(rng: random.Random) -> str:
    area = "".join(rng.choice(string.ascii_uppercase) for _ in range(rng.choice((1, 2))))
    return f"{area}{rng.randint(1, 29)} {rng.randint(0, 9)}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}"


@dataclass(frozen=True)
class Generated:
    record_id: str
    person_id: str  # the true identity: duplicates share it
    person: PersonData


def _original(rng: random.Random) -> PersonData:
    surname = _rare_surname(rng) if rng.random() < 0.3 else rng.choice(SURNAMES)
    year, month, day = rng.randint(1950, 2008), rng.randint(1, 12), rng.randint(1, 28)
    street = f"{rng.randint(1, 250)} {rng.choice(STREETS)} {rng.choice(KINDS)}"
    return PersonData(
        given_name=rng.choice(GIVEN).title(),
        surname=surname.title(),
        birth_date=f"{year:04d}-{month:02d}-{day:02d}",
        gender=rng.choice("MF"),
        addresses=(Address((street,), rng.choice(TOWNS).title(), _postcode(rng)),),
    )


def _typo(rng: random.Random, text: str) -> str:
    if len(text) < 3:
        return text
    i = rng.randrange(1, len(text) - 1)
    kind = rng.random()
    if kind < 0.33:
        return text[:i] + text[i + 1 :]
    if kind < 0.66:
        return text[:i] + rng.choice(string.ascii_lowercase) + text[i + 1 :]
    return text[: i - 1] + text[i] + text[i - 1] + text[i + 1 :]


def corrupt(rng: random.Random, p: PersonData, errors: int = 2) -> PersonData:
    """A duplicate of `p` with up to `errors` of the mistakes real records carry."""
    given, surname, dob = p.given_name, p.surname, p.birth_date
    address = p.addresses[0]
    lines, town, postcode = address.lines, address.town, address.postcode
    for _ in range(rng.randint(1, errors)):
        kind = rng.randrange(8)
        if kind == 0:
            given = _typo(rng, given)
        elif kind == 1:
            surname = _typo(rng, surname)
        elif kind == 2 and dob:
            digits = list(dob.replace("-", ""))
            i = rng.randrange(2, 7)
            digits[i], digits[i + 1] = digits[i + 1], digits[i]
            dob = f"{''.join(digits[:4])}-{''.join(digits[4:6])}-{''.join(digits[6:])}"
        elif kind == 3:
            dob = ""
        elif kind == 4:
            lines, town, postcode = (), town, ""
        elif kind == 5:
            postcode = _typo(rng, postcode.replace(" ", "")) if postcode else postcode
        elif kind == 6:
            given = given[:1]  # initial only
        else:
            lines, town, postcode = (
                _original(rng).addresses[0].lines,
                _original(rng).addresses[0].town,
                _postcode(rng),
            )
    return PersonData(
        given_name=given,
        surname=surname,
        birth_date=dob,
        gender=p.gender,
        addresses=(Address(lines, town, postcode),),
    )


def generate(
    count: int, *, duplicate_rate: float = 0.2, seed: int = 1, prefix: str = "p"
) -> Iterator[Generated]:
    """`count` records of which about `duplicate_rate` are corrupted copies of earlier ones."""
    rng = random.Random(seed)
    originals: list[tuple[str, PersonData]] = []
    for n in range(count):
        if originals and rng.random() < duplicate_rate:
            person_id, person = originals[rng.randrange(len(originals))]
            yield Generated(f"{prefix}{n}", person_id, corrupt(rng, person))
        else:
            person = _original(rng)
            person_id = f"{prefix}{n}"
            originals.append((person_id, person))
            yield Generated(f"{prefix}{n}", person_id, person)
