"""The E2E rubric as a program: every attribute of the meaning representation (MR) is
realised in the text, and no attribute the MR does not have is added.

An MR is the E2E dataset's ``name[Blue Spice], eatType[coffee shop], area[city centre]``.
Venue names (``name``, ``near``) are matched as written (a leading "The" optional) and then
blanked, so a name's words ("Raja Indian Cuisine", "Café Brazil", "Burger King") never count
as a food or a venue type. Each other value is matched by the phrasings the human references
use for it (``_PATTERNS``); a value with a negation ("not family-friendly") is its own
phrasing. ``judge`` is the program judge a task names (``judge = "gateway.judges.e2e:judge"``);
``slot_errors`` counts, per answer, the attributes missed and added (the slot error rate's
numerator).
"""

from __future__ import annotations

import re
from functools import lru_cache

from gateway.judges.base import Verdict

__all__ = ["MR_ATTRIBUTES", "VENUES", "judge", "parse_mr", "slot_errors"]

MR_ATTRIBUTES = (
    "name",
    "eatType",
    "food",
    "priceRange",
    "customer rating",
    "area",
    "familyFriendly",
    "near",
)

# The E2E venues (train and test, both columns): a name the MR does not give is an addition.
VENUES = (
    "Alimentum", "Aromi", "Bibimbap House", "Blue Spice", "Browns Cambridge", "Clowns",
    "Cocum", "Cotto", "Fitzbillies", "Giraffe", "Green Man", "Loch Fyne", "Midsummer House",
    "Strada", "Taste of Cambridge", "The Cambridge Blue", "The Cricketers", "The Eagle",
    "The Golden Curry", "The Golden Palace", "The Mill", "The Phoenix", "The Plough",
    "The Punter", "The Vaults", "The Waterman", "The Wrestlers", "Travellers Rest Beefeater",
    "Wildwood", "Zizzi", "All Bar One", "Avalon", "Burger King", "Café Adriatic",
    "Café Brazil", "Café Rouge", "Café Sicilia", "Clare Hall", "Crowne Plaza Hotel",
    "Express by Holiday Inn", "Rainbow Vegetarian Café", "Raja Indian Cuisine", "Ranch",
    "The Bakers", "The Portland Arms", "The Rice Boat", "The Sorrento",
)  # fmt: skip

_NOT = r"(?:not|n't|no|non|never|isn't|aren't|without)"
_FAMILY = r"(?:famil(?:y|ies)|kids?|child(?:ren)?|children's|youngsters?)"
# "rating ... high" and "price ... high" allow a few words between, none of them about the
# other one: "a high price and an average rating" is not a high rating.
_GAP = r"\b(?:(?!pric|cost|rat|review|scor)[^.,;]){0,20}\b"
_RATING_WORD = r"(?:rating|rated|ratings|reviews?|score)"
_PRICE_WORD = r"(?:price|prices|pricing|price range|costs?|menu)"


def _any(*alternatives: str) -> str:
    return "|".join(alternatives)


def _stars(n: str) -> str:
    """``1 out of 5``, ``one star``, ``1/5``... for ``n`` (a digit or its word)."""
    return _any(rf"\b{n} ?(?:stars? )?(?:out of|out|of|/) ?(?:5|five)\b", rf"\b{n}[- ]stars?")


