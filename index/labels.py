"""What a label may be: the one check every way of enrolling or renaming goes through."""

from __future__ import annotations

import unicodedata

from .errors import GalleryError, shown  # noqa: F401 (shown: labels' users import it here)
from .ranking import UNKNOWN

MAX_LABEL_LEN = 100
JOINERS = set("\u200c\u200d")
BIDI_CONTROLS = set("\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Characters that draw nothing between letters, so "a\u200db" shows as "ab": joiners (which a label may
# hold), direction marks, and the invisible formatting characters check_label refuses in a new label
# (which one stored before that rule may hold). find refuses a name only these tell from a stored one.
INVISIBLE = JOINERS | BIDI_CONTROLS | set("\u200b\u2060\u2061\u2062\u2063\u2064\u00ad\ufeff\u180e")
# Letters that draw nothing (Hangul fillers, the blank Braille pattern): a label of these and joiners alone looks empty.
BLANKS = set("\u115f\u1160\u3164\uffa0\u2800")


def check_label(label: object, new: bool = True) -> str:
    """The label, stripped; GalleryError naming the rule it breaks otherwise. new=False: one
    already stored (a bundle, an export) is held only to the rules labels had when it was made."""
    if not isinstance(label, str):
        raise GalleryError(f"label {label!r}: must be a non-empty string")
    if not label.strip():
        raise GalleryError(f"label {label!r}: is empty; must be a non-empty string")
    # One spelling per label: "é" typed as one character or as e + accent (macOS folder names) is one label.
    label = unicodedata.normalize("NFC", label.strip())
    if len(label) > MAX_LABEL_LEN:
        raise GalleryError(f"label {label[:20]!r}...: longer than {MAX_LABEL_LEN} characters")
    try:
        label.encode("utf-8")
    except UnicodeEncodeError:  # bytes that were not UTF-8 (a shell argument decoded with surrogates)
        raise GalleryError(f"label {label!r}: is not valid UTF-8 text") from None
    if new and "\ufffd" in label:  # what a web server makes of such bytes in a URL or form
        raise GalleryError(f"label {label!r}: holds U+FFFD, the mark of bytes that were not UTF-8 text")
    # Control characters and invisible formatting ones (U+202E, U+200B, U+00AD...) that make one
    # label display as another; joiners (U+200C/D) stay allowed: emoji sequences and many scripts need them.
    if any(unicodedata.category(c) == "Cc" or (unicodedata.category(c) == "Cf" and c not in JOINERS)
           or c in BIDI_CONTROLS for c in label):
        raise GalleryError(f"label {label!r}: must not contain control or invisible formatting characters")
    # Other spaces (U+00A0, U+2003, U+3000...) and line or paragraph separators look like a plain space
    # or like nothing: "a\u00a0b" would be a second label that shows as "a b".
    if new and (odd := next((c for c in label if unicodedata.category(c) in ("Zs", "Zl", "Zp") and c != " "), None)):
        raise GalleryError(f"label {label!r}: holds U+{ord(odd):04X} ({unicodedata.name(odd, 'a separator')}), "
                           "which shows as a space or as nothing; use a plain space")
    if new and all(c in JOINERS or c in BLANKS or unicodedata.category(c) in ("Zs", "Zl", "Zp", "Mn", "Me") for c in label):
        raise GalleryError(f"label {label!r}: shows nothing (only joiners, blanks or accents); must have a visible character")
    if unicodedata.normalize("NFKC", label).casefold() == UNKNOWN:  # full-width ＵＮＫＮＯＷＮ looks the same
        raise GalleryError(f"label {label!r}: reserved for queries below the threshold; choose another name")
    if new and looks(label) == UNKNOWN:  # a Cyrillic о in it: an answer that reads as unknown, but is not
        raise GalleryError(f"label {label!r}: looks like {UNKNOWN!r}, {differing(label, UNKNOWN)}, which is reserved "
                           "for queries below the threshold; choose another name")
    return label


def check_label_in(label: object, labels) -> str:
    """check_label for a label going into `labels` (a collection): one already there, perhaps stored
    before a rule came, is held only to the rules it had then, so more can be added to it; it is
    returned as it is stored (typed in another spelling, or with plain spaces for its odd ones)."""
    found = find(label, labels)
    checked = check_label(label, new=found is None)
    return checked if found is None else found


def stored_form(label: object) -> object:
    """A label as it is stored (stripped, NFC), to look it up by any spelling it was enrolled with."""
    return unicodedata.normalize("NFC", label.strip()) if isinstance(label, str) else label


# Every space separator (Zs), line and paragraph separator (Zl, Zp): what a label may have held before
# only U+0020 was allowed; each shows as a plain space (or as nothing). Checked against unicodedata by the tests.
SPACES = dict.fromkeys(map(ord, "\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
                                "\u2009\u200a\u202f\u205f\u3000\u2028\u2029"), " ")
UNSEEN = dict.fromkeys(map(ord, INVISIBLE))  # str.translate: drops every INVISIBLE character


def find(label: object, labels) -> object:
    """The label of `labels` (a collection) that `label` names: itself, its stored form, a label
    stored in another spelling (galleries made before labels were stored as NFC), or else one stored
    before other spaces were refused that shows as `label` does ("a\u00a0b" for "a b"); None if none.
    GalleryError when two stored labels show as `label` does: it names neither for sure; and when
    only invisible characters tell `label` from a stored one ("a\u200db" beside "ab"): as a new label
    it would show as that one, and as a name it may mean either, so nothing is enrolled, renamed or
    removed under it."""
    if not isinstance(label, str):  # labels are text: a list or a dict names none (and is no key)
        return None
    if label in labels:
        return label
    if (nfc := stored_form(label)) in labels:
        return nfc
    looks, alike, hidden = nfc.translate(SPACES), [], []
    bare = looks.translate(UNSEEN)
    for x in labels:
        if isinstance(x, str) and (form := stored_form(x)) == nfc:
            return x
        if isinstance(x, str) and (shows := form.translate(SPACES)) == looks:
            alike.append(x)
        elif isinstance(x, str) and shows.translate(UNSEEN) == bare:
            hidden.append(x)
    if len(alike) > 1:
        raise GalleryError(f"label {shown(label)}: {len(alike)} labels show as it does ({', '.join(map(repr, alike[:5]))}); "
                           "name one exactly as stored (as written here)")
    if not alike and hidden:
        unseen = sorted({c for c in nfc + "".join(hidden[:5]) if c in INVISIBLE})
        raise GalleryError(f"label {shown(label)}: looks like {', '.join(map(repr, hidden[:5]))}, already there, "
                           f"differing only by invisible characters ({', '.join(f'U+{ord(c):04X}' for c in unseen)}); "
                           "name it exactly as stored (as written here), or choose another name")
    return alike[0] if alike else None


def check_labels(labels, n: int = 5, new: bool = True) -> list[str]:
    """Each label checked (check_label); every bad one named in one line, not only the first."""
    out, bad = [], []
    for label in labels:
        try:
            out.append(check_label(label, new))
        except GalleryError as exc:
            bad.append(str(exc))
    if bad:
        raise GalleryError(f"{len(bad)} bad label{'s' if len(bad) > 1 else ''}: " + "; ".join(bad[:n])
                           + (f"; and {len(bad) - n} more" if len(bad) > n else ""))
    return out


# Greek and Cyrillic letters drawn as Latin ones are in most fonts: "Nаruto" with a Cyrillic а reads
# as "Naruto" and is another class. Folded to the Latin letter, so such a label is said to be alike.
LOOKALIKES = str.maketrans("АВЕКМНОРСТХІЈЅаеорсухіјѕһԁԛԝӏΑΒΕΖΗΙΚΜΝΟΡΤΥΧοινκυχρ",
                           "ABEKMHOPCTXIJSaeopcyxijshdqwlABEZHIKMNOPTYXoivkuxp")
ALIKE = "case, width or look-alike letters"


def folded(label: str) -> str:
    """A label as a reader tells it: by letters only, whatever their case or width ("Naruto",
    "naruto", full-width "ＮＡＲＵＴＯ"), and what draws nothing left out."""
    return unicodedata.normalize("NFKC", label).casefold().translate(UNSEEN)


def looks(label: str) -> str:
    """A label as it looks: folded, with Greek and Cyrillic letters drawn as Latin ones read as
    those (before the case is folded, and after: "ТОР" looks as "TOP" does)."""
    return unicodedata.normalize("NFKC", label).translate(LOOKALIKES).casefold().translate(LOOKALIKES).translate(UNSEEN)


def differing(label: str, other: str) -> str:
    """What an alike warning says of how `label` differs from `other`: look-alike letters are named,
    since they show as the letters they stand for."""
    names = [] if folded(label) == folded(other) else \
        [f"U+{ord(c):04X} {unicodedata.name(c, '?')}" for c in dict.fromkeys(label + other)
         if ord(c) in LOOKALIKES and (c in label) != (c in other)]  # in one only: what tells them apart
    return f"differing only by {ALIKE}" + (f" ({', '.join(names[:3])})" if names else "")


def variants(label: str, labels) -> list[str]:
    """The stored labels that `label`, a new one, differs from only by ALIKE: a second
    class a reader can hardly tell from the first (enrolled all the same: the user may mean it)."""
    try:
        if find(label, labels) is not None:
            return []
    except GalleryError:  # it names several, or one by invisible characters: enrolment refuses it anyway
        return []
    return alike(label, labels)


def alike(label: str, labels) -> list[str]:
    """The labels of `labels` other than `label` that differ from it only by ALIKE (a class
    renamed to "NARUTO" beside "naruto"): said after the edit, which the user may mean."""
    own = stored_form(label)
    key, look = folded(own), looks(own)
    return [x for x in labels if isinstance(x, str) and x != own and (folded(x) == key or looks(x) == look)]


def some(labels, n: int = 20) -> str:
    """The first n labels for an error message, and how many more (a gallery may hold a million)."""
    names = list(labels)
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "") or "none"


def renames(before, after) -> dict[str, str]:
    """The labels an edit between two states of a gallery (index.Gallery) renamed, old -> new: a
    label gone whose references still there (one at least) all carry one other label now (a rename
    keeps the references; into a label that existed, they join it). A live stream goes on with
    them (index.tracker). Two passes over the references, only where a label went."""
    now = after.labels()
    gone = {label for label in before.labels() if label not in now} if before is not after else set()
    if not gone:
        return {}
    was = {r.id: r.label for r in before.references() if r.label in gone}
    into: dict[str, set] = {}
    for r in after.references():
        if r.id in was:
            into.setdefault(was[r.id], set()).add(r.label)
    return {old: next(iter(new)) for old, new in into.items() if len(new) == 1}
