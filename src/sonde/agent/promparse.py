"""prometheus_client's text and OpenMetrics parsers, made cheap on pages that repeat.

The agent scrapes the same page every few seconds: the same series, new values. The
parsers read every line character by character in Python, most of it finding and reading
the labels. These memos keep what the parser made of each line's series part and let
it read only the rest; the parsing itself stays the library's (the brief forbids a
hand-written one). They replace module attributes of ``prometheus_client`` in the
process that installs them (the agent), pinned to the version in pyproject.toml, whose
private functions they wrap. Cost figures: docs/benchmarks.md#scrape-cost.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import prometheus_client.openmetrics.parser as _om_parser
import prometheus_client.parser as _text_parser
from prometheus_client.samples import Sample


def _memoize_series(module, rest: Callable[[str], tuple], size: int) -> None:
    """Most of a parser's time goes to finding the end of each sample's labels, one
    character at a time in Python, and reading them; yet a page repeats the same series
    (name and labels) scrape after scrape, and only the values change. So ``module``'s
    ``_parse_sample`` first looks the series part of the line up here, parsed by the
    parser itself the first time it is seen, and only the part after it is read per
    sample, by the parser's own function for it (``rest``). Lines this shortcut cannot
    split safely (no labels, an exemplar, no space after the labels) go to the parser
    whole. Same parser, same samples, a fraction of the CPU (bench/bench_scrape.py).
    Installed once, in this module's process (the agent)."""
    original = module._parse_sample
    if getattr(original, "memoized", False):
        return

    @functools.lru_cache(maxsize=size)
    def series(head: str) -> tuple[str, dict[str, str]]:
        sample = original(head + " 0")
        return sample.name, sample.labels

    def parse_sample(text: str):
        # values and timestamps hold no brace, so the last one closes the labels
        end = text.rfind("}") + 1
        if not end or text[end:end + 1] != " " or " # " in text:
            return original(text)
        name, labels = series(text[:end])
        return Sample(name, dict(labels), *rest(text[end + 1:]))

    parse_sample.memoized = True  # type: ignore[attr-defined]
    module._parse_sample = parse_sample


def _memoize_native_histogram_check(size: int) -> None:
    """The OpenMetrics parser first asks of every histogram line whether it holds a
    native histogram, scanning it as slowly again. A classic sample's answer depends on
    its series part alone (a native one has a ``{`` after its labels), so it is kept per
    series, as above; a line with a ``{`` after its last ``}`` is asked whole."""
    original = _om_parser._parse_nh_sample
    if getattr(original, "memoized", False):
        return

    @functools.lru_cache(maxsize=size)
    def classic(head: str, suffixes: tuple) -> bool:
        try:
            return original(head + " 0", suffixes) is None
        except ValueError:
            return False  # the whole line is asked, and raises as the parser would

    def parse_nh_sample(text: str, suffixes: tuple):
        end = text.rfind("}") + 1
        if end and "{" not in text[end:] and classic(text[:end], suffixes):
            return None
        return original(text, suffixes)

    parse_nh_sample.memoized = True  # type: ignore[attr-defined]
    _om_parser._parse_nh_sample = parse_nh_sample


def install(size: int) -> None:
    """Both memos, each keeping up to ``size`` series; once per process (idempotent)."""
    _memoize_series(_text_parser, _text_parser._parse_value_and_timestamp, size)
    _memoize_series(_om_parser, _om_parser._parse_remaining_text, size)
    _memoize_native_histogram_check(size)