# Ratings and prices come as numbers or as words, and the references use both for one
# value ("1 out of 5" written "a low rating"): each value is realised by its band's words.
_LOW_RATING = _any(
    _stars("(?:1|one)"),
    r"(?:low|poor|bad)(?:ly)?[- ]?(?:customer |star |customer service )?(?:rat|review|scor)",
    r"not (?:well|highly|very well) (?:rated|reviewed)",
    rf"{_RATING_WORD}{_GAP}(?:low|poor|bad)\b",
)
_MID_RATING = _any(
    _stars("(?:3|three)"),
    r"average(?:ly)?[- ]?(?:customer )?(?:rat|review|scor)",
    r"(?:ok|okay|decent|moderate|mediocre|mid[- ]?range) (?:customer )?(?:rat|review|scor)",
    rf"{_RATING_WORD}{_GAP}(?:average|ok|okay|decent)\b",
)
_HIGH_RATING = _any(
    _stars("(?:5|five)"),
    r"high(?:ly)?[- ]?(?:customer )?(?:rat|review|scor|recommend)",
    r"top[- ]?rat",
    r"(?:excellent|great|good|outstanding|fantastic|best|well)[- ]?(?:customer )?"
    r"(?:rat|review|scor)",
    rf"{_RATING_WORD}{_GAP}(?:high|excellent|great|good)\b",
)
_LOW_PRICE = _any(
    r"cheap|inexpensive|affordabl|budget|bargain|value for money",
    r"low[- ]?(?:price|cost)|low(?:er)?[- ]priced|not (?:very |too )?expensive",
    r"(?:less than|under|below|lower than|cheaper than|up to|no more than) (?:£ ?)?20\b",
    r"£ ?20 or (?:less|under)",
    rf"{_PRICE_WORD}{_GAP}(?:low|cheap)\b",
)
_MID_PRICE = _any(
    r"moderate(?!ly rated| (?:customer )?(?:rat|review|scor))",
    r"average[- ]?pric|mid[- ]?(?:range|price|level)(?! (?:customer )?(?:rat|review|scor))",
    r"reasonabl|fair(?:ly)?[- ]?pric",
    r"(?:£ ?)?20 ?(?:-|\u2013|to|and) ?(?:£ ?)?25|twenty (?:to|-) twenty[- ]five",
    r"not (?:too|very|overly) (?:cheap|expensive)",
    rf"{_PRICE_WORD}{_GAP}(?:average|moderate|medium|mid)\b",
)
_HIGH_PRICE = _any(
    r"expensive|pricey|pricy|costly|premium|upscale|luxur|not cheap",
    r"high[- ]?(?:price|cost|end)|high(?:er)?[- ]priced",
    r"(?:more than|over|above|higher than|in excess of|exceeding|at least|starting at|from|"
    r"around) (?:£ ?)?30\b",
    r"£ ?30 ?(?:or more|plus|and (?:up|over|above)|\+)",
    rf"{_PRICE_WORD}{_GAP}(?:high|expensive)\b",
)
_PATTERNS: dict[str, dict[str, str]] = {
    "eatType": {
        "coffee shop": r"coffee|caf[eé]s?\b",
        "restaurant": r"restaurants?|eatery|eateries|dining|diner|bistro",
        "pub": r"\bpubs?\b|\bbars?\b|\binn\b|tavern|public house",
    },
    "food": {
        "Chinese": r"\bchinese\b",
        "English": r"\benglish\b|\bbritish\b",
        "French": r"\bfrench\b",
        "Indian": r"\bindian\b|\bcurry\b|\bcurries\b",
        "Italian": r"\bitalian\b|\bpasta\b|\bpizzas?\b",
        "Japanese": r"\bjapanese\b|\bsushi\b",
        "Fast food": r"fast[- ]?foods?\b|\bburgers?\b|\bfries\b|take[- ]?away",
    },
    "priceRange": {
        "cheap": _LOW_PRICE,
        "less than £20": _LOW_PRICE,
        "moderate": _MID_PRICE,
        "£20-25": _MID_PRICE,
        "high": _HIGH_PRICE,
        "more than £30": _HIGH_PRICE,
    },
    "customer rating": {
        "1 out of 5": _LOW_RATING,
        "low": _LOW_RATING,
        "3 out of 5": _MID_RATING,
        "average": _MID_RATING,
        "5 out of 5": _HIGH_RATING,
        "high": _HIGH_RATING,
    },
    "area": {
        "city centre": _any(
            r"city[- ]?cent(?:re|er)|cent(?:re|er) of (?:the )?(?:city|town)",
            r"(?:the|town|city) cent(?:re|er)|downtown|central",
        ),
        "riverside": r"river|waterfront",
    },
}
_FAMILY_YES = _any(
    rf"{_FAMILY}[- ]?friendly",
    r"(?:welcomes?|for|allows?|good for|suitable for|great for|caters? (?:to|for)|ideal for|"
    rf"accommodat\w*|welcoming (?:to)?) (?:the (?:whole )?)?(?:\w+ )?{_FAMILY}",
    rf"{_FAMILY} (?:are |is )?(?:welcome|allowed)",
    r"family[- ](?:oriented|place|restaurant|venue|style)",
)
_FAMILY_NO = _any(
    rf"{_FAMILY} (?:are |is )?not (?:allowed|welcome|permitted)",
    rf"no[- ]{_FAMILY} policy",
    r"adult (?:establishment|venue|only|place)|adults?[- ]only",
    rf"{_NOT}\b[^.,;]{{0,25}}{_FAMILY}",
    rf"{_FAMILY}[- ]?(?:un)?friendly[^.]{{0,10}}\b{_NOT}",
    rf"un{_FAMILY}|non[- ]?{_FAMILY}|not (?:a )?{_FAMILY}",
)


