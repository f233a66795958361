"""
ripgrep's regular expression syntax (that of Rust's C{regex} crate) made
into Python's C{re}, for patterns matched within one line.

The two dialects share most of their syntax; the translation parses the
pattern once and writes each construct the way Python says it:

  - named groups C{(?P<n>...)} and C{(?<n>...)}: every group becomes
    non-capturing (a search needs only the whole match);
  - inline flags C{(?i)} apply to the rest of their group (in Python only
    at the start): each affected literal or class is written with a scoped
    C{(?i:...)} or C{(?-i:...)}; C{U} swaps greedy and lazy repetition;
    C{x} ignores whitespace and C{#} comments; C{m} and C{s} change nothing
    in a search line by line;
  - C{\\z} is the line's end, while C{\\A} is the file's start (ripgrep
    reports a line it matches elsewhere without any match in it);
  - C{\\<}, C{\\>}, C{\\b{start}}, C{\\b{end}}, C{\\b{start-half}},
    C{\\b{end-half}} become look-arounds;
  - C{\\x{...}}, C{\\u{...}}, C{\\U{...}} code points, POSIX classes
    C{[[:alpha:]]} and nested classes C{[[a-c]d]};
  - stacked repetition (C{a**}, C{x{2}{3}}) is grouped, where Python would
    read C{a++} as possessive;
  - classes that could match a line break (C{\\s}, C{\\W}, C{\\D},
    C{[^a]}, C{[\\x00-\\x7f]}) leave it out, as ripgrep does; and C{.},
    C{\\S} and such never match bytes that are not UTF-8 (which the
    searcher decodes to lone surrogates), as Rust's never do.

Refused with L{PatternError}, as ripgrep refuses them: look-around,
backreferences, a line break, unknown escapes and flags, malformed groups,
classes and repetitions (with ripgrep's words). Refused because Python's
C{re} cannot say them: Unicode classes C{\\p{...}}, class set operations
C{&&}, C{--}, C{~~}, negated nested or POSIX classes, and the C{-u} and
C{R} flags. What stays different: C{\\w}, C{\\d}, C{\\s}, C{\\b} and case
folding use Python's Unicode tables, which disagree with Rust's on a few
characters (combining marks, some separators), and an empty match right
after another match is skipped by the searcher (L{cluso_grep.grep}), as
Rust's iterator does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Final

#: ripgrep's own words for a pattern that could match a line break.
LINE_BREAK: Final = 'the literal "\\n" is not allowed in a regex'
LOOK_AROUND: Final = "look-around, including look-ahead and look-behind, is not supported"
MISSING_EXPRESSION: Final = "repetition operator missing expression"
UNSUPPORTED: Final = "not supported by the pure-Python search engine (install ripgrep for it)"
#: Groups nested deeper than this are refused, well within Python's
#: recursion limit (ripgrep's parser allows 250).
NEST_LIMIT: Final = 100

#: Lone surrogates: the bytes of a line that are not UTF-8, as the
#: searcher decodes them; no pattern may match them.
_UNDECODED: Final = r"\udc80-\udcff"
#: What may never be matched: a line break, or an undecoded byte.
_NEVER: Final = r"\n" + _UNDECODED
_HEX_DIGITS: Final = {"x": 2, "u": 4, "U": 8}
_CHAR_ESCAPES: Final = {"a": "\a", "f": "\f", "t": "\t", "n": "\n", "r": "\r", "v": "\v"}
_PERL_OUTSIDE: Final = {
    "d": r"\d",
    "w": r"\w",
    # Python's \s, \D and \W also match a line break, and \S, \D and \W
    # an undecoded byte; within a line of text they must not.
    "s": r"[^\S\n]",
    "S": rf"[^\s{_UNDECODED}]",
    "D": rf"[^\d{_NEVER}]",
    "W": rf"[^\w{_NEVER}]",
}
_BOUNDARIES: Final = {
    "start": r"\b(?=\w)",
    "end": r"\b(?<=\w)",
    "start-half": r"(?<!\w)",
    "end-half": r"(?!\w)",
}
#: POSIX classes as Python class items, and whether they include a line break.
_POSIX: Final = {
    "alnum": ("0-9A-Za-z", False),
    "alpha": ("A-Za-z", False),
    "ascii": (r"\x00-\x7f", True),
    "blank": (r"\t ", False),
    "cntrl": (r"\x00-\x1f\x7f", True),
    "digit": ("0-9", False),
    "graph": ("!-~", False),
    "lower": ("a-z", False),
    "print": (" -~", False),
    "punct": (r"!-/:-@\[-`{-~", False),
    "space": (r"\t\n\x0b\x0c\r ", True),
    "upper": ("A-Z", False),
    "word": ("0-9A-Za-z_", False),
    "xdigit": ("0-9A-Fa-f", False),
}
_CLASS_SPECIAL: Final = frozenset("\\]^-[&~|")


class PatternError(ValueError):
    """
    A pattern that cannot be searched for; the message says why, in
    ripgrep's words where ripgrep would refuse it too.
    """


def compile_pattern(text: str, *, fixed: bool, ignore_case: bool) -> re.Pattern[str]:
    """
    The Python pattern that finds C{text} (literally when C{fixed}) in a
    buffer of lines, never across a line break: C{^} and C{$} match at
    each line's ends.

    @raise PatternError: when C{text} is refused.
    """
    if fixed:
        if "\n" in text:
            raise PatternError(LINE_BREAK)
        source = re.escape(text)
    else:
        source = translate(text, ignore_case)
    try:
        return re.compile(source, re.MULTILINE | (re.IGNORECASE if ignore_case else 0))
    except (re.error, OverflowError, RecursionError) as e:
        raise PatternError(str(e)) from None


def translate(pattern: str, ignore_case: bool = False) -> str:
    """
    C{pattern}, in ripgrep's syntax, written for Python's C{re}; to be
    compiled with C{re.MULTILINE}, plus C{re.IGNORECASE} when
    C{ignore_case}.

    @raise PatternError: when C{pattern} is refused.
    """
    return _Translator(pattern, ignore_case).translate()


@dataclass(frozen=True)
class _Flags:
    ignore_case: bool
    verbose: bool = False
    swap_greed: bool = False


@dataclass
class _Atom:
    """
    A translated piece; C{unit} when a quantifier may follow it as it is.
    """

    text: str
    unit: bool = True
    quantifiable: bool = True


@dataclass
class _ClassItems:
    """
    A class being read: its items in Python class syntax, and whether they
    include what may never be matched (a line break, an undecoded byte).
    """

    parts: list[str]
    wide: bool = False


class _Translator:
    def __init__(self, pattern: str, ignore_case: bool) -> None:
        self._pattern = pattern
        self._at = 0
        self._global_case = ignore_case
        self._flags = _Flags(ignore_case)
        self._depth = 0

    def translate(self) -> str:
        text = self._alternation()
        if self._at < len(self._pattern):
            raise PatternError("unopened group")
        return text

    # Reading.

    def _peek(self, offset: int = 0) -> str:
        at = self._at + offset
        return self._pattern[at] if at < len(self._pattern) else ""

    def _take(self) -> str:
        char = self._peek()
        self._at += 1
        return char

    def _skip_insignificant(self) -> None:
        """
        In C{x} mode, step over whitespace and C{#} comments.
        """
        while self._flags.verbose and self._peek():
            if self._peek().isspace():
                self._at += 1
            elif self._peek() == "#":
                while self._peek() and self._peek() != "\n":
                    self._at += 1
            else:
                return

    # Structure.

    def _alternation(self) -> str:
        branches = [self._concatenation()]
        while self._peek() == "|":
            self._at += 1
            branches.append(self._concatenation())
        return "|".join(branches)

    def _concatenation(self) -> str:
        pieces: list[_Atom] = []
        while True:
            self._skip_insignificant()
            char = self._peek()
            if char in ("", "|", ")"):
                return "".join(piece.text for piece in pieces)
            if char in "*+?{":
                if not pieces or not pieces[-1].quantifiable:
                    raise PatternError(MISSING_EXPRESSION)
                pieces[-1] = self._quantified(pieces[-1])
            else:
                pieces.append(self._atom())

    def _quantified(self, atom: _Atom) -> _Atom:
        char = self._take()
        quantifier = self._counted() if char == "{" else char
        lazy = self._peek() == "?"
        if lazy:
            self._at += 1
        if lazy != self._flags.swap_greed:
            quantifier += "?"
        base = atom.text if atom.unit else f"(?:{atom.text})"
        return _Atom(base + quantifier, unit=False)

    def _counted(self) -> str:
        low = self._decimal()
        high: int | None = low
        if self._peek() == ",":
            self._at += 1
            high = None if self._peek() == "}" else self._decimal()
        if self._peek() != "}":
            raise PatternError("unclosed counted repetition")
        self._at += 1
        if high is not None and low > high:
            raise PatternError("invalid repetition count range, the start must be <= the end")
        if high == low:
            return f"{{{low}}}"
        return f"{{{low},{'' if high is None else high}}}"

    def _decimal(self) -> int:
        start = self._at
        while self._peek().isdigit() and self._peek().isascii():
            self._at += 1
        if start == self._at:
            if not self._peek():
                raise PatternError("unclosed counted repetition")
            raise PatternError("repetition quantifier expects a valid decimal")
        return int(self._pattern[start : self._at])

    def _atom(self) -> _Atom:
        char = self._take()
        if char == "(":
            return self._group()
        if char == "[":
            return self._class()
        if char == "\\":
            return self._escape()
        if char == ".":
            return _Atom(f"[^{_NEVER}]")
        if char in "^$":
            return _Atom(char)
        if char == "\n":
            raise PatternError(LINE_BREAK)
        return self._literal(char)

    def _literal(self, char: str) -> _Atom:
        return self._cased(re.escape(char))

    def _cased(self, text: str) -> _Atom:
        """
        C{text}, scoped to the case sensitivity in force where it stands.
        """
        if self._flags.ignore_case == self._global_case:
            return _Atom(text)
        return _Atom(f"(?{'i' if self._flags.ignore_case else '-i'}:{text})")

    # Groups and flags.

    def _group(self) -> _Atom:
        saved = self._flags
        if self._peek() == "?":
            self._at += 1
            if self._peek() == "P" and self._peek(1) == "<":
                self._at += 1
                self._group_name()
            elif self._peek() == "<" and self._peek(1) not in ("=", "!"):
                self._group_name()
            elif self._peek() in ("=", "!", "<"):
                raise PatternError(LOOK_AROUND)
            elif self._flag_group():
                return _Atom("", quantifiable=False)
        self._depth += 1
        if self._depth > NEST_LIMIT:
            raise PatternError(f"groups are nested more than {NEST_LIMIT} deep")
        inner = self._alternation()
        self._depth -= 1
        self._flags = saved
        if self._take() != ")":
            raise PatternError("unclosed group")
        return _Atom(f"(?:{inner})")

    def _group_name(self) -> None:
        self._at += 1
        end = self._pattern.find(">", self._at)
        if end < 0:
            raise PatternError("unclosed capture group name")
        if end == self._at:
            raise PatternError("empty capture group name")
        self._at = end + 1

    def _flag_group(self) -> bool:
        """
        Read the flags of C{(?flags)} (then C{True}: they hold for the rest
        of the enclosing group) or C{(?flags:} (then C{False}: they hold
        within the group that follows).
        """
        flags = self._flags
        on = True
        seen = False
        while True:
            char = self._take()
            if not char:
                raise PatternError("unclosed group")
            if char in (")", ":"):
                if char == ")" and not seen:
                    raise PatternError("empty flag group")
                self._flags = flags
                return char == ")"
            seen = True
            if char == "-" and on:
                on = False
            elif char == "i":
                flags = replace(flags, ignore_case=on)
            elif char == "x":
                flags = replace(flags, verbose=on)
            elif char == "U":
                flags = replace(flags, swap_greed=on)
            elif char in "ms" or (char == "u" and on):
                pass
            elif char in ("u", "R"):
                raise PatternError(f"the flag {'-' if not on else ''}{char} is {UNSUPPORTED}")
            else:
                raise PatternError("unrecognized flag")

    # Escapes.

    def _escape(self) -> _Atom:
        char = self._take()
        if char in _PERL_OUTSIDE:
            return _Atom(_PERL_OUTSIDE[char])
        if char == "b" and self._peek() == "{" and self._peek(1).isalpha():
            return _Atom(self._special_boundary(), quantifiable=False)
        if char in ("b", "B"):
            return _Atom("\\" + char, quantifiable=False)
        if char == "A":
            return _Atom(r"\A", quantifiable=False)
        if char == "z":
            return _Atom("$", quantifiable=False)
        if char == "<":
            return _Atom(_BOUNDARIES["start"], quantifiable=False)
        if char == ">":
            return _Atom(_BOUNDARIES["end"], quantifiable=False)
        return self._literal(self._escaped_char(char))

    def _special_boundary(self) -> str:
        end = self._pattern.find("}", self._at)
        name = self._pattern[self._at + 1 : end] if end > 0 else ""
        if name not in _BOUNDARIES:
            raise PatternError("unrecognized special word boundary")
        self._at = end + 1
        return _BOUNDARIES[name]

    def _escaped_char(self, char: str, in_class: bool = False) -> str:
        """
        The one character an escape other than a class or an assertion
        stands for; a line break only within a class.
        """
        if not char:
            raise PatternError("incomplete escape sequence, reached end of pattern prematurely")
        if char in _CHAR_ESCAPES:
            value = _CHAR_ESCAPES[char]
        elif char in _HEX_DIGITS:
            value = self._hex(_HEX_DIGITS[char])
        elif char in ("p", "P"):
            raise PatternError(f"Unicode classes (\\{char}) are {UNSUPPORTED}")
        elif char.isdigit():
            raise PatternError("backreferences are not supported")
        elif char.isascii() and not char.isalnum() and char not in "<>":
            value = char
        else:
            raise PatternError("unrecognized escape sequence")
        if value == "\n" and not in_class:
            raise PatternError(LINE_BREAK)
        return value

    def _hex(self, digits: int) -> str:
        if self._peek() == "{":
            end = self._pattern.find("}", self._at)
            text = self._pattern[self._at + 1 : end] if end > 0 else ""
            self._at = end + 1 if end > 0 else len(self._pattern)
        else:
            text = self._pattern[self._at : self._at + digits]
            self._at += digits
            if len(text) != digits:
                raise PatternError("incomplete escape sequence, reached end of pattern prematurely")
        if not text or any(c not in "0123456789abcdefABCDEF" for c in text):
            raise PatternError("invalid hexadecimal digit")
        code = int(text, 16)
        if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            raise PatternError("hexadecimal literal is not a Unicode scalar value")
        return chr(code)

    # Classes.

    def _class(self) -> _Atom:
        negated = self._peek() == "^"
        if negated:
            self._at += 1
        items = self._class_items()
        body = "".join(items.parts)
        if negated:
            return self._cased(f"[^{body}{_NEVER}]")
        if not body:
            raise PatternError(LINE_BREAK)
        if items.wide:
            return self._cased(f"(?:(?![{_NEVER}])[{body}])")
        return self._cased(f"[{body}]")

    def _class_items(self) -> _ClassItems:
        """
        Read a class's items up to and including its C{]}; a C{]} first is
        one of them.
        """
        items = _ClassItems([])
        first = True
        while True:
            if self._flags.verbose:
                while self._peek().isspace():
                    self._at += 1
            char = self._peek()
            if not char:
                raise PatternError("unclosed character class")
            if char == "]" and not first:
                self._at += 1
                return items
            first = False
            if char == "[" and self._peek(1) == ":":
                self._posix_class(items)
            elif char == "[":
                self._at += 1
                if self._peek() == "^":
                    raise PatternError(f"negated classes nested in a class are {UNSUPPORTED}")
                nested = self._class_items()
                items.parts += nested.parts
                items.wide |= nested.wide
            elif self._pattern.startswith(("&&", "--", "~~"), self._at):
                raise PatternError(f"class set operations (&&, --, ~~) are {UNSUPPORTED}")
            else:
                self._class_range(items)

    def _posix_class(self, items: _ClassItems) -> None:
        end = self._pattern.find(":]", self._at + 2)
        name = self._pattern[self._at + 2 : end] if end > 0 else ""
        if name.startswith("^"):
            raise PatternError(f"negated POSIX classes are {UNSUPPORTED}")
        if name not in _POSIX:
            raise PatternError("invalid ASCII class")
        self._at = end + 2
        text, newline = _POSIX[name]
        items.parts.append(text)
        items.wide |= newline

    def _class_range(self, items: _ClassItems) -> None:
        start = self._class_char(items)
        ranged = self._peek() == "-" and self._peek(1) not in ("]", "-", "")
        if start is None:
            if ranged:
                raise PatternError("invalid range boundary, must be a literal")
            return
        if not ranged:
            # A line break within a class is left out, as ripgrep does.
            if start != "\n":
                items.parts.append(_class_literal(start))
            return
        self._at += 1
        end = self._class_char(items)
        if end is None:
            raise PatternError("invalid range boundary, must be a literal")
        if start > end:
            raise PatternError("invalid character class range, the start must be <= the end")
        if start <= "\n" <= end or (start <= "\udcff" and end >= "\udc80"):
            items.wide = True
        items.parts.append(f"{_class_literal(start)}-{_class_literal(end)}")

    def _class_char(self, items: _ClassItems) -> str | None:
        """
        The literal character next in a class, or C{None} after adding a
        Perl class (C{\\d}) to C{items}.
        """
        char = self._take()
        if char != "\\":
            return char
        escaped = self._take()
        if escaped in "dwsDWS" and escaped:
            items.parts.append("\\" + escaped)
            items.wide |= escaped in "sSDW"
            return None
        return self._escaped_char(escaped, in_class=True)


def _class_literal(char: str) -> str:
    return "\\" + char if char in _CLASS_SPECIAL else char
