"""Rosters: member lists kept by someone else (a registrar, a club), read on every run.

issues      problems at file:row; warnings counted by kind
snapshot    a file read whole, only while it held still
table       one CSV file, parsed strictly
oneroster   a OneRoster 1.1 CSV bulk export -> classes and their members by role
csvlist     a group,username CSV
recipe      what the spec says about rosters, kept to read them again each run
summary     one roster as read: digest and counts (validate, plan, journal, safety)
generate    `generate:` rules -> one DesiredGroup per class
schema      the spec's `rosters:` and `generate:` sections (pydantic, JSON Schema)
resolve     recipe + rosters read now -> the spec's groups for one run
"""
