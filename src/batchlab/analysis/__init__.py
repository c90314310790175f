"""Generic analysis helpers shared by every study family: statistics over seeds and curves.

Nothing here knows about studies, runs or the store; the functions take plain arrays.
"""
