"""groupsync: eCampus chat groups as code."""

__version__ = "0.1.0"
