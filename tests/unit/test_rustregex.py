"""
The pure-Python engine's reading of ripgrep's pattern syntax, and its
line-by-line matching: what each construct finds, and what is refused.
"""

from __future__ import annotations

import pytest

from cluso_grep.grep import Lines, matching_lines
from cluso_grep.rustregex import (
    LINE_BREAK,
    LOOK_AROUND,
    MISSING_EXPRESSION,
    NEST_LIMIT,
    PatternError,
    compile_pattern,
)


def found(
    pattern: str, text: str, ignore_case: bool = False, fixed: bool = False
) -> list[tuple[int, str]]:
    """
    (line number, matched text) of every match of C{pattern} in C{text}.
    """
    compiled = compile_pattern(pattern, fixed=fixed, ignore_case=ignore_case)
    lines = Lines(text)
    return [
        (number, lines[number][start:end])
        for number, spans in matching_lines(compiled, text).items()
        for start, end in spans
    ]


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("(?P<word>ab)+|(?<x>zz)", "abab zz", [(1, "abab"), (1, "zz")]),
        ("a(?i)b|c", "aB C ab", [(1, "aB"), (1, "C"), (1, "ab")]),
        ("(?i)a(?-i:b)", "AB Ab", [(1, "Ab")]),
        ("(?U)a+", "aaa", [(1, "a"), (1, "a"), (1, "a")]),
        ("(?U)a+?", "aaa", [(1, "aaa")]),
        ("(?x) a b  # spaced", "ab a b", [(1, "ab")]),
        ("(?s)a.b", "a\nb axb", [(2, "axb")]),
        (r"\Aab", "ab\nab", [(1, "ab")]),
        (r"b\z", "ab\nab", [(1, "b"), (2, "b")]),
        (r"^b|b$", "bab\nb", [(1, "b"), (1, "b"), (2, "b")]),
        (r"\<ab\>", "ab xab ab_", [(1, "ab")]),
        (r"\b{start}x", "x ax", [(1, "x")]),
        (r"x\b{end-half}", "x xa", [(1, "x")]),
        (r"\x{41}\u0042\U00000043\x44", "ABCD", [(1, "ABCD")]),
        (r"[[:upper:][:digit:]]+", "aB9c", [(1, "B9")]),
        (r"[[a-c]x]+", "abxcd", [(1, "abxc")]),
        ("a++", "aaa", [(1, "aaa")]),
        ("x{2}{2}", "xxxxx", [(1, "xxxx")]),
        (r"\s+", "a \n b", [(1, " "), (2, " ")]),
        (r"\W+", "a,\n,b", [(1, ","), (2, ",")]),
        (r"[^a]+", "ba\nbc", [(1, "b"), (2, "bc")]),
        (r"[\x00-\x7f]+", "ab\ncd", [(1, "ab"), (2, "cd")]),
        (r"[\na]+", "a\na", [(1, "a"), (2, "a")]),
        (r"\.\-\#\ ", ".-# ", [(1, ".-# ")]),
        (r"[]a]+", "]a]", [(1, "]a]")]),
    ],
)
def test_constructs_find_what_ripgrep_finds(
    pattern: str, text: str, expected: list[tuple[int, str]]
) -> None:
    """
    Named groups, scoped and mid-pattern flags, anchors (C{\\A} only at the
    start, C{\\z} at each line's end), word boundaries, code point escapes,
    POSIX and nested classes, stacked repetition, and classes that would
    match a line break, each as ripgrep reads them.
    """
    assert found(pattern, text) == expected


def test_undecodable_bytes_are_never_matched() -> None:
    """
    Bytes that are not UTF-8 (lone surrogates once decoded) match neither
    C{.}, C{\\S}, C{\\W} nor a negated class, as in Rust.
    """
    text = b"ab\xffcd\n".decode("utf-8", "surrogateescape")
    for pattern in (".+", r"\S+", r"\W", "[^x]+", r"[\S]+"):
        assert [m for _, m in found(pattern, text)] in (["ab", "cd"], []), pattern


