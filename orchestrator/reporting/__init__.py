"""What a study looks like from outside: `status` (a table in the terminal) and `report` (HTML).

Both read the study's stores through `search/` and `tracking/` and write to neither.
"""
