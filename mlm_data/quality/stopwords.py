"""A small built-in list of English function words for the stop-word presence rule.

Real prose uses them constantly; keyword lists, tables, code and boilerplate rarely do. Gopher
asks for two of its eight (``the be to of and that have with``); this list adds their common
forms so the rule counts occurrences of any of them.
"""

from __future__ import annotations

ENGLISH_STOP_WORDS = frozenset("""
a an and are as at be been but by for from had has have he in is it its not of on or
that the this to was were which will with you
""".split())