def test_matches_never_span_lines_and_empty_matches_follow_rust() -> None:
    """
    Matches stay within a line; an empty match right after a match, or at
    the very end of the text, is skipped; C{--ignore-case} and fixed
    strings work as in ripgrep; a CR stays part of its line.
    """
    assert found("a*", "ab\nxaab\n") == [(1, "a"), (1, ""), (2, ""), (2, "aa"), (2, "")]
    assert found("a*", "xaab") == [(1, ""), (1, "aa")]
    assert found("needle.*", "needle\r\n") == [(1, "needle\r")]
    assert found("NEEDLE", "a needle", ignore_case=True) == [(1, "needle")]
    assert found("a.b(", "a.b( axb(", fixed=True) == [(1, "a.b(")]


def test_max_count_caps_lines_not_matches() -> None:
    """
    C{max_count} counts matching lines; every match on them is kept.
    """
    compiled = compile_pattern("x", fixed=True, ignore_case=False)
    assert matching_lines(compiled, "xx\nx\nx\n", 2) == {1: [(0, 1), (1, 2)], 2: [(0, 1)]}


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("a(b", "unclosed group"),
        ("a)b", "unopened group"),
        ("[ab", "unclosed character class"),
        ("[z-a]", "invalid character class range"),
        (r"[\d-z]", "invalid range boundary"),
        ("*a", MISSING_EXPRESSION),
        ("(?i)*", MISSING_EXPRESSION),
        ("a{,3}", "repetition quantifier expects a valid decimal"),
        ("a{1", "unclosed counted repetition"),
        ("a{2,1}", "invalid repetition count range"),
        ("(?=a)", LOOK_AROUND),
        ("(?<!a)b", LOOK_AROUND),
        (r"(a)\1", "backreferences are not supported"),
        (r"a\nb", LINE_BREAK),
        ("a\nb", LINE_BREAK),
        (r"\x0a", LINE_BREAK),
        (r"[\n]", LINE_BREAK),
        (r"\Z", "unrecognized escape sequence"),
        (r"\e", "unrecognized escape sequence"),
        ("(?>a)", "unrecognized flag"),
        ("(?)", "empty flag group"),
        (r"\x{D800}", "not a Unicode scalar value"),
        (r"\xZZ", "invalid hexadecimal digit"),
        ("(?b)", "unrecognized flag"),
    ],
)
def test_patterns_ripgrep_refuses_are_refused_alike(pattern: str, reason: str) -> None:
    """
    What ripgrep refuses is refused with ripgrep's own words.
    """
    with pytest.raises(PatternError, match=reason.replace("\\", "\\\\").replace("(", r"\(")):
        compile_pattern(pattern, fixed=False, ignore_case=False)


@pytest.mark.parametrize(
    "pattern",
    [
        r"\p{Greek}",
        r"\PL",
        "[a&&b]",
        "[a--b]",
        "[a~~b]",
        "[[^a]b]",
        "[[:^alpha:]]",
        "(?-u)x",
        "(?R)$",
    ],
)
def test_what_python_cannot_say_is_refused_by_name(pattern: str) -> None:
    """
    Constructs ripgrep takes but Python's C{re} cannot express are refused
    with a message that says so and what to install.
    """
    with pytest.raises(PatternError, match="not supported by the pure-Python search engine"):
        compile_pattern(pattern, fixed=False, ignore_case=False)


def test_nesting_is_bounded_and_a_fixed_string_cannot_hold_a_line_break() -> None:
    """
    Groups nested past the limit are refused before Python's recursion
    limit is reached; a fixed string with a line break could never match.
    """
    compile_pattern("(" * NEST_LIMIT + ")" * NEST_LIMIT, fixed=False, ignore_case=False)
    with pytest.raises(PatternError, match="nested"):
        compile_pattern("(" * 5000 + ")" * 5000, fixed=False, ignore_case=False)
    with pytest.raises(PatternError, match="not allowed"):
        compile_pattern("a\nb", fixed=True, ignore_case=False)