def parse_mr(text: str) -> dict[str, tuple[str, ...]]:
    """``name[Blue Spice], area[city centre]`` → ``{"name": ("Blue Spice",), ...}``. The
    cleaned E2E gives some attributes two values where the text fits both
    (``priceRange[cheap], priceRange[moderate]``): either one realises it."""
    out: dict[str, tuple[str, ...]] = {}
    for key, value in re.findall(r"([A-Za-z][\w ]*?)\s*\[([^\]]*)\]", text):
        out[key.strip()] = (*out.get(key.strip(), ()), value.strip())
    return out


@lru_cache(maxsize=256)
def _venue_pattern(venue: str) -> re.Pattern[str]:
    core = re.escape(venue.removeprefix("The ").lower()).replace(r"\ ", r"[\s-]+")
    core = core.replace("é", "[eé]")
    return re.compile(rf"(?:the\s+)?{core}(?:'s)?")


@lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _family(text: str) -> set[str]:
    found = set()
    if re.search(_FAMILY_NO, text):
        found.add("no")
        text = re.sub(_FAMILY_NO, " ", text)
    if re.search(_FAMILY_YES, text):
        found.add("yes")
    return found


def _mentions(text: str) -> tuple[dict[str, set[str]], str]:
    """The values the text realises, by attribute (venues first, then blanked)."""
    found: dict[str, set[str]] = {}
    venues = set()
    for venue in sorted(VENUES, key=len, reverse=True):
        pattern = _venue_pattern(venue)
        if pattern.search(text):
            venues.add(venue)
            text = pattern.sub(" @ ", text)
    found["venue"] = venues
    for attribute, values in _PATTERNS.items():
        found[attribute] = {v for v, p in values.items() if _compiled(p).search(text)}
    found["familyFriendly"] = _family(text)
    return found, text


def slot_errors(mr: dict[str, tuple[str, ...]], answer: str) -> tuple[list[str], list[str]]:
    """The MR's attributes the answer does not realise, and those it adds."""
    found, _ = _mentions(re.sub(r"\s+", " ", answer.lower()))
    missing, added = [], []
    for attribute, values in mr.items():
        seen = found["venue"] if attribute in ("name", "near") else found.get(attribute, set())
        if not seen & set(values):
            missing.append(f"{attribute}[{'/'.join(values)}]")
    known = set(mr.get("name", ())) | set(mr.get("near", ()))
    added += [f"venue[{v}]" for v in sorted(found["venue"] - known)]
    for attribute in _PATTERNS.keys() | {"familyFriendly"}:
        if attribute not in mr and found.get(attribute):
            added.append(f"{attribute}[{'/'.join(sorted(found[attribute]))}]")
    if len(mr.get("familyFriendly", ())) == 1 and len(found["familyFriendly"]) > 1:
        added.append("familyFriendly[yes and no]")
    return missing, added


def judge(prompt: str, answer: str) -> Verdict:
    """The rubric: ``prompt`` holds the MR (the student's input), ``answer`` the text.
    It carries ``slot_errors`` and ``parse`` (below), so ``evaluate`` reports the slot error
    rate for a task it judges."""
    mr = parse_mr(prompt)
    if not mr:
        return Verdict(False, "the input holds no meaning representation")
    missing, added = slot_errors(mr, answer)
    if not missing and not added:
        return Verdict(True, "every attribute realised, nothing added")
    parts = []
    if missing:
        parts.append("missing " + ", ".join(missing))
    if added:
        parts.append("added " + ", ".join(added))
    return Verdict(False, "; ".join(parts))


judge.slot_errors = slot_errors  # type: ignore[attr-defined]
judge.parse = parse_mr  # type: ignore[attr-defined]
